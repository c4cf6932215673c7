"""`tracking.failures`: a store that fails is one TrackingError line naming what was asked for, and
never None, also where None means "absent"."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import connect_to_new_store

from patchunet import tracking
from patchunet.core.errors import PatchUNetError, TrackingError


@pytest.fixture
def broken_store(tmp_path: Path, monkeypatch) -> Path:
    """A store that worked when connected and broke since, as a file overwritten while in use."""
    connect_to_new_store(tmp_path, monkeypatch)
    with tracking.run("exp"):
        pass
    (tmp_path / "mlflow.db").write_bytes(b"no longer a database" * 100)
    return tmp_path


def test_a_store_that_fails_a_read_raises_the_projects_error_naming_what_was_read(broken_store) -> None:
    """The dashboard catches PatchUNetError alone: an MLflow failure must arrive as one."""
    with pytest.raises(
        TrackingError, match=r"^model m in MLflow at sqlite:///.*mlflow\.db: .*file is not a database"
    ) as error:
        tracking.list_versions("m")
    assert isinstance(error.value, PatchUNetError) and "\n" not in str(error.value)


def test_lookups_that_may_find_nothing_raise_when_the_store_fails(broken_store) -> None:
    with pytest.raises(TrackingError, match="file is not a database"):
        tracking.version_by_alias("m", "champion")
    with pytest.raises(TrackingError, match="file is not a database"):
        tracking.registered_aliases("m")
    with pytest.raises(TrackingError, match="file is not a database"):
        tracking.experiment_runs("exp")
