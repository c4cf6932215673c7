"""A lock shared by every process of this machine, by name: an flock'ed file in the temporary folder."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive_lock(key: str) -> Iterator[None]:
    """Hold the lock named `key` for the block, waiting while another process holds it.

    The kernel drops an flock when its holder dies, so a killed process never leaves it held.
    """
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"patchunet-{digest}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
