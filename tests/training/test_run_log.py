import logging
from pathlib import Path

import pytest
from conftest import mlflow_client

from patchunet import tracking
from patchunet.training.checkpoints import BEST_CHECKPOINT, LAST_CHECKPOINT
from patchunet.training.loop import EpochResult
from patchunet.training.run_log import EpochLogger


def epoch(n: int, dice: float, is_best: bool = False) -> EpochResult:
    return EpochResult(
        n, train_loss=1.0 - n / 10, val_loss=1.1, val_dice=dice, val_iou=dice / 2, lr=1e-3, seconds=2.0, is_best=is_best
    )


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)  # artifacts go to ./mlartifacts
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.connect(uri)
    return uri


def test_each_epoch_logs_its_metrics_at_its_step_and_one_line(store: str, caplog: pytest.LogCaptureFixture) -> None:
    log_epoch = EpochLogger(epochs=2, label="trial 3 ")
    with caplog.at_level(logging.INFO, logger="patchunet"), tracking.run("epochs") as active:
        log_epoch(epoch(0, 0.25))
        log_epoch(epoch(1, 0.5))
    client = mlflow_client(store)
    for name in ("train/loss", "val/loss", "val/dice", "val/iou", "lr", "time/epoch_seconds"):
        assert [m.step for m in client.get_metric_history(active.run_id, name)] == [0, 1], name
    assert [m.value for m in client.get_metric_history(active.run_id, "val/dice")] == [0.25, 0.5]
    assert not client.list_artifacts(active.run_id)  # no checkpoint folder given: none logged
    assert caplog.messages[1] == (
        "trial 3 epoch   2/2  train loss 0.9000  val loss 1.1000  val dice 0.5000  val iou 0.2500  lr 1.0e-03  2 s"
    )


def test_checkpoints_are_logged_as_artifacts_best_only_when_fit_says_it_is_best(store: str, tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    log_epoch = EpochLogger(epochs=3, checkpoint_dir=folder)
    uploads = []
    with tracking.run("epochs") as active:
        for n, is_best in enumerate([True, False, True]):
            for name in (LAST_CHECKPOINT, BEST_CHECKPOINT):
                (folder / name).write_text(f"epoch {n}")  # uploaded as best.pt only when fit marks the epoch best
            log_epoch(epoch(n, 0.5, is_best))
            best = mlflow_client(store).download_artifacts(active.run_id, f"checkpoints/{BEST_CHECKPOINT}")
            uploads.append(Path(best).read_text())
    assert uploads == ["epoch 0", "epoch 0", "epoch 2"]
    names = {a.path for a in mlflow_client(store).list_artifacts(active.run_id, "checkpoints")}
    assert names == {"checkpoints/best.pt", "checkpoints/last.pt"}
