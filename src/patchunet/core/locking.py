"""Locks by name: for every process of this machine (an flock'ed file in the temporary folder), or
for every machine that reaches one PostgreSQL database (an advisory lock); and a lock file only one
process may hold, refusing the others (`sole_holder`).

A lock file is removed by its holder as it releases it, so none accumulate. A process that opened
the file before it was removed may then take the flock of a file no longer at the path: it checks,
after taking it, that the path still names the file it holds, and opens the path again if not.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from patchunet.core.errors import PatchUNetError

Lock = Callable[[], contextlib.AbstractContextManager[None]]
"""What takes a lock for a block: `lock()` in a `with` statement (e.g. `tuning.study.study_lock`)."""


@contextlib.contextmanager
def exclusive_lock(key: str) -> Iterator[None]:
    """Hold the lock named `key` for the block, waiting while another process holds it.

    The kernel drops an flock when its holder dies, so a killed process never leaves it held.
    """
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"patchunet-{digest}.lock"
    descriptor = _take_flock(path, blocking=True)
    assert descriptor is not None  # a blocking flock waits instead of failing
    with _released_and_removed(path, descriptor):
        yield


@contextlib.contextmanager
def sole_holder(path: Path, what: str) -> Iterator[None]:
    """Hold the lock file `path` for the block, or raise PatchUNetError at once while another process
    holds it, naming that process's PID (`what` says what the lock guards, e.g. "training").

    The kernel drops the flock when the holder dies, even by SIGKILL, and so do the processes it
    forked (DataLoader workers), which share it: the next process is accepted once they are all gone.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = _take_flock(path, blocking=False)
    if descriptor is None:
        holder = _holder_pid(path)
        who = f"PID {holder}" if holder else "another process"
        raise PatchUNetError(f"{path}: {who} is already running {what} here; wait for it to end, or stop it")
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()}\n".encode())
    with _released_and_removed(path, descriptor):
        yield


def _take_flock(path: Path, *, blocking: bool) -> int | None:
    """A descriptor of the file at `path` holding its exclusive flock; None if `blocking` is False
    and another process holds it."""
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(descriptor)
            return None
        except BaseException:
            os.close(descriptor)
            raise
        if _names(path, descriptor):
            return descriptor
        os.close(descriptor)  # its holder removed it as it released it: take the file at the path now


def _names(path: Path, descriptor: int) -> bool:
    """True when `path` is the file open as `descriptor`."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(descriptor)
    return (found.st_dev, found.st_ino) == (held.st_dev, held.st_ino)


@contextlib.contextmanager
def _released_and_removed(path: Path, descriptor: int) -> Iterator[None]:
    """Hold the flock of `descriptor` for the block, then remove `path` (while still holding it, so
    that no other process holds the file removed) and release it."""
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(descriptor)


def _holder_pid(path: Path) -> int | None:
    """The PID the holder of the lock file `path` wrote in it, if it has yet."""
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().strip())
    return None


@contextlib.contextmanager
def database_lock(url: str, key: str) -> Iterator[None]:
    """The lock named `key` across every machine that reaches the PostgreSQL database at `url`.

    A session advisory lock on a connection of its own: PostgreSQL drops it when that connection
    closes, so a worker killed on any machine never leaves it held.
    """
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    lock_id = int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big", signed=True)
    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        try:
            connection = engine.connect()
        except sqlalchemy.exc.SQLAlchemyError as exc:
            reason = str(exc.orig if getattr(exc, "orig", None) else exc).strip().splitlines()[0]
            raise PatchUNetError(f"{engine.url.render_as_string()}: cannot connect to PostgreSQL: {reason}") from None
        with connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:id)"), {"id": lock_id})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:id)"), {"id": lock_id})
    finally:
        engine.dispose()


def storage_lock(storage_url: str, key: str) -> contextlib.AbstractContextManager[None]:
    """A lock for the users of one storage: across machines on PostgreSQL, else on this machine."""
    if storage_url.startswith("postgresql"):
        return database_lock(storage_url, key)
    return exclusive_lock(f"{storage_url}|{key}")
