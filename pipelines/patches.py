"""DVC stage `patches`: train/val patch sets in data/processed/patches/{train,val}, their counts
in metrics/patches.json: patchunet.stages.patches.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from patchunet.core.config import load_params
from patchunet.core.console import run_stage
from patchunet.stages import patches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    patches.run(load_params(args.params), Path())


if __name__ == "__main__":
    run_stage(main)
