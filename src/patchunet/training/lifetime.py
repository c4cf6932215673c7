"""Processes of a training that end with the process that started them.

A DataLoader worker, or a DDP rank under torchrun, left running after its parent is killed (even by
SIGKILL) would go on holding memory, CPUs and the checkout's training lock (`locking.sole_holder`).
Linux delivers a chosen signal to a process when its parent dies (prctl PR_SET_PDEATHSIG); elsewhere
these functions do nothing.
"""

from __future__ import annotations

import ctypes
import functools
import os
import select
import signal
import sys
import threading
from collections.abc import Callable

PR_SET_PDEATHSIG = 1
"""prctl's option number (linux/prctl.h)."""


def die_with_parent(signum: int, parent: int) -> None:
    """Have this process receive `signum` when its parent, PID `parent`, dies; exit at once if it
    already has (this process then has another parent)."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # it died before the line above: no signal will come
        os.kill(os.getpid(), signum)


def die_with(pid: int) -> None:
    """SIGKILL this process when process `pid`, not its parent, ends (or now, if it has): a daemon
    thread waits on the process's pidfd, which names that process and no later one with its PID."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        os.kill(os.getpid(), signal.SIGKILL)
        return

    def wait_then_die() -> None:
        select.select([pidfd], [], [])
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=wait_then_die, name="die-with-trainer", daemon=True).start()


def loader_worker_init() -> Callable[[int], None]:
    """A DataLoader `worker_init_fn`: each worker is killed when the process that made the loader dies."""
    return functools.partial(_kill_worker_with_trainer, os.getpid())


def _kill_worker_with_trainer(trainer: int, worker_id: int) -> None:
    """A forked worker is the trainer's child and asks the kernel; under spawn or forkserver (Python
    3.14's default) its parent is a server process that can outlive the trainer, so it watches the
    trainer itself. A worker holds nothing to clean up."""
    if sys.platform != "linux":
        return
    if os.getppid() == trainer:
        die_with_parent(signal.SIGKILL, trainer)
    else:  # not forked by the trainer, or the trainer is already gone (die_with then kills at once)
        die_with(trainer)
