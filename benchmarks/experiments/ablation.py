"""Which settings give the best val AJI when every row trains for the same wall-clock minutes?

Each row is a named set of params.yaml overrides (ROWS below; `base8`, today's params.yaml, is the
baseline), or a peer network (`monai`, `smp`) trained in PatchUNet's place. Each row, one at a time:

1. trains with the train stage's own engine (`build_training` and `fit`: same loaders, augmentation,
   loss, train.precision, and train.schedule unless the row overrides it) for `--minutes` of wall
   clock (train.max_minutes; train.epochs is set far above what fits, so the budget, early
   stopping or a cosine plan ends it), with `--seed` as train.seed, picking its best epoch by
   `--select-by` (val_aji: the whole-image AJI of the 6 val images, every epoch);
2. chooses its own post-processing on the 6 val images (`search_postprocessing`, best val AJI);
3. only then segments the 14 official test images once. Test scores are reported, never used to
   choose anything: rows are compared by val AJI.

A row with another patch.size (`patch384`: stride = size) or other augment values (`hed`) cuts its
patch sets in memory exactly as the patches stage does (benchmarks/harness.py `patch_sets`); its
sliding window follows patch.size (unless eval.window is set).

Every run appends one line to reports/ablation.csv (`--table`): row, overrides, seed, budget, epochs,
val and test scores, seconds per image, the chosen post-processing. A (row, seed, budget) already
there is skipped unless `--rerun`, so an interrupted sweep goes on where it stopped and later
sessions add seeds. Each row is also an MLflow run of the experiment `patchunet-ablation` (params,
per-epoch curves, val_* and test_* metrics); PatchUNet rows keep their best weights in
models/ablation/<row>-s<seed>.pt (for score_decomposition.py).

    .venv/bin/python -m benchmarks.experiments.ablation --minutes 6 --rows base8 base16 base24 boundary hover
    .venv/bin/python -m benchmarks.experiments.ablation --minutes 6 --rows boundary hover --with model.base_channels=16
    .venv/bin/python -m benchmarks.experiments.ablation --minutes 6 --seed 1 --rows base8 base16   # a second seed
    .venv/bin/python -m benchmarks.experiments.ablation --minutes 5 --rows base8 --train-images 18   # more data helps?
    .venv/bin/python -m benchmarks.experiments.ablation --summary   # the table so far; trains nothing

`--with KEY=VALUE` applies to every row and is part of the recorded row name (`hover` with
`--with model.base_channels=16` is "hover+base_channels=16"); so is `--select-by` other than val_aji.
`--summary` prints, per budget, each row's mean ± standard deviation of val AJI over its seeds,
sorted by it, and flags "needs another seed" where a row has one seed, or where its distance to the
best row is below the larger of the two rows' standard deviations.

Wall-clock budgets are only fair on an otherwise idle machine: run it alone, one row at a time
(one process; never two ablations side by side, nor beside a training or tuning run).

Peers: `monai` is MONAI's BasicUNet at a similar parameter count to base8, `smp` is
segmentation_models.pytorch's Unet on its smallest MobileNetV3 encoder (timm's
mobilenetv3_small_050, no pretrained weights) with a narrow decoder; both predict
model.instance_head's outputs (`--with model.instance_head=hover`) with the same post-processing.
MONAI is a benchmark-only install (`.venv/bin/pip install monai`); without it the row is skipped
with a message.

segmentation_models.pytorch imports timm, timm imports torchvision, and the registry's torchvision
does not import beside the CPU torch 2.13 this project pins ("operator torchvision::nms does not
exist"). The smp row therefore runs in a separate environment of torch 2.14.1 + torchvision 0.29.1
(pip takes both from this machine's disk; a CUDA build that runs on the CPU, about 4 GB):

    python3 -m venv .venv-peers
    .venv-peers/bin/pip install torch==2.14.1 torchvision==0.29.1 segmentation-models-pytorch
    .venv-peers/bin/pip install --no-deps -e . && .venv-peers/bin/pip install albumentations \\
        imagecodecs matplotlib mlflow opencv-python-headless pandas optuna pyyaml scikit-image tqdm
    .venv-peers/bin/python -m benchmarks.experiments.ablation --minutes 6 --rows smp
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import json
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import yaml

from benchmarks.harness import (
    ROOT,
    Settings,
    parameter_count,
    predict_images,
    test_images,
    train_network,
    train_patchunet,
    val_images,
)
from patchunet import tracking
from patchunet.core.config import InstanceHead, MlflowConfig, load_params, parse_section
from patchunet.core.locking import exclusive_lock
from patchunet.evaluation.metrics import summarise_scores
from patchunet.evaluation.postprocess_search import search_postprocessing
from patchunet.model.heads import output_channels
from patchunet.model.unet import save_model
from patchunet.stages.evaluate import evaluate_images

EXPERIMENT = "patchunet-ablation"
TABLE = ROOT / "reports/ablation.csv"
MODELS = ROOT / "models/ablation"
EPOCHS = 1000
"""train.epochs of every row: far more than fit in any budget, so the minutes end the training."""

ROWS: dict[str, dict[str, Any]] = {
    "base8": {},  # params.yaml as it stands: the baseline
    "base16": {"model.base_channels": 16},
    "base24": {"model.base_channels": 24},
    "base32": {"model.base_channels": 32},
    "depth5-base16": {"model.depth": 5, "model.base_channels": 16},
    "boundary": {"model.instance_head": "boundary"},
    "distance": {"model.instance_head": "distance"},
    "hover": {"model.instance_head": "hover"},
    "patch384": {"patch.size": 384},  # patch.stride follows (apply_overrides); the window too
    "contact": {"train.contact_weight": 2.0},  # touching-nuclei pixels weigh 3x in the BCE
    "hed": {"augment.stain_space": "hed", "augment.stain_jitter": 0.05},
    "monai": {},  # peers: PatchUNet replaced by the network in PEERS
    "smp": {},
}
SCORES = ("aji", "pq", "dice")
COLUMNS = (
    "row",
    "overrides",
    "seed",
    "budget_minutes",
    "epochs",
    "best_epoch",
    "train_minutes",
    "parameters",
    "network",
    "head",
    "patch_size",
    "precision",
    "schedule",
    "select_by",
    *(f"val_{k}" for k in SCORES),
    *(f"test_{k}" for k in SCORES),
    "seconds_per_image",
    "postprocessing",
    "date",
)


class MonaiPeer(torch.nn.Module):
    """MONAI's BasicUNet with the attributes segment_image reads (`cfg.instance_head`)."""

    def __init__(self, head: InstanceHead) -> None:
        super().__init__()
        from monai.networks.nets import BasicUNet

        self.cfg = dataclasses.make_dataclass("PeerConfig", [("instance_head", str)])(head)
        self.net = BasicUNet(spatial_dims=2, in_channels=3, out_channels=output_channels(head),
                             features=(16, 16, 32, 64, 128, 16))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmpPeer(torch.nn.Module):
    """segmentation_models.pytorch's Unet, smallest MobileNetV3 encoder, with `cfg.instance_head`."""

    def __init__(self, head: InstanceHead) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        self.cfg = dataclasses.make_dataclass("PeerConfig", [("instance_head", str)])(head)
        self.net = smp.Unet("tu-mobilenetv3_small_050", encoder_weights=None, classes=output_channels(head),
                            decoder_channels=(64, 32, 16, 8, 8))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


