"""Two commits of this repo run the whole pipeline on a short config: are their results identical?

A restructuring (files moved, stages made library functions) must change no result. This script
clones each commit into its own folder, runs `dvc repro` there with a short training (fixed epochs,
no wall-clock budget, so that nothing depends on the machine's speed) and `patchunet predict` on
two test images, then compares, side by side:

- every DVC output's hash in dvc.lock (data, masks, split, patches, reports/samples, ...);
- plots/train.csv (the per-epoch history);
- the weights of models/patchunet.pt, tensor by tensor;
- metrics/test.json and reports/test_per_image.csv (the test scores);
- the predicted label images and nucleus tables of `patchunet predict`.

    MONUSEG_DIR=../shared/monuseg .venv/bin/python -m benchmarks.checks.same_behaviour --before REV

A side whose folder already holds a finished run is reused (its folder is named by the commit), so
the "before" side runs once. It takes about 8 minutes per side on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from benchmarks import ROOT

SHORT = {"epochs": 2, "max_minutes": None}  # the train settings the short config overrides
PREDICTED = ("TCGA-2Z-A9J9-01A-01-TS1", "TCGA-44-2665-01B-06-BS6")  # two test images


def run_side(rev: str, work: Path) -> Path:
    """Clone `rev`, run the short pipeline and predict there, once; the folder it ran in."""
    sha = subprocess.run(["git", "rev-parse", rev], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    folder = work / sha.strip()[:10]
    if (folder / "DONE").is_file():
        print(f"{rev}: reusing {folder}")
        return folder
    subprocess.run(["rm", "-rf", str(folder)], check=True)
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(ROOT), str(folder)], check=True)
    subprocess.run(["git", "checkout", "-q", sha.strip()], cwd=folder, check=True)
    (folder / ".venv").symlink_to(ROOT / ".venv")  # the same installed libraries on both sides
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["train"].update(SHORT)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # this side's package, not the installed one, on the shared venv's python
    env = {**os.environ, "PYTHONPATH": str(folder / "src"), "PATH": f"{folder / '.venv' / 'bin'}:{os.environ['PATH']}"}
    python = str(folder / ".venv" / "bin" / "python")
    print(f"{rev}: dvc repro in {folder}", flush=True)
    subprocess.run([str(folder / ".venv" / "bin" / "dvc"), "repro", "--quiet"], cwd=folder, env=env, check=True)
    images = folder / "data" / "raw" / "monuseg" / "test" / "images"
    inputs = [str(next(images.glob(f"{i}.*"))) for i in PREDICTED]
    out = ["--model", "models/patchunet.pt", "--out", "predicted"]
    subprocess.run([python, "-m", "patchunet", "predict", *inputs, *out], cwd=folder, env=env, check=True)
    (folder / "DONE").touch()
    return folder


def lock_hashes(folder: Path) -> dict[str, str]:
    """Every stage output's hash recorded in dvc.lock, by path."""
    lock = yaml.safe_load((folder / "dvc.lock").read_text())["stages"]
    return {o["path"]: o.get("md5", "") for stage in lock.values() for o in stage.get("outs", [])}


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def weights_equal(a: Path, b: Path) -> bool:
    left, right = (torch.load(p, map_location="cpu", weights_only=True) for p in (a, b))
    left, right = (d.get("state_dict", d.get("model", d)) for d in (left, right))
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def compare(before: Path, after: Path) -> int:
    rows: list[tuple[str, str, str, bool]] = []
    hashes = lock_hashes(before), lock_hashes(after)
    for path in sorted(set(hashes[0]) | set(hashes[1])):
        if path.startswith("models/") and path.endswith(".pt"):
            continue  # checkpoints carry the epoch's wall-clock; their weights are compared below
        a, b = hashes[0].get(path, "-"), hashes[1].get(path, "-")
        rows.append((f"dvc.lock {path}", a[:10], b[:10], a == b))
    for name in ("plots/train.csv", "metrics/test.json", "reports/test_per_image.csv"):
        a, b = file_digest(before / name), file_digest(after / name)
        rows.append((name, a[:10], b[:10], a == b))
    same = weights_equal(before / "models/patchunet.pt", after / "models/patchunet.pt")
    rows.append(("models/patchunet.pt weights", "", "", same))
    for path in sorted((before / "predicted").rglob("*")):
        if path.is_file():
            other = after / path.relative_to(before)
            a, b = file_digest(path), (file_digest(other) if other.is_file() else "missing")
            rows.append((str(path.relative_to(before)), a[:10], b[:10], a == b))
    width = max(len(r[0]) for r in rows)
    print(f"{'output':<{width}}  {'before':<10}  {'after':<10}  same")
    for name, a, b, ok in rows:
        print(f"{name:<{width}}  {a:<10}  {b:<10}  {'yes' if ok else 'NO'}")
    with (after / "metrics/test.json").open() as f:
        print("test scores (both sides):", json.dumps(json.load(f)))
    with (after / "plots/train.csv").open() as f:
        print("epochs:", sum(1 for _ in csv.DictReader(f)))
    differ = sum(not r[3] for r in rows)
    print(f"{len(rows) - differ} of {len(rows)} outputs identical")
    return 1 if differ else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the commit before the change")
    parser.add_argument("--after", default="HEAD", help="the commit after it (default HEAD)")
    parser.add_argument("--work", type=Path, default=ROOT.parent / "same-behaviour", help="where the clones go")
    args = parser.parse_args()
    if not os.environ.get("MONUSEG_DIR"):
        sys.exit("error: set MONUSEG_DIR to the MoNuSeg folder (the fetch stage copies it)")
    args.work.mkdir(parents=True, exist_ok=True)
    before, after = run_side(args.before, args.work), run_side(args.after, args.work)
    sys.exit(compare(before, after))


if __name__ == "__main__":
    main()
