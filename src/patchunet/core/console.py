"""What a command shows on the console: a user error as one line, and the library's progress lines.

Every entry point (the `patchunet` command and each `pipelines/<stage>.py`) goes through here, so
this module imports nothing but the standard library and the project's errors.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from patchunet.core.errors import PatchUNetError


def run_stage(main: Callable[[], None]) -> None:
    """Run an entry point; a user error becomes one line on stderr and exit status 1."""
    try:
        main()
    except PatchUNetError as exc:
        close_progress_bars()
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        close_progress_bars()
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def close_progress_bars() -> None:
    """Close the tqdm bars still open, so the last line is the message: a bar left open is closed at
    exit, after it, and its line is written again (or cleared) below the message."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        if hasattr(bar, "pos"):  # else stopped inside its own __init__ (a SIGTERM then): it drew nothing
            bar.close()
        else:
            bar.disable = True  # so its close at garbage collection returns at once, not on the missing pos
            type(bar)._instances.discard(bar)


def log_to_stdout(prefix: str = "") -> None:
    """Show the library's progress lines (logger `patchunet`, INFO and up) on stdout, one per line,
    beside the entry point's own prints; `prefix` starts each (e.g. "[worker 1] ")."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(prefix.replace("%", "%%") + "%(message)s"))
    logger = logging.getLogger("patchunet")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
