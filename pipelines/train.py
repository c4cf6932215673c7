"""DVC stage `train`: PatchUNet on the patch set, tracked in MLflow, its model logged in the run.

Writes models/patchunet.pt, models/checkpoints/{best,last}.pt, models/run.json, metrics/train.json
and plots/train.csv: patchunet.stages.train. `--resume` continues a killed run from its last
checkpoint, in the same MLflow run; Ctrl-C or SIGTERM ends the run KILLED, its checkpoints kept.
Under `torchrun --nproc_per_node N` (`patchunet train --nproc N`) it trains with
DistributedDataParallel; rank 0 alone prints, logs to MLflow and writes the outputs.
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

from patchunet.core.config import load_params
from patchunet.core.console import log_to_stdout, run_stage
from patchunet.stages import train
from patchunet.training.lifetime import die_with_parent


def main() -> None:
    signal.signal(signal.SIGTERM, train.stop_on_sigterm)
    if "LOCAL_RANK" in os.environ:  # a rank of torchrun's: stop (rank 0: end its run KILLED) if torchrun dies
        die_with_parent(signal.SIGTERM, os.getppid())
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--resume", action="store_true", help="continue from models/checkpoints/last.pt")
    args = parser.parse_args()
    if os.environ.get("RANK", "0") == "0":  # the other ranks of torchrun's print nothing
        log_to_stdout()
    train.run(load_params(args.params), Path(), resume=args.resume)


if __name__ == "__main__":
    run_stage(main)
