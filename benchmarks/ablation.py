"""Ablation and peers, side by side under one training budget.

Each row trains one network on the pipeline's patch sets (same split, augmentation, loss,
schedule and seed as the train stage) for `--epochs` epochs, or `--minutes` of wall clock if
given (fair only on an otherwise idle machine: epochs are the same work whatever else runs, and
the PatchUNet rows cost the same per epoch; each row's minutes are reported); chooses its
post-processing on the 6 validation images (postprocess_search, best val AJI); and only then
scores the 14 official test images once. Rows:

- plain: PatchUNet predicting the foreground only (the baseline: distance-transform watershed);
- boundary, distance, hover: PatchUNet with each instance head (heads.py);
- monai: MONAI's BasicUNet at a similar parameter count, with the `--peer-head` outputs and the
  same post-processing;
- smp: segmentation_models.pytorch's Unet on its smallest MobileNetV3 encoder (timm's
  mobilenetv3_small_050, no pretrained weights) with a narrow decoder, at a similar parameter count.

segmentation_models.pytorch imports timm, timm imports torchvision, and the registry's torchvision
does not import beside the CPU torch 2.13 this project pins ("operator torchvision::nms does not
exist"). The smp row therefore runs in a separate environment of torch 2.14.1 + torchvision 0.29.1
(pip takes both from this machine's disk; a CUDA build that runs on the CPU, about 4 GB):

    python3 -m venv .venv-peers
    .venv-peers/bin/pip install torch==2.14.1 torchvision==0.29.1 segmentation-models-pytorch
    .venv-peers/bin/pip install --no-deps -e . && .venv-peers/bin/pip install albumentations \
        imagecodecs matplotlib mlflow opencv-python-headless pandas optuna pyyaml scikit-image tqdm
    .venv-peers/bin/python benchmarks/ablation.py --epochs 3 --rows smp

Every row is an MLflow run of the experiment `patchunet-ablation` (params, val_* and test_*
metrics), so the MLflow UI compares them; the table is printed and written to reports/ablation.csv.
The PatchUNet rows' best weights are kept in models/ablation/<row>.pt (for score_decomposition.py).

    .venv/bin/pip install monai            # benchmark-only, not a dependency of the package
    .venv/bin/python benchmarks/ablation.py --epochs 3
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import tempfile
from pathlib import Path

import torch
from harness import (
    ROOT,
    Settings,
    parameter_count,
    predict_images,
    score_predictions,
    test_images,
    train_network,
    val_images,
)

from patchunet import tracking
from patchunet.config import InstanceHead, MlflowConfig, ModelConfig, load_params, parse_section
from patchunet.evaluation.postprocess_search import search_postprocessing
from patchunet.model.heads import output_channels
from patchunet.model.unet import PatchUNet, save_model

EXPERIMENT = "patchunet-ablation"
TABLE = ROOT / "reports/ablation.csv"
MODELS = ROOT / "models/ablation"
ROWS = ("plain", "boundary", "distance", "hover", "monai", "smp")
SCORES = ("dice", "aji", "pq")


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


PEERS = {"monai": MonaiPeer, "smp": SmpPeer}


def build(row: str, model_cfg: ModelConfig, peer_head: InstanceHead) -> tuple[torch.nn.Module, InstanceHead]:
    if row in PEERS:
        return PEERS[row](peer_head), peer_head
    head = "none" if row == "plain" else row
    return PatchUNet(dataclasses.replace(model_cfg, instance_head=head)), head


def write_table(table: list[dict]) -> None:
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    with TABLE.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)


def merged_with_earlier_rows(table: list[dict]) -> list[dict]:
    """This run's rows, plus the rows of reports/ablation.csv that it did not rerun, in ROWS order."""
    earlier = {}
    if TABLE.is_file():
        with TABLE.open(newline="") as f:
            earlier = {row["row"]: row for row in csv.DictReader(f)}
    rows = earlier | {row["row"]: row for row in table}
    return [rows[name] for name in ROWS if name in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int, default=3, help="training epochs of every row")
    budget.add_argument("--minutes", type=float, help="wall-clock training budget of every row instead")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument("--peer-head", choices=("none", "boundary", "distance", "hover"), default=None,
                        help="instance head of the peers (default: params.yaml model.instance_head)")  # fmt: skip
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    model_cfg = parse_section(ModelConfig, params, "model")
    settings = Settings.load()
    epochs = 1000 if args.minutes else args.epochs
    settings.train = dataclasses.replace(settings.train, max_minutes=args.minutes, epochs=epochs)
    peer_head = args.peer_head or model_cfg.instance_head
    tracking.connect(tracking.resolve_tracking_uri(parse_section(MlflowConfig, params, "mlflow").tracking_uri))
    val, test = val_images(), test_images()

    table = []
    for row in args.rows:
        torch.manual_seed(settings.train.seed)
        network, head = build(row, model_cfg, peer_head)
        with tracking.run(EXPERIMENT, run_name=row), tempfile.TemporaryDirectory() as checkpoints:
            tracking.log_params(
                {
                    "row": row,
                    "head": head,
                    "network": type(network).__name__,
                    "budget_minutes": args.minutes,
                    "budget_epochs": epochs,
                    "train": dataclasses.asdict(settings.train),
                    "augment": dataclasses.asdict(settings.augment),
                }
            )
            fit, train_seconds = train_network(network, head, settings, Path(checkpoints), row)
            if isinstance(network, PatchUNet):
                save_model(network, MODELS / f"{row}.pt", patch_size=settings.patch.size)
            chosen = search_postprocessing(
                [(p.maps, p.truth) for p in predict_images(network, val, settings, f"{row} val")],
                head,
                settings.eval,
            )[0]
            test_scores, seconds_per_image = score_predictions(
                predict_images(network, test, settings, f"{row} test"), head, chosen.cfg
            )
            result = {
                "row": row,
                "head": head,
                "parameters": parameter_count(network),
                "epochs": len(fit.history),
                "train_minutes": round(train_seconds / 60, 1),
                **{f"val_{k}": round(chosen.per_image_mean[k], 4) for k in SCORES},
                **{f"test_{k}": round(test_scores[k], 4) for k in SCORES},
                "seconds_per_image": round(seconds_per_image, 2),
                "postprocessing": chosen.changed,
            }
            tracking.log_params({"chosen": chosen.changed})
            tracking.log_metrics({k: v for k, v in result.items() if isinstance(v, int | float)})
        print(f"ablation: {result}", flush=True)
        table.append(result)
        write_table(merged_with_earlier_rows(table))  # after every row: an interrupted run keeps its rows

    table = merged_with_earlier_rows(table)
    columns = [k for k in table[0] if k != "postprocessing"]
    print(" | ".join(columns))
    for result in table:
        print(" | ".join(str(result[k]) for k in columns))
    print(f"written to {TABLE}; MLflow experiment {EXPERIMENT}")


if __name__ == "__main__":
    main()
