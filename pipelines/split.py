"""DVC stage `split`: data/interim/split.json, an image-level train/val split of the training
set, stratified by organ; test is the official test set: patchunet.stages.split.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from patchunet.core.config import load_params
from patchunet.core.console import run_stage
from patchunet.stages import split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    split.run(load_params(args.params), Path())


if __name__ == "__main__":
    run_stage(main)
