"""Stage `register`: the evaluated model becomes a registered version, `challenger`, and maybe `champion`.

Logs to the training run of models/run.json, beside the raw network that training logged, the
model that returns nuclei (serving/served_nuclei.py: the network, its ONNX export and the
`eval` settings), and registers that, tagged with what training noted (`version_tags`) and with
the test scores and eval protocol of metrics/test.json, so that only evaluated models reach the
registry. A run that has a version already (an earlier register) keeps it and gets the tags: one
version per run. The `champion` alias moves to it only when its test AJI (per-image mean) beats
the current champion's, under the same eval protocol (or there is no champion); the reason goes
into the version's `promotion` tag and models/registry.json. The registered model and the version
get their model cards (serving/model_card.py) as MLflow descriptions.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from patchunet import tracking
from patchunet.core.config import EvalConfig, MlflowConfig, PatchConfig, ServeConfig, parse_section
from patchunet.core.files import read_json_value, write_json
from patchunet.core.locking import storage_lock
from patchunet.core.paths import REGISTRY_FILE, RUN_FILE, TEST_METRICS
from patchunet.serving import model_card
from patchunet.serving.nuclei_model import log_nuclei_model
from patchunet.tracking import names


def run(params: dict, root: Path) -> dict:
    """Register the model of models/run.json with the scores of metrics/test.json; returns what
    models/registry.json holds (registered_model, version, run_id, test_aji, champion, challenger,
    promoted, reason)."""
    mlflow_cfg = parse_section(MlflowConfig, params, "mlflow")
    eval_cfg = parse_section(EvalConfig, params, "eval")
    patch_size = parse_section(PatchConfig, params, "patch").size
    serve_settings = dataclasses.asdict(parse_section(ServeConfig, params, "serve"))
    run_file, test_metrics = root / RUN_FILE, root / TEST_METRICS
    run_id, model_uri = (read_json_value(run_file, key) for key in ("run_id", "model_uri"))
    training_tags = read_json_value(run_file).get("version_tags", {})  # none in a run.json of the old order
    summary = {key: read_json_value(test_metrics, key) for key in ("per_image_mean", "seconds_per_image")}
    protocol = read_json_value(test_metrics, "eval_protocol")
    name = mlflow_cfg.registered_model

    uri = tracking.resolve_tracking_uri(mlflow_cfg.tracking_uri)
    tracking.connect(uri)
    run = tracking.get_run(run_id)  # one line if the store does not hold it
    # where the version came from, on the version itself: `git checkout <git_commit> && dvc pull`
    provenance = {key: run.tags[key] for key in (names.GIT_COMMIT, names.DVC_DATA_HASH) if key in run.tags}
    tags = {**training_tags, **provenance, **tracking.score_tags(summary, protocol)}
    network = tracking.load_logged_model(model_uri)
    window = eval_cfg.window_for(patch_size, network.cfg.size_multiple)
    settings = dataclasses.asdict(eval_cfg)
    nuclei_uri = log_nuclei_model(run_id, network, settings, window, serve_settings)
    # queued experiments (`dvc queue start --jobs N`) register at once: one reads the champion at a time
    with storage_lock(uri, f"promotion|{name}"):
        candidate = tracking.register_run_model(name, run_id, nuclei_uri, tags)
        done = tracking.promote(candidate)
    card = model_card.version_description(name, done.version, run, summary["per_image_mean"], settings, window)
    tracking.describe(name, model_card.model_description(name), done.version, card)
    record = {
        "registered_model": name,
        "version": done.version,
        "run_id": run_id,
        "test_aji": summary["per_image_mean"]["aji"],
        "champion": done.champion,
        "challenger": done.version,
        "promoted": done.promotion.promote,
        "reason": done.promotion.reason,
    }
    write_json(root / REGISTRY_FILE, record)
    print(f"register: {name} v{done.version} is challenger; champion is v{done.champion} ({done.promotion.reason})")
    return record
