"""`tracking.aliases`: which version holds an alias, None when none does, and moving an alias."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import connect_to_new_store, mlflow_client

from patchunet import tracking


@pytest.fixture
def two_versions_of_m(tmp_path: Path, monkeypatch) -> str:
    """The run id of versions 1 and 2 of registered model "m", no alias set."""
    uri = connect_to_new_store(tmp_path, monkeypatch)
    with tracking.run("exp") as active:
        pass
    client = mlflow_client(uri)
    client.create_registered_model("m")
    for _ in range(2):
        client.create_model_version("m", f"runs:/{active.run_id}/model", run_id=active.run_id)
    return active.run_id


def test_aliases_point_at_the_versions_they_were_set_on(two_versions_of_m) -> None:
    tracking.set_alias("m", "champion", 1)
    tracking.set_alias("m", "challenger", 2)
    assert tracking.registered_aliases("m") == {"champion": 1, "challenger": 2}
    assert [(v.version, v.run_id, v.aliases) for v in tracking.list_versions("m")] == [
        (2, two_versions_of_m, ("challenger",)),
        (1, two_versions_of_m, ("champion",)),
    ]
    assert tracking.version_by_alias("m", "champion").version == 1


def test_setting_an_alias_takes_it_from_the_version_that_held_it(two_versions_of_m) -> None:
    tracking.set_alias("m", "champion", 1)
    tracking.set_alias("m", "champion", 2)
    assert tracking.registered_aliases("m") == {"champion": 2}


def test_no_champion_yet_is_none(two_versions_of_m) -> None:
    assert tracking.version_by_alias("m", "champion") is None
    assert tracking.version_by_alias("not-registered", "champion") is None
