"""Throughput of a cohort of slides on 1 and on 2 Dask workers: `patchunet predict-slide --workers N`.

It builds --slides synthetic S x S pyramidal TIFFs at 0.25 µm/px (slide_throughput.py's: real
MoNuSeg training images in an ellipse of glass, a different draw each), runs `predict-slide` on all
of them with each --workers count (a Dask cluster of that many processes on this machine, which
split its cores), and prints, side by side, the wall time of the whole command (cluster start and
model loads included), the tissue megapixels per second it made of it, and the ratio to the first
count. The slides and outputs are deleted after.

    .venv/bin/python -m benchmarks.perf.cohort_throughput --slides 4 --side 4096
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks import ROOT, pipeline_images
from benchmarks.perf.slide_throughput import synthetic_slide
from patchunet.core.paths import MODEL_FILE
from patchunet.io.slides import write_pyramidal_tiff


def measure(slides: list[Path], workers: int, model: str, params: Path, out: Path) -> dict:
    """Run predict-slide on `slides` with `workers` Dask workers: wall seconds, tissue MP, workers seen."""
    command = [str(ROOT / ".venv/bin/patchunet"), "predict-slide", *map(str, slides), "--workers", str(workers)]
    command += ["--model", model, "--out", str(out), "--params", str(params)]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    if result.returncode:
        raise SystemExit(result.stderr[-2000:])
    with (out / "slides.csv").open() as f:
        rows = list(csv.DictReader(f))
    tissue = sum(float(row["tissue_megapixels"]) for row in rows)
    return {"seconds": seconds, "tissue_mp": tissue, "workers_seen": len({row["worker"] for row in rows})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slides", type=int, default=4, help="how many slides in the cohort")
    parser.add_argument("--side", type=int, default=4096, help="each slide's side, in pixels")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare")
    parser.add_argument("--model", default=str(ROOT / MODEL_FILE))
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    args = parser.parse_args()
    images = [image for _, image, _ in pipeline_images("train")]

    with tempfile.TemporaryDirectory(prefix="cohort-bench-") as scratch:
        slides = []
        for seed in range(args.slides):
            slides.append(Path(scratch) / f"synthetic_{seed}.tif")
            write_pyramidal_tiff(slides[-1], synthetic_slide(args.side, images, seed), 0.25)
        print(f"{args.slides} slides of {args.side} px\n")
        print("| workers | workers used | tissue MP | wall s | tissue MP/s | vs first |")
        print("|---:|---:|---:|---:|---:|---:|")
        first = None
        for workers in args.workers:
            row = measure(slides, workers, args.model, args.params, Path(scratch) / f"out_{workers}")
            rate = row["tissue_mp"] / row["seconds"]
            first = first or rate
            print(
                f"| {workers} | {row['workers_seen']} | {row['tissue_mp']:.1f} | {row['seconds']:.1f} | "
                f"{rate:.3f} | {rate / first:.2f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
