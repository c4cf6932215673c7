"""Locks by name: for every process of this machine (an flock'ed file in the temporary folder), or
for every machine that reaches one PostgreSQL database (an advisory lock)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

Lock = Callable[[], contextlib.AbstractContextManager[None]]
"""What takes a lock for a block: `lock()` in a `with` statement (e.g. `tuning.study.study_lock`)."""


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


@contextlib.contextmanager
def database_lock(url: str, key: str) -> Iterator[None]:
    """The lock named `key` across every machine that reaches the PostgreSQL database at `url`.

    A session advisory lock on a connection of its own: PostgreSQL drops it when that connection
    closes, so a worker killed on any machine never leaves it held.
    """
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    from patchunet.errors import PatchUNetError

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
