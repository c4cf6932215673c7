"""Whole-slide throughput and peak memory of `patchunet predict-slide`, against the slide's size,
before and after a change.

For each --sides S it builds a synthetic S x S pyramidal TIFF at 0.25 µm/px: real MoNuSeg training
images (data/raw/monuseg, randomly flipped) fill the cells of a 1000 px grid inside an ellipse, and
the rest is empty glass. Then it runs `patchunet predict-slide` on it under `/usr/bin/time -v` and
prints tiles, tissue megapixels, wall time, tissue megapixels per second and peak resident memory,
how long a slide of 2,000 MP of tissue would take at that rate, and the sizes of its GeoJSON and
label image. With --before REF it also runs
the code of git commit REF (checked out in a temporary worktree, on the same slide, same venv, with
its own params.yaml unless --params is given) and
prints the two side by side with their ratio; with --profile, where the time goes: each phase's
seconds when the working tree's code segments the first slide's tiles one after the other (the
pipeline then overlaps them). The slides are deleted after.

    .venv/bin/python -m benchmarks.perf.slide_throughput --sides 10240 20480 --before 8085896 --profile
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from benchmarks import ROOT, pipeline_images
from patchunet.core.paths import MODEL_FILE
from patchunet.io.images import read_rgb_image
from patchunet.io.slides import write_pyramidal_tiff

CELL = 1000
OUTPUT_SIZES = ("_nuclei.geojson", "_labels.ome.tif")
PROJECTED_TISSUE_MP = 2000


def synthetic_slide(side: int, images: list[Path], seed: int = 0) -> np.ndarray:
    """An S x S RGB slide: grid cells whose centre lies inside the inscribed ellipse hold a real
    image (flipped at random), the others noisy glass."""
    rng = np.random.default_rng(seed)
    slide = np.full((side, side, 3), 236, np.uint8)
    slide += rng.integers(0, 10, (side, side, 1), dtype=np.uint8)
    centre, radius = side / 2, side / 2 * 0.95
    for top in range(0, side - CELL + 1, CELL):
        for left in range(0, side - CELL + 1, CELL):
            if ((top + CELL / 2 - centre) ** 2 + (left + CELL / 2 - centre) ** 2) ** 0.5 > radius:
                continue
            image = read_rgb_image(images[rng.integers(len(images))])[:CELL, :CELL]
            if rng.random() < 0.5:
                image = image[::-1]
            if rng.random() < 0.5:
                image = image[:, ::-1]
            slide[top : top + image.shape[0], left : left + image.shape[1]] = image
    return slide


def measure(slide: Path, model: str, params: Path, out: Path, source: Path) -> dict:
    """Run predict-slide, the package under `source` (a src/ folder), under /usr/bin/time -v; its
    summary row plus peak RSS."""
    command = ["/usr/bin/time", "-v", str(ROOT / ".venv/bin/python"), "-c", "from patchunet.cli import main; main()"]
    command += ["predict-slide", str(slide), "--model", model, "--out", str(out), "--params", str(params)]
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(source)}
    )
    if result.returncode:
        raise SystemExit(result.stderr[-2000:])
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    with (out / "slides.csv").open() as f:
        row = next(csv.DictReader(f))
    sizes = {name: sum(path.stat().st_size for path in out.glob(f"*{name}")) / 2**20 for name in OUTPUT_SIZES}
    return {**row, "peak_gib": peak_kb / 2**20, **sizes}


@contextlib.contextmanager
def checked_out(ref: str) -> Iterator[Path]:
    """The tree of git commit `ref`, in a temporary worktree removed after."""
    with tempfile.TemporaryDirectory(prefix="slide-bench-before-") as scratch:
        tree = Path(scratch) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), ref], cwd=ROOT, check=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=True)


def report(label: str, side: int, row: dict, before: float | None) -> float:
    """Print one run's row of the Markdown table; its tissue MP/s."""
    rate = float(row["tissue_megapixels_per_second"])
    hours = PROJECTED_TISSUE_MP / rate / 3600
    sizes = " | ".join(f"{row[name]:.1f}" if row[name] else "-" for name in OUTPUT_SIZES)
    print(
        f"| {side} | {label} | {row['tiles']} ({row['tissue_tiles']}) | {float(row['tissue_megapixels']):.0f} | "
        f"{float(row['seconds']):.0f} | {rate:.2f} | {f'{rate / before:.2f}x' if before else '-'} | "
        f"{row['peak_gib']:.2f} | {hours:.2f} h | {sizes} |",
        flush=True,
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", type=int, nargs="+", default=[10240, 20480])
    parser.add_argument("--model", default=str(ROOT / MODEL_FILE))
    parser.add_argument("--params", type=Path, help="for every run (default: each commit's own params.yaml)")
    parser.add_argument("--before", metavar="REF", help="also run this git commit's code, side by side")
    parser.add_argument("--profile", action="store_true", help="and where the time goes, on the first slide")
    args = parser.parse_args()
    images = [image for _, image, _ in pipeline_images("train")]

    with contextlib.ExitStack() as stack:
        trees = {"now": ROOT}
        if args.before:
            trees = {f"before ({args.before})": stack.enter_context(checked_out(args.before)), **trees}
        # each commit's own params.yaml, unless --params: an older one may not know a newer key
        sources = {label: (tree / "src", args.params or tree / "params.yaml") for label, tree in trees.items()}
        print(
            "| side px | code | tiles (tissue) | tissue MP | wall s | tissue MP/s | vs before | peak RSS GiB | "
            "2,000 MP takes | GeoJSON MiB | label image MiB |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            flush=True,
        )
        profile = io.StringIO()
        for side in args.sides:
            with tempfile.TemporaryDirectory(prefix="slide-bench-") as scratch:
                slide = Path(scratch) / f"synthetic_{side}.tif"
                write_pyramidal_tiff(slide, synthetic_slide(side, images), 0.25)
                before = None
                for index, (label, (source, params)) in enumerate(sources.items()):
                    row = measure(slide, args.model, params, Path(scratch) / f"out-{index}", source)
                    rate = report(label, side, row, before)
                    before = before or (rate if args.before else None)
                if args.profile and side == args.sides[0]:
                    from benchmarks.perf.slide_profile import print_profile

                    with contextlib.redirect_stdout(profile):  # after the table
                        print_profile(
                            slide, args.model, args.params or ROOT / "params.yaml", Path(scratch) / "out-profile"
                        )
        print(profile.getvalue(), end="")


if __name__ == "__main__":
    main()
