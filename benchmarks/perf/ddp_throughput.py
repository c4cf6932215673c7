"""Training throughput (patches per second) of 1 and of N DDP processes, side by side, same global batch.

Starts this script under torchrun once per process count (`--nproc 1 2` by default); each run trains
the default params.yaml model as the train stage does (the loaders of `builder.make_loaders`,
sharded over the ranks; the DDP-wrapped model; `loop.train_one_epoch`; `train.batch_size` as the
global batch; the params' loader workers and online augmentation) over the same patches: the real
patch set when `dvc repro patches` has made it, else random patches of the default size
(`train_throughput.patch_store`). Each run times a warm-up pass, then `--repeats` passes of
`--batches` global batches, and reports the median. One process runs on every core; N processes
on CPUs share them equally (`distributed.process_group`). Run from the repository root.

    .venv/bin/python -m benchmarks.perf.ddp_throughput --batches 20 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DistributedSampler, Subset

from benchmarks import ROOT
from benchmarks.perf.train_throughput import patch_store
from patchunet.core.config import AugmentConfig, ModelConfig, PatchConfig, TrainConfig, load_params, parse_section
from patchunet.data.augment import build_augmentation
from patchunet.data.dataset import PatchDataset
from patchunet.model.unet import PatchUNet, parameter_count
from patchunet.training.builder import make_loaders
from patchunet.training.devices import training_precision
from patchunet.training.distributed import process_group
from patchunet.training.loop import Step, train_one_epoch


def measure(batches: int, repeats: int, out: Path) -> None:
    """One rank of a timed run; rank 0 writes the figures to `out` as JSON."""
    params = load_params(ROOT / "params.yaml")
    model_cfg = parse_section(ModelConfig, params, "model")
    train_cfg = parse_section(TrainConfig, params, "train")
    augmentation = build_augmentation(parse_section(AugmentConfig, params, "augment"))
    patches, source = patch_store(parse_section(PatchConfig, params, "patch").size, batches * train_cfg.batch_size)
    head = model_cfg.instance_head
    augmentation = augmentation if train_cfg.online_augment else None
    dataset = PatchDataset(patches, augmentation, train_cfg.seed, head, contact=train_cfg.contact_weight > 0)
    per_pass = Subset(dataset, range(min(batches * train_cfg.batch_size, len(dataset))))

    with process_group() as ranks:
        train_loader, _ = make_loaders(per_pass, per_pass, train_cfg, ranks)
        torch.manual_seed(train_cfg.seed)
        model = PatchUNet(model_cfg).to(ranks.device)
        if train_cfg.channels_last:  # before DDP takes its views of the parameters, as `fit` does
            model.to(memory_format=torch.channels_last)
        trained = ranks.wrap(model)
        optimizer = torch.optim.Adam(model.parameters(), lr=train_cfg.lr)
        step = Step(train_cfg, ranks.device, training_precision(train_cfg.precision, ranks.device), head)

        def one_pass(epoch: int) -> float:
            if isinstance(train_loader.sampler, DistributedSampler):
                train_loader.sampler.set_epoch(epoch)
            ranks.barrier()
            start = time.perf_counter()
            train_one_epoch(trained, train_loader, optimizer, step, ranks)
            return len(train_loader) * train_cfg.batch_size / ranks.from_main(time.perf_counter() - start)

        one_pass(0)  # warm-up: allocator, oneDNN kernels, loader workers, DDP buckets
        rates = [one_pass(epoch) for epoch in range(1, repeats + 1)]
        if ranks.is_main:
            figures = {
                "processes": ranks.world_size,
                "device": str(ranks.device),
                "threads_per_process": torch.get_num_threads(),
                "loader_workers_per_process": train_cfg.num_workers,
                "patches_per_pass": len(train_loader) * train_cfg.batch_size,
                "rates": rates,
                "source": source,
                "model": f"base_channels {model_cfg.base_channels}, depth {model_cfg.depth}, "
                f"{parameter_count(model):,} parameters",
                "batch": train_cfg.batch_size,
                "online_augment": train_cfg.online_augment,
                "patch_size": patches.images.shape[1],
            }
            out.write_text(json.dumps(figures))


def run_with(nproc: int, batches: int, repeats: int, out: Path) -> dict:
    """This script's `measure` as `nproc` torchrun processes; their figures."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    command += ["-m", __spec__.name, "--measure", "--out", str(out)]  # a rank, as torchrun's module
    command += ["--batches", str(batches), "--repeats", str(repeats)]
    subprocess.run(command, check=True, cwd=ROOT)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20, help="global batches per timed pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2], help="process counts to compare")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # a rank, under torchrun
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.batches, args.repeats, args.out)
        return

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ddp-throughput-") as folder:
        runs = [run_with(n, args.batches, args.repeats, Path(folder) / f"{n}.json") for n in args.nproc]
    first = runs[0]
    print(
        f"model {first['model']}; patch {first['patch_size']} px, global batch {first['batch']}, online "
        f"augmentation {first['online_augment']}, {first['loader_workers_per_process']} loader worker(s) per "
        f"process; {first['source']}; {os.cpu_count()} CPUs"
    )
    print(f"{'processes':>9}  {'device':>6}  {'threads each':>12}  {'patches/s (median)':>18}  {'min':>6}  {'max':>6}")
    for run in runs:
        rates = run["rates"]
        print(
            f"{run['processes']:>9}  {run['device']:>6}  {run['threads_per_process']:>12}  "
            f"{statistics.median(rates):>18.1f}  {min(rates):>6.1f}  {max(rates):>6.1f}"
        )
    print(
        f"{len(first['rates'])} timed passes of {first['patches_per_pass']} patches each, after a warm-up pass; "
        f"1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (other work shares the CPUs)"
    )


if __name__ == "__main__":
    main()
