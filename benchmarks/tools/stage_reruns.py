"""Which DVC stages a one-line change in each package of src/patchunet reruns, read from the deps
that dvc.yaml, tune/dvc.yaml and benchmarks/experiments/dvc.yaml declare, those of them the checkout
has (a change to a file reruns every stage with a dep that is that file or a folder holding it).

Run it on any checkout to compare layouts:

    .venv/bin/python -m benchmarks.tools.stage_reruns            # this checkout
    .venv/bin/python -m benchmarks.tools.stage_reruns ../before  # e.g. `git archive REV | tar -x -C ../before`

A cell `k/n`: a change to k of the package's n files reruns that stage; `-`: none does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from benchmarks import ROOT

DVC_FILES = ("dvc.yaml", "tune/dvc.yaml", "benchmarks/experiments/dvc.yaml")
PACKAGE = "src/patchunet"
TOP_LEVEL = "patchunet/*.py"
"""The row of the modules directly in the package (cli.py, stack.py, ...)."""


def stage_deps(root: Path) -> dict[str, list[str]]:
    """{stage: its deps}, in the order the dvc files list the stages; deps are relative to `root`."""
    stages = {}
    for dvc_file in filter(lambda name: (root / name).is_file(), DVC_FILES):
        for name, stage in yaml.safe_load((root / dvc_file).read_text())["stages"].items():
            stages[name] = [dep if isinstance(dep, str) else next(iter(dep)) for dep in stage.get("deps", [])]
    return stages


def package_files(root: Path) -> dict[str, list[str]]:
    """{package row: its .py files relative to `root`}: one row per subpackage, one for the top level."""
    rows: dict[str, list[str]] = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        relative = path.relative_to(root / PACKAGE)
        row = TOP_LEVEL if len(relative.parts) == 1 else relative.parts[0]
        rows.setdefault(row, []).append(path.relative_to(root).as_posix())
    return rows


def reruns(file: str, deps: list[str]) -> bool:
    return any(file == dep or file.startswith(dep.rstrip("/") + "/") for dep in deps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", nargs="?", type=Path, default=ROOT)
    args = parser.parse_args()
    stages = stage_deps(args.root)
    print("| package | " + " | ".join(stages) + " |")
    print("|---" * (len(stages) + 1) + "|")
    for row, files in package_files(args.root).items():
        counts = [sum(reruns(file, deps) for file in files) for deps in stages.values()]
        cells = [f"{count}/{len(files)}" if count else "-" for count in counts]
        print(f"| {row} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
