"""What a command shows on the console when it stops."""

from __future__ import annotations

import pytest
from tqdm import tqdm

from patchunet.core.console import run_stage
from patchunet.core.errors import PatchUNetError


def test_a_user_error_is_one_line_and_exit_status_1(capsys: pytest.CaptureFixture) -> None:
    def main() -> None:
        raise PatchUNetError("params.yaml patch.size: too large")

    with pytest.raises(SystemExit) as stopped:
        run_stage(main)
    assert stopped.value.code == 1 and capsys.readouterr().err == "error: params.yaml patch.size: too large\n"


def test_an_interrupt_inside_a_progress_bars_construction_still_exits_130(capsys: pytest.CaptureFixture) -> None:
    """SIGTERM's KeyboardInterrupt can land while tqdm builds a bar, before the bar has a position."""

    def main() -> None:
        tqdm.__new__(tqdm)  # registered among the bars, never initialised
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as stopped:
        run_stage(main)
    assert stopped.value.code == 130 and capsys.readouterr().err.endswith("interrupted\n")
    assert not [bar for bar in tqdm._instances if not hasattr(bar, "pos")]
