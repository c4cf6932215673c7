"""The one error policy of `tracking`: an MLflow failure becomes one TrackingError line.

The line names what was asked for (a run, a model URI, a model version), the store, and MLflow's
reason, so callers catch the project's error alone and never see MLflow's exceptions. None stands
for "absent" only where a function's docstring says that absence is a normal answer (no champion
yet, no such artifact yet); a store that cannot answer is never None.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import mlflow
from mlflow.exceptions import MlflowException
from sqlalchemy.exc import SQLAlchemyError

from patchunet.core.errors import TrackingError, first_line

R = TypeVar("R")
ABSENT = "RESOURCE_DOES_NOT_EXIST"
"""MLflow's error code for a run, model or version that the store does not hold."""


@contextmanager
def failing_as(subject: str) -> Iterator[None]:
    """Raise an MLflow failure of the block as `<subject> in MLflow at <store>: <reason>`.

    MLflow does not wrap every database error of a SQLite store, so SQLAlchemy's count too.
    """
    try:
        yield
    except (MlflowException, SQLAlchemyError) as exc:
        raise TrackingError(f"{subject} in MLflow at {mlflow.get_tracking_uri()}: {first_line(exc)}") from None


def found_or_none(subject: str, call: Callable[[], R]) -> R | None:
    """`call()`, or None when the store answers that `subject` does not exist; any other failure
    raises as `failing_as` does. For lookups whose callers document None as "absent"."""
    with failing_as(subject):
        try:
            return call()
        except MlflowException as exc:
            if exc.error_code != ABSENT:
                raise
            return None
