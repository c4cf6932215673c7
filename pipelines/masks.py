"""DVC stage `masks`: data/interim/<split>/labels/<id>.tif, one instance label map per image,
and data/interim/masks_report.json: patchunet.stages.masks.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from patchunet.core.config import load_params
from patchunet.core.console import run_stage
from patchunet.stages import masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    masks.run(load_params(args.params), Path())


if __name__ == "__main__":
    run_stage(main)
