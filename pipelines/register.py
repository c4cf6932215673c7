"""DVC stage `register`: the evaluated model becomes a registered version, `challenger`, and
maybe `champion`; writes models/registry.json: patchunet.stages.register.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from patchunet.core.config import load_params
from patchunet.core.console import run_stage
from patchunet.stages import register


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    register.run(load_params(args.params), Path())


if __name__ == "__main__":
    run_stage(main)
