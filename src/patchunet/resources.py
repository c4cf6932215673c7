"""How much of the machine a stage may use."""

from __future__ import annotations

import os


def worker_count() -> int:
    """CPUs this process may run on (respects taskset and container CPU sets), at least 1."""
    return max(1, len(os.sched_getaffinity(0)))
