"""`patchunet train --nproc N`: torchrun on this machine, ending as the stage ends when a rank fails.

`python -m torch.distributed.run` follows a rank's own one-line error with its agent's traceback
and failure table; this runs the same launcher (`torch.distributed.run.run`) and exits 1 instead,
so the rank's line is what the user reads; a rank that crashed (a signal, an exit status other
than a user error's 1) gets one line naming it. SIGTERM or Ctrl-C to this launcher stops every rank
(torchrun sends them the signal: rank 0 ends its MLflow run KILLED) and ends it as `interrupted`, as
the single-process stage ends; a rank whose launcher is killed outright stops too (pipelines/train.py).
"""

from __future__ import annotations

import logging
import sys


def main(argv: list[str]) -> int:
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # torchrun's own log lines ("setting OMP_NUM_THREADS", "failed (exitcode: 1)", "sending SIGTERM"):
    # each rank sets its own threads, and says why it failed, or the line below does
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)

    try:
        run(parse_args(argv))
    except ChildFailedError as failed:
        # every rank that failed, not torchrun's "first": failures within a second tie on its clock
        for rank, failure in sorted(failed.failures.items()):
            if failure.exitcode != 1:  # 1: a user error, which its rank has said in one line
                reason = f"rank {rank} failed with exit code {failure.exitcode}"
                print(f"train: {reason}; see its output above", file=sys.stderr)
        return 1
    except (SignalException, KeyboardInterrupt):  # torchrun has stopped the ranks with the same signal
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
