import pytest

from patchunet import tracking
from patchunet.errors import PatchUNetError


def test_flatten_joins_nested_keys_with_dots() -> None:
    assert tracking.flatten({"train": {"lr": 0.1, "early": {"patience": 3}}, "seed": 1}) == {
        "train.lr": 0.1,
        "train.early.patience": 3,
        "seed": 1,
    }


def test_tracking_uri_prefers_env_then_params_then_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.resolve_tracking_uri(None) == "sqlite:///mlflow.db"
    assert tracking.resolve_tracking_uri("sqlite:///other.db") == "sqlite:///other.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.resolve_tracking_uri("sqlite:///other.db") == "http://127.0.0.1:5000"


def test_unreachable_server_fails_at_once_with_one_line() -> None:
    with pytest.raises(PatchUNetError, match=r"MLflow tracking server http://127\.0\.0\.1:9 is unreachable"):
        tracking.connect("http://127.0.0.1:9")
