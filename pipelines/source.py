"""DVC stage `source`: data/source.json, the files (path, size, SHA-256) of the source `fetch` reads.

Runs at every `dvc repro` (always_changed), so that fetch reruns exactly when the source's data
changes: patchunet.stages.source.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from patchunet.core.config import load_params
from patchunet.core.console import run_stage
from patchunet.stages import source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument(
        "--source", help="unzipped MoNuSeg folder, a folder holding the official zips, or your own images' folder"
    )
    parser.add_argument("--out", type=Path, help="where to write the list (default data/source.json)")
    args = parser.parse_args()
    source.run(load_params(args.params), Path(), source=args.source, out=args.out)


if __name__ == "__main__":
    run_stage(main)
