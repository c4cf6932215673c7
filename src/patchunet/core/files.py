"""Writing outputs atomically (JSON, CSV tables), and reading the JSON files stages pass on.

Writers go through a temporary path and a rename, so a failure never leaves a half-written output
behind; outputs get the permissions the umask gives, as with any other tool. A writer killed
mid-way leaves a temporary file named with its pid, which the next writer of that path removes.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from patchunet.core.errors import DataError


def read_json_value(path: Path, *keys: str) -> Any:
    """The value at `keys` in a JSON file another stage wrote, or one line saying what is wrong."""
    if not path.is_file():
        raise DataError(path, "file not found: run the stage that writes it first (dvc repro)")
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON ({exc})") from None
    for depth, key in enumerate(keys):
        if not isinstance(value, dict) or key not in value:
            raise DataError(path, f"has no '{'.'.join(keys[: depth + 1])}'")
        value = value[key]
    return value


def write_json(path: Path, content: object) -> None:
    """Write `content` as indented JSON, atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(content, indent=2) + "\n")


def write_csv(path: Path, rows: Iterable[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
    """Rows as a CSV table with a header (`columns`, else the first row's keys), written atomically."""
    if columns is None:
        rows = list(rows)
        columns = list(rows[0])
    with csv_file(path, columns) as writer:
        writer.writerows(rows)


@contextlib.contextmanager
def csv_file(path: Path, columns: Sequence[str]) -> Iterator[csv.DictWriter]:
    """A CSV table written row by row, atomically, in UTF-8: yields a writer whose header is written;
    the file replaces `path` only if the block succeeds. For tables too long to hold in memory."""
    with atomic_file(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        yield _csv_writer(f, columns)


def csv_bytes(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> bytes:
    """Rows as a CSV table with a header, as UTF-8 bytes: for files hashed or written together."""
    text = io.StringIO(newline="")
    _csv_writer(text, columns).writerows(rows)
    return text.getvalue().encode()


def _csv_writer(f: TextIO, columns: Sequence[str]) -> csv.DictWriter:
    """The project's one CSV dialect (csv's default: commas, CRLF line ends, minimal quoting), a header first."""
    writer = csv.DictWriter(f, fieldnames=list(columns))
    writer.writeheader()
    return writer


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes it 0600
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `path` only if the block succeeds.

    The old `path`, if any, stays untouched until the new one is complete.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it 0700
        if path.exists():
            old = path.with_name(f"{_temporary_prefix(path)}old.tmp")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _temporary_prefix(path: Path) -> str:
    """`.<name>.<pid>.`: the writer's pid in the name tells a killed writer's leftovers from a live one's."""
    return f".{path.name}.{os.getpid()}."


def remove_stale_temporaries(path: Path) -> None:
    """Delete the `.<name>.<pid>.<random>.tmp` files and folders that writers of `path` left when killed.

    Only those of a process that is gone: another process writing `path` right now keeps its own.
    """
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[^.]+\.tmp")
    for sibling in path.parent.iterdir():
        match = pattern.fullmatch(sibling.name)
        if match is None or _process_is_alive(int(match.group(1))):
            continue
        if sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            sibling.unlink(missing_ok=True)


def _process_is_alive(pid: int) -> bool:
    if pid in (0, os.getpid()):
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where Linux reports it in /proc/self/status."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_LOCK:  # elsewhere the only way to read it is to set it and set it back
        umask = os.umask(0o022)
        os.umask(umask)
    return umask


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in chunks (a few seconds a gigabyte): what identifies an
    input whatever its name, size or time; one line naming the file if it cannot be read."""
    try:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        raise DataError(path, f"cannot read it ({exc.strerror or exc})") from None
