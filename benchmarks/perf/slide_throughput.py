"""Whole-slide throughput and peak memory of `patchunet predict-slide`, against the slide's size.

For each --sides S it builds a synthetic S x S pyramidal TIFF at 0.25 µm/px: real MoNuSeg training
images (data/raw/monuseg, randomly flipped) fill the cells of a 1000 px grid inside an ellipse, and
the rest is empty glass. Then it runs `patchunet predict-slide` on it under `/usr/bin/time -v` and
prints tiles, tissue megapixels, wall time, tissue megapixels per second and peak resident memory,
and how long a slide of 2,000 MP of tissue would take at that rate. The slides are deleted after.

    .venv/bin/python -m benchmarks.perf.slide_throughput --sides 10240 20480
"""

from __future__ import annotations

import argparse
import csv
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import ROOT, pipeline_images
from patchunet.core.paths import MODEL_FILE
from patchunet.io.images import read_rgb_image
from patchunet.io.slides import write_pyramidal_tiff

CELL = 1000
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


def measure(slide: Path, model: str, params: Path, out: Path) -> dict:
    """Run predict-slide under /usr/bin/time -v; its summary row plus peak RSS and wall time."""
    command = ["/usr/bin/time", "-v", str(ROOT / ".venv/bin/patchunet"), "predict-slide", str(slide)]
    command += ["--model", model, "--out", str(out), "--params", str(params)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if result.returncode:
        raise SystemExit(result.stderr[-2000:])
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    with (out / "slides.csv").open() as f:
        row = next(csv.DictReader(f))
    return {**row, "peak_gib": peak_kb / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", type=int, nargs="+", default=[10240, 20480])
    parser.add_argument("--model", default=str(ROOT / MODEL_FILE))
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    args = parser.parse_args()
    images = [image for _, image, _ in pipeline_images("train")]

    print("side px | tiles (tissue) | tissue MP | wall s | tissue MP/s | peak RSS GiB | 2,000 MP takes")
    for side in args.sides:
        with tempfile.TemporaryDirectory(prefix="slide-bench-") as scratch:
            slide = Path(scratch) / f"synthetic_{side}.tif"
            write_pyramidal_tiff(slide, synthetic_slide(side, images), 0.25)
            row = measure(slide, args.model, args.params, Path(scratch) / "out")
        rate = float(row["tissue_megapixels_per_second"])
        hours = PROJECTED_TISSUE_MP / rate / 3600
        print(
            f"{side} | {row['tiles']} ({row['tissue_tiles']}) | {float(row['tissue_megapixels']):.0f} | "
            f"{float(row['seconds']):.0f} | {rate:.2f} | {row['peak_gib']:.2f} | {hours:.2f} h",
            flush=True,
        )


if __name__ == "__main__":
    main()
