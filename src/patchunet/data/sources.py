"""Getting a MoNuSeg source onto disk: a folder, a folder of the official zips, or a download."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from patchunet.core.config import DataConfig
from patchunet.core.errors import SourceError

CHUNK_BYTES = 1 << 20
SOURCE_VARIABLE = "MONUSEG_DIR"


def chosen_source(explicit: str | None, cfg: DataConfig) -> Path | None:
    """Where fetch reads MoNuSeg: `explicit` (--source), else $MONUSEG_DIR, else data.source; None: download."""
    source = explicit or os.environ.get(SOURCE_VARIABLE) or cfg.source
    return Path(source) if source else None


def source_manifest(source: Path | None, cfg: DataConfig) -> dict:
    """What identifies the data fetch would copy, for DVC to compare between runs.

    Every file under `source` (its path relative to the source, size and SHA-256), or with no source
    the official zips' URLs and SHA-256. Not where the source lies: the same files under another path
    are the same data, and any edited, added or removed file is a change.
    """
    if source is None:
        return {
            "download": [
                {"url": cfg.train_zip_url, "sha256": cfg.train_zip_sha256},
                {"url": cfg.test_zip_url, "sha256": cfg.test_zip_sha256},
            ]
        }
    if not source.exists():
        raise SourceError(f"{source}: MoNuSeg source folder does not exist")
    if source.is_file():  # a single zip
        return {"files": [_file_entry(source, source.name)]}
    files = sorted(p for p in source.rglob("*") if p.is_file())
    return {"files": [_file_entry(path, path.relative_to(source).as_posix()) for path in files]}


def _file_entry(path: Path, name: str) -> dict:
    try:
        with path.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        raise SourceError(f"{path}: cannot read ({exc.strerror})") from None
    return {"path": name, "size": path.stat().st_size, "sha256": digest}


def unpack_source(source: Path, workdir: Path) -> Path:
    """Return a folder holding the unzipped official layout for `source`.

    `source` is either that folder already, or a folder with the official zips, which are
    extracted into `workdir` (a scratch folder the caller owns and removes).
    """
    if not source.exists():
        raise SourceError(f"{source}: MoNuSeg source folder does not exist")
    if source.is_file() and source.suffix.lower() == ".zip":
        zips = [source]
    elif source.is_dir():
        if not any(source.iterdir()):
            raise SourceError(f"{source}: MoNuSeg source folder is empty")
        zips = sorted(source.glob("*.zip"))
        if not zips:
            return source
    else:
        raise SourceError(f"{source}: not a folder or a .zip file")
    for archive in zips:
        extract_zip(archive, workdir)
    return workdir


def extract_zip(archive: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SourceError(f"{archive}: cannot unzip ({exc})") from None


def download(url: str, dest: Path, sha256: str, on_bytes: Callable[[int], None] | None = None) -> None:
    """Download `url` to `dest` and check its SHA-256; refuse anything else with one line."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=30) as response, dest.open("wb") as out:
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                if on_bytes:
                    on_bytes(len(chunk))
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SourceError(
            f"no local MoNuSeg source, and downloading {url} failed ({reason}): set MONUSEG_DIR, or "
            "data.source in params.yaml, to the unzipped MoNuSeg folders or to a folder holding the two official zips"
        ) from None
    if sha256 and digest.hexdigest() != sha256:
        raise SourceError(f"{url}: downloaded file has SHA-256 {digest.hexdigest()}, expected {sha256}")
