"""What the evaluate stage leaves in MLflow: test metrics and files on the training run, and the
version tags that `register` gives the model it registers from that run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from patchunet.tracking import names
from patchunet.tracking.run_logging import log_artifact, log_metrics
from patchunet.tracking.runs import run


def log_evaluation(
    experiment: str, run_id: str, summary: Mapping[str, Any], files: Sequence[Path], samples: Path
) -> None:
    """test/<score> (per-image means), test/dataset/<score> and test/seconds_per_image on run
    `run_id`; `files` under its artifacts' evaluation/, the folder `samples` under evaluation/samples/."""
    with run(experiment, run_id=run_id):
        log_metrics(
            {
                **{names.score_metric(score): value for score, value in summary["per_image_mean"].items()},
                **{names.dataset_score_metric(score): value for score, value in summary["dataset"].items()},
                names.TEST_SECONDS_PER_IMAGE: summary["seconds_per_image"],
            }
        )
        for path in files:
            log_artifact(path, artifact_path=names.EVALUATION_ARTIFACT)
        log_artifact(samples, artifact_path=names.SAMPLES_ARTIFACT)


def score_tags(summary: Mapping[str, Any], protocol: str) -> dict[str, Any]:
    """The version tags of an evaluation: test_<score> per-image means at 4 decimals, the median
    seconds per image, and the hash of the eval protocol that gave them."""
    return {
        **{names.score_tag(score): round(value, 4) for score, value in summary["per_image_mean"].items()},
        names.score_tag("seconds_per_image"): summary["seconds_per_image"],
        names.EVAL_PROTOCOL_TAG: protocol,
    }
