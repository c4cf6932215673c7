"""Two commits of this repo run the whole pipeline on a short config: are their results identical?

A restructuring (files moved, stages made library functions) must change no result. This script
clones each commit into its own folder, runs `dvc repro` there with a short training (fixed epochs,
no wall-clock budget, so that nothing depends on the machine's speed) and `patchunet predict` on
two test images, then compares, side by side:

- every DVC output (data, masks, split, patches, reports/samples, ...) by its dvc.lock hash, and
  those in JSON or CSV (the history in plots/train.csv, the test scores) by value, but for the
  fields any two runs differ in (MLflow run ids, timings, the clone's folder in paths);
- the weights of models/patchunet.pt, tensor by tensor;
- the predicted label images, overlays and nucleus tables of `patchunet predict`; a table column
  only one side has is named, the others compared value by value.

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


VARIES = {"run_id", "model_uri", "seconds", "seconds_per_image", "image", "resolved_image", "registered_at"}
"""Fields that differ between any two runs: MLflow ids, timings, and the clone's own folder in paths."""


def lock_hashes(folder: Path) -> dict[str, str]:
    """Every stage output's hash recorded in dvc.lock, by path."""
    lock = yaml.safe_load((folder / "dvc.lock").read_text())["stages"]
    return {o["path"]: o.get("md5", "") for stage in lock.values() for o in stage.get("outs", [])}


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:10]


def without_varying(value: object) -> object:
    """A JSON value with the fields in VARIES dropped, at any depth."""
    if isinstance(value, dict):
        return {k: without_varying(v) for k, v in value.items() if k not in VARIES}
    if isinstance(value, list):
        return [without_varying(v) for v in value]
    return value


def same_json(a: Path, b: Path) -> str:
    left, right = (without_varying(json.loads(p.read_text())) for p in (a, b))
    return "yes" if left == right else "NO"


def same_csv(a: Path, b: Path) -> str:
    """Row by row on the columns both have, but those in VARIES; names the columns only one has."""
    left, right = (list(csv.DictReader(p.open())) for p in (a, b))
    common = [c for c in left[0] if c in right[0] and c not in VARIES] if left and right else []
    same = len(left) == len(right) and all(ra[c] == rb[c] for ra, rb in zip(left, right, strict=False) for c in common)
    added, gone = (sorted(set(y[0] if y else ()) - set(x[0] if x else ())) for x, y in ((left, right), (right, left)))
    notes = [f"after adds {', '.join(added)}"] * bool(added) + [f"after drops {', '.join(gone)}"] * bool(gone)
    return ("yes" if same else "NO") + (f" ({'; '.join(notes)})" if notes else "")


def weights_equal(a: Path, b: Path) -> bool:
    left, right = (torch.load(p, map_location="cpu", weights_only=True)["state_dict"] for p in (a, b))
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def same_file(a: Path, b: Path) -> str:
    if not b.is_file():
        return "NO (missing after)"
    if a.suffix == ".json":
        return same_json(a, b)
    if a.suffix == ".csv":
        return same_csv(a, b)
    return "yes" if file_digest(a) == file_digest(b) else "NO"


def compare(before: Path, after: Path) -> int:
    """Prints one row per output; 1 if any differs beyond ids, timings and paths."""
    rows: list[tuple[str, str]] = []
    hashes = lock_hashes(before), lock_hashes(after)
    for path in sorted(set(hashes[0]) | set(hashes[1])):
        if (before / path).is_file() and path.endswith((".json", ".csv")):
            rows.append((path, same_file(before / path, after / path)))  # may hold run ids and timings
        elif not path.endswith(".pt"):  # checkpoints carry wall-clock; their weights are compared below
            rows.append((f"{path} (dvc.lock hash)", "yes" if hashes[0].get(path) == hashes[1].get(path) else "NO"))
    same = weights_equal(before / "models/patchunet.pt", after / "models/patchunet.pt")
    rows.append(("models/patchunet.pt (every weight tensor)", "yes" if same else "NO"))
    for path in sorted((before / "predicted").rglob("*")):
        if path.is_file():
            rows.append((str(path.relative_to(before)), same_file(path, after / path.relative_to(before))))
    width = max(len(name) for name, _ in rows)
    print(f"\n{'output':<{width}}  same (but for {', '.join(sorted(VARIES))})")
    for name, verdict in rows:
        print(f"{name:<{width}}  {verdict}")
    scores = json.loads((after / "metrics/test.json").read_text())["per_image_mean"]
    print("test per-image means:", ", ".join(f"{k} {scores[k]:.4f}" for k in ("aji", "pq", "dice")))
    differ = sum(verdict.startswith("NO") for _, verdict in rows)
    print(f"{len(rows) - differ} of {len(rows)} outputs the same")
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
