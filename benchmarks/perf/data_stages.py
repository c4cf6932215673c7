"""Wall time of `dvc repro patches` from an empty data/ and an empty DVC cache.

Each repetition copies the project's dvc.yaml, params.yaml, pipelines/ and src/ into a fresh
temporary git + DVC repo and times every data stage (`dvc repro -s STAGE`, in order) and the
whole chain. Prints the median and range of each, and the patch counts. The stages read MoNuSeg
where the pipeline does: MONUSEG_DIR, else `data.source`; it must be on disk, since a download would
time the network.

    .venv/bin/python -m benchmarks.perf.data_stages --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import ROOT
from patchunet.core.config import DataConfig, load_params, parse_section
from patchunet.core.paths import PATCH_SUMMARY
from patchunet.data.sources import SOURCE_VARIABLE, chosen_source

STAGES = ("source", "fetch", "masks", "split", "patches")


def fresh_repo(base: Path) -> Path:
    repo = base / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, repo)
    for name in ("pipelines", "src"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for command in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(command, cwd=repo, check=True)
    return repo


def timed(command: list[str], cwd: Path, source: Path) -> float:
    # dvc.yaml runs `python pipelines/...`: make that this interpreter, venv or not; the source as an
    # absolute MONUSEG_DIR, since a relative data.source would not resolve in the temporary repo
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        SOURCE_VARIABLE: str(source.resolve()),
    }
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    source = chosen_source(None, parse_section(DataConfig, load_params(ROOT / "params.yaml"), "data"))
    if source is None:
        raise SystemExit(f"no MoNuSeg on disk: set {SOURCE_VARIABLE} or data.source (a download times the network)")

    per_stage: dict[str, list[float]] = {stage: [] for stage in STAGES}
    chain: list[float] = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as base:
            repo = fresh_repo(Path(base))
            for stage in STAGES:
                per_stage[stage].append(timed([sys.executable, "-m", "dvc", "repro", "-s", stage], repo, source))
        with tempfile.TemporaryDirectory() as base:
            repo = fresh_repo(Path(base))
            chain.append(timed([sys.executable, "-m", "dvc", "repro", "patches"], repo, source))
            counts = json.loads((repo / PATCH_SUMMARY).read_text())

    print(f"cpus available: {len(os.sched_getaffinity(0))}, repeats: {args.repeats}")
    for name, times in [*per_stage.items(), ("dvc repro patches (whole chain)", chain)]:
        print(f"{name:34s} median {statistics.median(times):6.1f} s   (min {min(times):.1f}, max {max(times):.1f})")
    print("patch counts: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
