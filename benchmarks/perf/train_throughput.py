"""Training throughput (patches per second) per network width, precision and memory layout.

Runs the library's own training step (`make_datasets`, `make_loaders`, `Step`, `train_one_epoch`)
with the params.yaml train and augment settings (batch size, loader workers, online augmentation)
over the real patch set when `dvc repro patches` has made it, else random patches of the same size.
Each configuration trains a fresh network (seeded by train.seed) with a fresh Adam. After one
warm-up pass each, the timed passes go round-robin over the configurations, so that machine
noise hits them alike. Prints the median patches/s of an epoch of `--batches` batches with its
loading (workers started, patches augmented), the same batches pre-loaded in memory (the step
alone), and their ratio: well under 1 means loading starves the step.

    .venv/bin/python -m benchmarks.perf.train_throughput --batches 20 --repeats 3
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable, Iterable

import numpy as np
import torch

from benchmarks import ROOT
from patchunet.core.config import AugmentConfig, ModelConfig, PatchConfig, TrainConfig, load_params, parse_section
from patchunet.core.paths import PATCH_DIR
from patchunet.data.patches import PatchSet
from patchunet.model.unet import PatchUNet, parameter_count
from patchunet.training.builder import make_datasets, make_loaders
from patchunet.training.devices import native_bf16, pick_device, training_precision
from patchunet.training.loop import Step, train_one_epoch

CONFIGS = {
    "fp32, NCHW": ("fp32", False),
    "bf16 autocast, NCHW": ("bf16", False),
    "bf16 autocast, channels_last": ("bf16", True),
}
"""Column name: (train.precision, train.channels_last)."""


@dataclasses.dataclass
class Run:
    """One width at one precision and layout: its network, optimiser, step and timed rates."""

    width: int
    model: PatchUNet
    optimizer: torch.optim.Optimizer
    step: Step
    loaded: list[float] = dataclasses.field(default_factory=list)
    step_only: list[float] = dataclasses.field(default_factory=list)


def patch_store(size: int, count: int) -> tuple[PatchSet, str]:
    """The first `count` real train patches, else `count` random ones of side `size`."""
    store = ROOT / PATCH_DIR / "train"
    if (store / "images.npy").is_file():
        patches = PatchSet.load(store)
        return PatchSet(patches.images[:count], patches.labels[:count], patches.index[:count]), "real patch set"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    labels = (rng.random((count, size, size)) > 0.8).astype(np.uint16)
    return PatchSet(images, labels, [{} for _ in range(count)]), "random patches"


def make_run(model_cfg: ModelConfig, cfg: TrainConfig, device: torch.device) -> Run:
    torch.manual_seed(cfg.seed)
    model = PatchUNet(model_cfg).to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step = Step(cfg, device, training_precision(cfg.precision, device), model_cfg.instance_head)
    return Run(model_cfg.base_channels, model, optimizer, step)


def rate(run: Run, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], patches: int) -> float:
    """Patches per second of one training pass over `batches` (a loader: its loading included)."""
    started = time.perf_counter()
    train_one_epoch(run.model, batches, run.optimizer, run.step)
    return patches / (time.perf_counter() - started)


def print_table(title: str, runs: list[Run], cell: Callable[[Run], str]) -> None:
    print(f"\n{title}\n\n| network | parameters | {' | '.join(CONFIGS)} |\n|---|---:|{'---:|' * len(CONFIGS)}")
    for row in range(0, len(runs), len(CONFIGS)):
        same_width = runs[row : row + len(CONFIGS)]
        cells = " | ".join(cell(run) for run in same_width)
        print(f"| base_channels {same_width[0].width} | {parameter_count(same_width[0].model):,} | {cells} |")


def loading_share(run: Run) -> str:
    return f"{statistics.median(run.loaded) / statistics.median(run.step_only):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16, 32], help="model.base_channels")
    parser.add_argument("--batches", type=int, default=20, help="batches per timed pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per configuration")
    parser.add_argument("--workers", type=int, help="loader workers (default: train.num_workers)")
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    model_cfg = parse_section(ModelConfig, params, "model")
    train_cfg = parse_section(TrainConfig, params, "train")
    if args.workers is not None:
        train_cfg = dataclasses.replace(train_cfg, num_workers=args.workers)
    size = parse_section(PatchConfig, params, "patch").size
    augment_cfg = parse_section(AugmentConfig, params, "augment")

    device = pick_device()
    patches, source = patch_store(size, args.batches * train_cfg.batch_size)
    datasets = make_datasets(model_cfg.instance_head, train_cfg, augment_cfg, patches, patches)  # val unused
    loader, _ = make_loaders(*datasets, train_cfg)
    per_pass = len(loader) * train_cfg.batch_size  # full batches only (drop_last)
    in_memory = list(loader)
    runs = [
        make_run(
            dataclasses.replace(model_cfg, base_channels=width),
            dataclasses.replace(train_cfg, precision=precision, channels_last=channels_last),
            device,
        )
        for width in args.widths
        for precision, channels_last in CONFIGS.values()
    ]
    native = native_bf16(device)
    fallback = "" if native else " (the bf16 columns run fp32, as training does)"
    print(f"device {device}, {torch.get_num_threads()} threads, {loader.num_workers} loader workers; {source}")
    print(f"bf16 native on this {device.type}: {native}{fallback}")
    print(
        f"depth {model_cfg.depth}, patch {size} px, batch {train_cfg.batch_size}, online augmentation "
        f"{train_cfg.online_augment}; median of {args.repeats} passes of {per_pass} patches"
    )

    for run in runs:  # warm-up: allocator, oneDNN kernels
        rate(run, loader, per_pass)
    for _ in range(args.repeats):
        for run in runs:
            run.loaded.append(rate(run, loader, per_pass))
            run.step_only.append(rate(run, in_memory, per_pass))

    print_table("patches/s, loading included", runs, lambda run: f"{statistics.median(run.loaded):.1f}")
    print_table("patches/s, step only", runs, lambda run: f"{statistics.median(run.step_only):.1f}")
    print_table("loading included / step only", runs, loading_share)


if __name__ == "__main__":
    main()
