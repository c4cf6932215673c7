"""Throughput of a cohort of slides on 1 and on 2 Dask workers: `patchunet predict-slide --workers N`.

It builds --slides synthetic S x S pyramidal TIFFs at 0.25 µm/px (slide_throughput.py's: real
MoNuSeg training images in an ellipse of glass, a different draw each), runs `predict-slide` on all
of them with each --workers count (a Dask cluster of that many processes on this machine, which
split its cores), and prints, side by side, the wall time of the whole command (cluster start and
model loads included), the tissue megapixels per second it made of it, and the ratio to the first
count. With --kill, one more run on the largest count has a worker process killed (`kill -9`) once a
slide holds --kill-after finished tiles: Dask restarts the worker and gives its slide out again,
which resumes from the finished tiles; the row says what the loss cost in wall time and tiles. The
slides and outputs are deleted after.

    .venv/bin/python -m benchmarks.perf.cohort_throughput --slides 4 --side 4096 --kill
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks import ROOT, pipeline_images
from benchmarks.perf.slide_throughput import synthetic_slide
from patchunet.core.paths import MODEL_FILE
from patchunet.io.slides import write_pyramidal_tiff


def measure(slides: list[Path], workers: int, model: str, params: Path, out: Path, kill_after: int = 0) -> dict:
    """Run predict-slide on `slides` with `workers` Dask workers: wall seconds, tissue MP, workers seen;
    with `kill_after`, a worker killed once a slide has that many finished tiles, and the tiles it
    had finished and those the slide resumed from."""
    command = [str(ROOT / ".venv/bin/patchunet"), "predict-slide", *map(str, slides), "--workers", str(workers)]
    command += ["--model", model, "--out", str(out), "--params", str(params)]
    log = out.with_suffix(".log")
    started = time.perf_counter()
    with log.open("w") as output, subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=ROOT) as run:
        try:
            killed = kill_a_worker(run, out, kill_after) if kill_after else None
            run.wait()
        finally:
            run.kill()
    seconds = time.perf_counter() - started
    if run.returncode:
        raise SystemExit(log.read_text()[-2000:])
    with (out / "slides.csv").open() as f:
        rows = list(csv.DictReader(f))
    tissue = sum(float(row["tissue_megapixels"]) for row in rows)
    row = {"seconds": seconds, "tissue_mp": tissue, "workers_seen": len({row["worker"] for row in rows})}
    if killed:
        resumed = re.findall(r"(\S+)\.tif: resuming, (\d+) of (\d+) tissue tiles", log.read_text())
        row["killed"] = {"in_progress": killed, "resumed": [f"{Path(s).name} from {n} of {m}" for s, n, m in resumed]}
    return row


def kill_a_worker(run: subprocess.Popen, out: Path, finished: int) -> dict[str, int] | None:
    """Once a slide's tile store in `out` holds `finished` finished tiles, SIGKILL one Dask worker
    process of `run` (its LocalCluster's, started by multiprocessing): each slide in progress then,
    with its finished tiles."""
    while run.poll() is None:
        progress = {store.name[: -len("_tiles")]: len(list(store.glob("0*.json"))) for store in out.glob("*_tiles")}
        if progress and max(progress.values()) >= finished:
            workers = [p for p in psutil.Process(run.pid).children() if "spawn_main" in " ".join(p.cmdline())]
            os.kill(workers[0].pid, signal.SIGKILL)
            return progress
        time.sleep(0.05)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slides", type=int, default=4, help="how many slides in the cohort")
    parser.add_argument("--side", type=int, default=4096, help="each slide's side, in pixels")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare")
    parser.add_argument("--model", default=str(ROOT / MODEL_FILE))
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--kill", action="store_true", help="also run the largest count with a worker killed")
    parser.add_argument("--kill-after", type=int, default=4, help="a slide's finished tiles when it is killed")
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
            unkilled = row
        if args.kill:
            workers = args.workers[-1]
            row = measure(slides, workers, args.model, args.params, Path(scratch) / "out_killed", args.kill_after)
            rate = row["tissue_mp"] / row["seconds"]
            print(
                f"| {workers}, one killed | {row['workers_seen']} | {row['tissue_mp']:.1f} | {row['seconds']:.1f} | "
                f"{rate:.3f} | {rate / first:.2f}x |\n",
                flush=True,
            )
            if "killed" not in row:
                print("No slide reached --kill-after finished tiles: no worker was killed.")
                return
            progress = ", ".join(f"{stem} {done}" for stem, done in row["killed"]["in_progress"].items())
            print(
                f"A worker was killed (kill -9) while the slides in progress held these finished tiles: {progress}. "
                f"Resumed: {'; '.join(row['killed']['resumed']) or 'none'}. The run took "
                f"{row['seconds'] - unkilled['seconds']:+.1f} s against the same run unkilled."
            )


if __name__ == "__main__":
    main()