PEERS = {"monai": (MonaiPeer, "monai", ".venv/bin/pip install monai"), "smp": (SmpPeer, "segmentation_models_pytorch",
         "see the module docstring: a separate .venv-peers environment")}  # fmt: skip


def missing_peer(row: str) -> str | None:
    """Why peer `row` cannot run here (its package does not import), or None."""
    if row not in PEERS:
        return None
    _, module, install = PEERS[row]
    try:
        __import__(module)
    except Exception as exc:  # an ImportError, or torchvision's RuntimeError beside this torch
        return f"{row}: {module} does not import here ({type(exc).__name__}: {exc}); {install}"
    return None


def parse_value(text: str) -> Any:
    """A --with value as YAML reads it in params.yaml: 16 -> int, 2.0 -> float, hed -> str, null -> None."""
    return yaml.safe_load(text)


def checked_overrides(pairs: list[str], params: dict) -> dict[str, Any]:
    """{"section.key": value} from KEY=VALUE strings; a key params.yaml does not have is refused."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        section, _, name = key.partition(".")
        if not sep or name not in params.get(section, {}):
            sys.exit(f"ablation: --with {pair!r}: expected SECTION.KEY=VALUE with a key of params.yaml")
        overrides[key] = parse_value(value)
    return overrides


def row_name(row: str, extra: dict[str, Any]) -> str:
    """`row`, then each extra override as +key=value (hover+base_channels=16)."""
    return "".join([row, *(f"+{key.partition('.')[2]}={value}" for key, value in extra.items())])


def read_table(path: Path) -> list[dict[str, str]]:
    """The rows of the table; [] where there is none yet or it has the old format (no seed column)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"seed", "budget_minutes", "overrides"} <= set(rows[0]):
        return []
    return rows


