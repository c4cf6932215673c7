"""Training throughput (patches per second) and peak memory of the default PatchUNet.

Runs the library's own training step (`patchunet.training.loop.train_one_epoch`) on the default
params.yaml model, batch size, loader workers and online augmentation, over patches of the
default size: the real patch set when `dvc repro patches` has made it, else random patches
of the same size. Prints the median of several timed passes, and peak resident memory.

    .venv/bin/python benchmarks/train_throughput.py --batches 30 --repeats 3
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from patchunet.config import AugmentConfig, ModelConfig, PatchConfig, TrainConfig, load_params, parse_section
from patchunet.data.augment import build_augmentation
from patchunet.data.dataset import PatchDataset
from patchunet.data.patches import PatchSet
from patchunet.model.unet import PatchUNet, parameter_count
from patchunet.training.devices import pick_device
from patchunet.training.loop import train_one_epoch

ROOT = Path(__file__).resolve().parents[1]


def patch_store(size: int, count: int) -> tuple[PatchSet, str]:
    store = ROOT / "data/processed/patches/train"
    if (store / "images.npy").is_file():
        return PatchSet.load(store), "real patch set"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    labels = (rng.random((count, size, size)) > 0.8).astype(np.uint16)
    return PatchSet(images, labels, [{} for _ in range(count)]), "random patches"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=30, help="batches per timed pass")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    model_cfg = parse_section(ModelConfig, params, "model")
    train_cfg = parse_section(TrainConfig, params, "train")
    size = parse_section(PatchConfig, params, "patch").size
    augmentation = build_augmentation(parse_section(AugmentConfig, params, "augment"))

    patches, source = patch_store(size, args.batches * train_cfg.batch_size)
    dataset = PatchDataset(patches, augmentation if train_cfg.online_augment else None, seed=train_cfg.seed)
    device = pick_device()
    torch.manual_seed(train_cfg.seed)
    model = PatchUNet(model_cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=train_cfg.lr)
    per_pass = args.batches * train_cfg.batch_size
    subset = Subset(dataset, range(min(per_pass, len(dataset))))

    def one_pass() -> float:
        loader = DataLoader(subset, batch_size=train_cfg.batch_size, shuffle=True, num_workers=train_cfg.num_workers)
        start = time.perf_counter()
        train_one_epoch(model, loader, optimizer, train_cfg, device)
        return len(subset) / (time.perf_counter() - start)

    one_pass()  # warm-up: allocator, oneDNN kernels, worker start
    rates = [one_pass() for _ in range(args.repeats)]
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    print(f"device {device}, {torch.get_num_threads()} threads, {train_cfg.num_workers} loader workers; {source}")
    print(
        f"model base_channels {model_cfg.base_channels}, depth {model_cfg.depth}: {parameter_count(model):,} "
        f"parameters; patch {size} px, batch {train_cfg.batch_size}, online augmentation {train_cfg.online_augment}"
    )
    print(
        f"training throughput: median {statistics.median(rates):.1f} patches/s over {args.repeats} passes of "
        f"{len(subset)} patches (min {min(rates):.1f}, max {max(rates):.1f})"
    )
    print(f"peak resident memory: {own:.0f} MiB (main process), {workers:.0f} MiB (largest loader worker)")


if __name__ == "__main__":
    main()
