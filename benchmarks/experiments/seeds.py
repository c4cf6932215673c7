"""The chosen configuration (params.yaml as it stands) trained with several seeds: mean and
standard deviation of every test score. One training run is not a result; these means are.

Each seed trains as the train stage does (train.seed replaced; same patch sets, head, budget
and schedule), then segments the 14 official test images with the `eval` values of params.yaml,
which were chosen on the val images. `--pipeline-seed` counts the current `dvc repro` result
(metrics/test.json, trained with train.seed) as one of the seeds instead of training it again;
read after the other seeds have trained, it is refused when `dvc status` then says train or
evaluate is out of date. Each seed is an
MLflow run of the experiment `patchunet-seeds`; the table goes to reports/seeds.csv.

    .venv/bin/python -m benchmarks.experiments.seeds --seeds 1 2 --pipeline-seed
    # or one process per core, sharing reports/seeds.csv:
    taskset -c 0 .venv/bin/python -m benchmarks.experiments.seeds --seeds 1 --pipeline-seed --fresh &
    taskset -c 1 .venv/bin/python -m benchmarks.experiments.seeds --seeds 2
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import statistics
import subprocess
import tempfile
from pathlib import Path

import torch

from benchmarks.harness import ROOT, Settings, test_images, train_network
from patchunet import tracking
from patchunet.core.config import MlflowConfig, ModelConfig, load_params, parse_section
from patchunet.core.errors import PatchUNetError
from patchunet.core.locking import exclusive_lock
from patchunet.core.paths import TEST_METRICS, TRAIN_METRICS
from patchunet.evaluation.metrics import summarise_scores
from patchunet.model.unet import PatchUNet
from patchunet.stages.evaluate import evaluate_images, evaluated_network

EXPERIMENT = "patchunet-seeds"
TABLE = ROOT / "reports/seeds.csv"
SCORES = ("dice", "aji", "aji_plus", "pq", "dq", "sq", "precision", "recall", "f1")


def pipeline_result(seed: int) -> dict:
    """The scores of the current `dvc repro`, if its train and evaluate stages are up to date."""
    status = subprocess.run(
        [str(ROOT / ".venv/bin/dvc"), "status", "train", "evaluate", "--json"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    if json.loads(status or "{}"):
        raise PatchUNetError("--pipeline-seed: `dvc status train evaluate` reports changes; run `dvc repro` first")
    test = json.loads((ROOT / TEST_METRICS).read_text())["per_image_mean"]
    epochs = json.loads((ROOT / TRAIN_METRICS).read_text())["epochs_run"]
    return {"seed": seed, "source": "dvc repro", "epochs": epochs, **{k: test[k] for k in SCORES}}


def merged_with_earlier_rows(rows: list[dict]) -> list[dict]:
    """These rows, plus the rows of reports/seeds.csv for other seeds of the same configuration
    (`--fresh` starts a new table), by seed."""
    earlier = {}
    if TABLE.is_file():
        with TABLE.open(newline="") as f:
            earlier = {int(row["seed"]): row for row in csv.DictReader(f)}
    merged = earlier | {row["seed"]: row for row in rows}
    return [{k: (float(v) if k in SCORES else v) for k, v in merged[seed].items()} for seed in sorted(merged)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pipeline-seed", action="store_true", help="count the dvc repro result as train.seed's run")
    parser.add_argument("--fresh", action="store_true", help="forget the rows of an earlier reports/seeds.csv")
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    model_cfg = parse_section(ModelConfig, params, "model")
    settings = Settings.load()
    tracking.connect(tracking.resolve_tracking_uri(parse_section(MlflowConfig, params, "mlflow").tracking_uri))
    head = model_cfg.instance_head

    rows = []
    if args.fresh:
        TABLE.unlink(missing_ok=True)
    test = test_images()
    for seed in args.seeds:
        if args.pipeline_seed and seed == settings.train.seed:
            continue
        seeded = dataclasses.replace(settings, train=dataclasses.replace(settings.train, seed=seed))
        torch.manual_seed(seed)
        network = PatchUNet(model_cfg)
        with tracking.run(EXPERIMENT, run_name=f"seed-{seed}"), tempfile.TemporaryDirectory() as checkpoints:
            tracking.log_params({"seed": seed, "model": dataclasses.asdict(model_cfg)})
            fit, _ = train_network(network, head, seeded, Path(checkpoints), f"seed {seed}")
            network = evaluated_network(network.cpu(), seeded.eval)  # the evaluate stage's runtime and loop
            results = evaluate_images(network, test, seeded.eval, seeded.window)
            scores = summarise_scores([result.scores for result in results])["per_image_mean"]
            tracking.log_metrics({tracking.names.score_metric(k): scores[k] for k in SCORES})
        rows.append(
            {"seed": seed, "source": "this script", "epochs": len(fit.history), **{k: scores[k] for k in SCORES}}
        )
        print(f"seeds: seed {seed}: " + "  ".join(f"{k} {scores[k]:.4f}" for k in SCORES), flush=True)

    if args.pipeline_seed:  # read last, so the seeds can train while `dvc repro` still runs
        rows.insert(0, pipeline_result(settings.train.seed))
    with exclusive_lock(str(TABLE)):  # seeds run as parallel processes (one per core) share the table
        rows = merged_with_earlier_rows(rows)
        TABLE.parent.mkdir(parents=True, exist_ok=True)
        with TABLE.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    print(f"{len(rows)} seeds ({', '.join(str(r['seed']) for r in rows)}), per-image means on the 14 test images:")
    for k in SCORES:
        values = [r[k] for r in rows]
        spread = statistics.stdev(values) if len(values) > 1 else float("nan")
        mean = statistics.mean(values)
        print(f"  {k:10s} mean {mean:.4f}  sd {spread:.4f}  min {min(values):.4f}  max {max(values):.4f}")
    print(f"written to {TABLE}; MLflow experiment {EXPERIMENT}")


if __name__ == "__main__":
    main()