def append_row(path: Path, result: dict) -> None:
    """Append one line; a table of another format (the old one) is replaced, with a message."""
    with exclusive_lock(str(path)):
        path.parent.mkdir(parents=True, exist_ok=True)
        header = None
        if path.is_file() and path.stat().st_size:
            with path.open(newline="") as f:
                header = next(csv.reader(f), None)
        if header is not None and tuple(header) != COLUMNS:
            earlier = [{k: row.get(k, "") for k in COLUMNS} for row in read_table(path)]
            print(f"ablation: {path} had other columns; rewritten with these ({len(earlier)} rows kept)")
            header = None
        else:
            earlier = []
        with path.open("a" if header else "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            if not header:
                writer.writeheader()
                writer.writerows(earlier)
            writer.writerow(result)


def done(table: list[dict[str, str]], name: str, seed: int, minutes: float) -> bool:
    return any(r["row"] == name and int(r["seed"]) == seed and float(r["budget_minutes"]) == minutes for r in table)


def run_row(
    row: str, name: str, overrides: dict[str, Any], seed: int, minutes: float, val: list, test: list,
    train_images: int | None = None,
) -> dict:  # fmt: skip
    """Train, choose the post-processing on val, score test once; the table line."""
    settings = Settings.load(overrides=overrides)
    settings.train_images = train_images
    if "train.epochs" in overrides:  # `--with train.epochs=N`: equal epochs, not minutes
        minutes_cap, epochs = None, overrides["train.epochs"]
    else:
        minutes_cap, epochs = minutes, EPOCHS
    settings.train = dataclasses.replace(settings.train, max_minutes=minutes_cap, epochs=epochs, seed=seed)
    head = settings.model.instance_head
    label = f"{name} s{seed}"
    with tracking.run(EXPERIMENT, run_name=f"{name}-s{seed}-{minutes:g}min"), tempfile.TemporaryDirectory() as ckpt:
        tracking.log_params(
            {
                "row": name,
                "overrides": json.dumps(overrides),
                "budget_minutes": minutes,
                "train_images": train_images or "all",
                "train": dataclasses.asdict(settings.train),
                "augment": dataclasses.asdict(settings.augment),
                "model": dataclasses.asdict(settings.model),
                "patch": dataclasses.asdict(settings.patch),
            }
        )
        if row in PEERS:
            torch.manual_seed(seed)
            network = PEERS[row][0](head)
            fit, train_seconds = train_network(network, head, settings, Path(ckpt), label)
        else:
            network, fit, train_seconds = train_patchunet(settings, Path(ckpt), label)
            save_model(network, MODELS / f"{name}-s{seed}.pt", patch_size=settings.patch.size)
        chosen = search_postprocessing(
            [(p.maps, p.truth) for p in predict_images(network, val, settings, f"{label} val")], head, settings.eval
        )[0]
        tested = evaluate_images(network, test, chosen.cfg, settings.window)  # the evaluate stage's loop
        test_scores = summarise_scores([image.scores for image in tested])["per_image_mean"]
        seconds_per_image = statistics.median(image.seconds for image in tested)
        result = {
            "row": name,
            "overrides": json.dumps(overrides),
            "seed": seed,
            "budget_minutes": minutes,
            "epochs": len(fit.history),
            "best_epoch": fit.best_epoch,
            "train_minutes": round(train_seconds / 60, 2),
            "parameters": parameter_count(network),
            "network": type(network).__name__,
            "head": head,
            "patch_size": settings.patch.size,
            "precision": fit.precision,
            "schedule": settings.train.schedule,
            "select_by": settings.train.select_by,
            **{f"val_{k}": round(chosen.per_image_mean[k], 4) for k in SCORES},
            **{f"test_{k}": round(test_scores[k], 4) for k in SCORES},
            "seconds_per_image": round(seconds_per_image, 2),
            "postprocessing": json.dumps(chosen.changed),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        tracking.log_params({"chosen": chosen.changed})
        tracking.log_metrics({k: v for k, v in result.items() if isinstance(v, int | float) and k != "seed"})
    return result


def summary(path: Path) -> None:
    """Per budget, a markdown table of the rows by mean val AJI over their seeds."""
    latest: dict[tuple, dict] = {}
    for r in read_table(path):  # a --rerun line replaces the earlier one of its (row, seed, budget)
        latest[(r["row"], int(r["seed"]), float(r["budget_minutes"]))] = r
    if not latest:
        print(f"ablation: no rows in {path} yet")
        return
    groups: dict[float, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for (row, _, budget), r in sorted(latest.items()):
        groups[budget][row].append(r)
    for budget in sorted(groups):
        stats = []
        for row, runs in groups[budget].items():
            aji = [float(r["val_aji"]) for r in runs]

            def mean(key: str, runs: list[dict] = runs) -> float:
                return statistics.mean(float(r[key]) for r in runs)

            stats.append(
                {
                    "row": row,
                    "mean": statistics.mean(aji),
                    "sd": statistics.stdev(aji) if len(aji) > 1 else None,
                    "seeds": [int(r["seed"]) for r in runs],
                    "test": mean("test_aji"),
                    "epochs": "/".join(r["epochs"] for r in runs),
                    "parameters": int(runs[0]["parameters"]),
                    "seconds": mean("seconds_per_image"),
                }
            )
        stats.sort(key=lambda s: -s["mean"])
        best = stats[0]
        close = [s for s in stats[1:] if is_close(best, s)]
        if close or best["sd"] is None:  # the best row needs another seed as much as its close runners-up
            close.append(best)
        print(f"\n### {budget:g} minutes per row\n")
        print("val AJI: mean ± sd over seeds, 6 val images; test AJI: 14 test images, never used to choose\n")
        print("| row | val AJI | seeds | test AJI | epochs | parameters | s/image | |")
        print("|---|---|---|---|---|---|---|---|")
        for s in stats:
            flag = "needs another seed" if any(s is c for c in close) else ""
            sd = f" ± {s['sd']:.4f}" if s["sd"] is not None else ""
            print(
                f"| {s['row']} | {s['mean']:.4f}{sd} | {','.join(map(str, s['seeds']))} | {s['test']:.4f} | "
                f"{s['epochs']} | {s['parameters']:,} | {s['seconds']:.2f} | {flag} |"
            )


def is_close(best: dict, other: dict) -> bool:
    """One seed on either side, or a distance to the best below the larger standard deviation."""
    if best["sd"] is None or other["sd"] is None:
        return True
    return best["mean"] - other["mean"] < max(best["sd"], other["sd"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=6.0, help="wall-clock training budget of every row")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=["base8"], metavar="ROW",
                        help=f"rows to run, one at a time: {', '.join(ROWS)}")  # fmt: skip
    parser.add_argument("--with", dest="extra", nargs="+", default=[], metavar="KEY=VALUE",
                        help="params.yaml overrides applied to every row (model.base_channels=16)")  # fmt: skip
    parser.add_argument("--seed", type=int, help="train.seed (default: params.yaml's)")
    parser.add_argument("--select-by", choices=("val_aji", "val_dice"), default="val_aji",
                        help="how each row picks its best epoch")  # fmt: skip
    parser.add_argument("--train-images", type=int, metavar="N",
                        help="train on N of the 24 train images (harness.fewer_images)")  # fmt: skip
    parser.add_argument("--rerun", action="store_true", help="run a (row, seed, budget) already in the table again")
    parser.add_argument("--table", type=Path, default=TABLE, help="the CSV (default reports/ablation.csv)")
    parser.add_argument("--summary", action="store_true", help="print the table's summary; train nothing")
    args = parser.parse_args()
    table_path = args.table if args.table.is_absolute() else Path.cwd() / args.table
    if args.summary:
        summary(table_path)
        return

    params = load_params(ROOT / "params.yaml")
    extra = checked_overrides(args.extra, params)
    if args.select_by != "val_aji":
        extra["train.select_by"] = args.select_by
    seed = args.seed if args.seed is not None else Settings.load().train.seed
    tracking.connect(tracking.resolve_tracking_uri(parse_section(MlflowConfig, params, "mlflow").tracking_uri))
    val, test = val_images(), test_images()

    skipped = []
    for row in args.rows:
        name = row_name(row, extra) + (f"+train_images={args.train_images}" if args.train_images else "")
        reason = missing_peer(row)
        if reason:
            print(f"ablation: skipping {reason}", flush=True)
            skipped.append(name)
            continue
        if not args.rerun and done(read_table(table_path), name, seed, args.minutes):
            print(f"ablation: {name} seed {seed} at {args.minutes:g} min is already in {table_path}; --rerun to redo")
            continue
        # the engine's fast path (bf16) for every row, whatever params.yaml's default; never a refit
        overrides = {
            "train.precision": "bf16",
            "train.refit": False,
            "train.select_by": "val_aji",
            **ROWS[row],
            **extra,
        }
        print(f"ablation: {name} seed {seed}, {args.minutes:g} min: {json.dumps(overrides)}", flush=True)
        result = run_row(row, name, overrides, seed, args.minutes, val, test, args.train_images)
        append_row(table_path, result)  # after every row: an interrupted sweep keeps its rows
        print("ablation: " + "  ".join(f"{k} {result[k]}" for k in COLUMNS if k != "overrides"), flush=True)
    if skipped:
        print(f"ablation: not run here: {', '.join(skipped)}")
    print(f"ablation: table {table_path}; MLflow experiment {EXPERIMENT}; `--summary` compares the rows")


if __name__ == "__main__":
    main()
