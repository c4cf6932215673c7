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
    """SIGTERM's KeyboardInterrupt can land while tqdm builds a bar: after it set `disable`, before
    its position. The bar is dropped, and closing it later (its __del__, at exit) prints nothing."""
    half_built = []

    def main() -> None:
        bar = tqdm.__new__(tqdm)  # registered among the bars
        bar.disable = False  # as tqdm.__init__ sets it before the position
        half_built.append(bar)
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as stopped:
        run_stage(main)
    assert stopped.value.code == 130 and capsys.readouterr().err.endswith("interrupted\n")
    assert not [bar for bar in tqdm._instances if not hasattr(bar, "pos")]
    half_built[0].close()  # what __del__ does: no AttributeError on the missing position
