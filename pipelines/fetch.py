"""DVC stage `fetch`: MoNuSeg, or your own images, into data/raw/monuseg, with dataset.json.

Source, first found wins: --source, the MONUSEG_DIR variable, `data.source` in params.yaml;
with none, the official zips are downloaded: patchunet.stages.fetch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from patchunet.core.config import load_params
from patchunet.core.console import run_stage
from patchunet.stages import fetch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument(
        "--source", help="unzipped MoNuSeg folder, a folder holding the official zips, or your own images' folder"
    )
    parser.add_argument("--out", type=Path, help="where to copy the images (default data/raw/monuseg)")
    args = parser.parse_args()
    fetch.run(load_params(args.params), Path(), source=args.source, out=args.out)


if __name__ == "__main__":
    run_stage(main)
