"""How much of the machine a stage may use."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


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


def available_memory() -> int:
    """Bytes of memory a new allocation may take without swapping (Linux's MemAvailable)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def free_disk(path: Path) -> int:
    """Bytes free on the file system `path` is (or would be) on."""
    for folder in (path, *path.absolute().parents):
        if folder.exists():
            return shutil.disk_usage(folder).free
    return shutil.disk_usage(Path.cwd()).free
