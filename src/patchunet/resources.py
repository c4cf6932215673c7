"""How much of the machine a stage may use."""

from __future__ import annotations

import os


def worker_count() -> int:
    """CPUs this process may run on (respects taskset and container CPU sets), at least 1."""
    return max(1, len(os.sched_getaffinity(0)))


def cpu_share(index: int, count: int) -> set[int]:
    """The CPUs of process `index` of `count` that split this process's CPUs between them, so that
    parallel workers each train on their own cores instead of all contending for all of them."""
    cpus = sorted(os.sched_getaffinity(0))
    if count > len(cpus):
        return {cpus[index % len(cpus)]}
    return set(cpus[index::count])
