"""DVC stage `register`: the evaluated model becomes a registered version, `challenger`, and maybe `champion`.

Registers the model that the training run of models/run.json logged, tagged with what training
noted (`version_tags`) and with the test scores and eval protocol of metrics/test.json, so that only
evaluated models reach the registry. A run that has a version already (made at training by the
order before this one, or by an earlier register) keeps it and gets the tags: one version per run.
The `champion` alias moves to it only when its test AJI (per-image mean) beats the current
champion's, under the same eval protocol (or there is no champion); the reason goes into the
version's `promotion` tag and models/registry.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from patchunet import tracking
from patchunet.config import MlflowConfig, load_params, parse_section
from patchunet.console import run_stage
from patchunet.files import read_json_value, write_json
from patchunet.locking import storage_lock
from patchunet.paths import REGISTRY_FILE, RUN_FILE, TEST_METRICS
from patchunet.tracking import names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    mlflow_cfg = parse_section(MlflowConfig, load_params(args.params), "mlflow")
    run_id, model_uri = (read_json_value(RUN_FILE, key) for key in ("run_id", "model_uri"))
    training_tags = read_json_value(RUN_FILE).get("version_tags", {})  # none in a run.json of the old order
    summary = {key: read_json_value(TEST_METRICS, key) for key in ("per_image_mean", "seconds_per_image")}
    protocol = read_json_value(TEST_METRICS, "eval_protocol")
    name = mlflow_cfg.registered_model

    uri = tracking.resolve_tracking_uri(mlflow_cfg.tracking_uri)
    tracking.connect(uri)
    run = tracking.get_run(run_id)  # one line if the store does not hold it
    # where the version came from, on the version itself: `git checkout <git_commit> && dvc pull`
    provenance = {key: run.tags[key] for key in (names.GIT_COMMIT, names.DVC_DATA_HASH) if key in run.tags}
    tags = {**training_tags, **provenance, **tracking.score_tags(summary, protocol)}
    # queued experiments (`dvc queue start --jobs N`) register at once: one reads the champion at a time
    with storage_lock(uri, f"promotion|{name}"):
        candidate = tracking.register_run_model(name, run_id, model_uri, tags)
        done = tracking.promote(candidate)
    write_json(
        REGISTRY_FILE,
        {
            "registered_model": name,
            "version": done.version,
            "run_id": run_id,
            "test_aji": summary["per_image_mean"]["aji"],
            "champion": done.champion,
            "challenger": done.version,
            "promoted": done.promotion.promote,
            "reason": done.promotion.reason,
        },
    )
    print(f"register: {name} v{done.version} is challenger; champion is v{done.champion} ({done.promotion.reason})")


if __name__ == "__main__":
    run_stage(main)
