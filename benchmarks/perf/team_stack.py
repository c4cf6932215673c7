"""The team stack: how long `patchunet stack` takes to start, and how long `dvc push` to its S3
server and `dvc pull` into a teammate's fresh clone take for this checkout's data and models.

Pushes what HEAD's dvc.lock records for dvc.yaml's stages (raw data, labels, patch stores, the
model, its checkpoints, the evaluation samples) from this checkout's DVC cache; the pull goes into a clone with an empty
cache. Run after `dvc repro` with dvc.lock committed:

    .venv/bin/python -m benchmarks.perf.team_stack --starts 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import ROOT
from patchunet import stack


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command[2:])} failed:\n{result.stdout}{result.stderr}")
    return time.perf_counter() - started


def folder_megabytes(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=3, help="stack starts to time (median)")
    args = parser.parse_args()

    starts = []
    for _ in range(args.starts - 1):
        started = time.perf_counter()
        stack.stop(stack.start())
        starts.append(time.perf_counter() - started)
    started = time.perf_counter()
    team = stack.start()
    starts.append(time.perf_counter() - started)
    try:
        print(f"stack start-up: median {statistics.median(starts):.1f} s of {[round(s, 1) for s in starts]}")
        env = {**os.environ, **team.s3_env}
        dvc = [sys.executable, "-m", "dvc"]
        with tempfile.TemporaryDirectory(prefix="patchunet-remote-") as tmp:
            pusher, puller = Path(tmp) / "pusher", Path(tmp) / "puller"
            for clone in (pusher, puller):
                subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
                for setting in (
                    ["remote", "add", "--local", "-d", "team", f"s3://{stack.DVC_BUCKET}/bench"],
                    ["remote", "modify", "--local", "team", "endpointurl", team.s3_endpoint],
                ):
                    subprocess.run([*dvc, *setting], cwd=clone, env=env, check=True)
            subprocess.run([*dvc, "cache", "dir", "--local", str(ROOT / ".dvc/cache")], cwd=pusher, check=True)
            push = timed([*dvc, "push", "dvc.yaml"], pusher, env)  # the pipeline's outputs (not tune/'s study)
            pull = timed([*dvc, "pull", "dvc.yaml"], puller, env)
            size = folder_megabytes(puller / ".dvc/cache")
            files = sum(1 for p in (puller / ".dvc/cache").rglob("*") if p.is_file())
        print(f"dvc push: {push:.1f} s; dvc pull into a fresh clone: {pull:.1f} s; {size:.0f} MB in {files} files")
    finally:
        stack.stop(team)


if __name__ == "__main__":
    main()
