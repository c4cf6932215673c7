"""The one exception family for user errors.

The CLI and the DVC stages turn any `PatchUNetError` into a single line on stderr and a
non-zero exit, with no traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class PatchUNetError(Exception):
    """A problem with the user's input, data or configuration."""


class DataError(PatchUNetError):
    """A data file is missing, unreadable or not what MoNuSeg promises."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(path, problem)  # both in args, so the error pickles across processes
        self.path = Path(path)
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


class ConfigError(PatchUNetError):
    """A parameter value is out of range or of the wrong kind."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(key, problem)
        self.key = key
        self.problem = problem

    def __str__(self) -> str:
        return f"params.yaml {self.key}: {self.problem}"


class SourceError(PatchUNetError):
    """The MoNuSeg source cannot be found, read or downloaded."""


class TrackingError(PatchUNetError):
    """The MLflow store cannot be reached, read or written."""


def first_line(exc: BaseException) -> str:
    """An exception's message as one line, for a PatchUNetError built from a library's exception
    (torch's and MLflow's run to many lines)."""
    lines = [line.strip() for line in str(exc).strip().splitlines()]
    if len(lines) > 1 and lines[0].endswith(":"):  # a heading whose point is the next line (botocore's)
        return f"{lines[0]} {lines[1]}"
    return lines[0] if lines else type(exc).__name__
