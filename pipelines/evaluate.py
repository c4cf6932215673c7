"""DVC stage `evaluate`: the trained model on every official test image, as whole images.

Writes metrics/test.json, reports/test_per_image.csv and reports/samples/, and logs them to the
training run of models/run.json: patchunet.stages.evaluate.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from patchunet.core.config import load_params
from patchunet.core.console import run_stage
from patchunet.stages import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    evaluate.run(load_params(args.params), Path())


if __name__ == "__main__":
    run_stage(main)
