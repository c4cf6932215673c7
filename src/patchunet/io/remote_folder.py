"""A folder on object storage, named by a URL (s3://bucket/prefix, gs://..., az://...), that whole
local files are copied to and from through fsspec: where `predict-slide --out URL` keeps a cohort's
outputs and each slide's finished tiles, for Dask workers on machines that share no file system.

A file is written locally first (atomically), then uploaded as one object: an object store's put
is atomic, so a reader sees a file whole or not at all, as a rename gives on a disk. File systems
with folders (sftp, hdfs, smb, file) give no such guarantee, and are refused: a shared folder is
given as a path. Credentials and the endpoint come from the environment or the storage's own
config (for S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ~/.aws), never from the
URL, which is printed and sent to every worker.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from patchunet.core.errors import PatchUNetError, first_line
from patchunet.core.files import atomic_file

OBJECT_STORES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")
"""fsspec protocols whose puts are atomic (S3 and its peers, Google Cloud Storage, Azure Blob)."""


def is_url(location: str | Path) -> bool:
    """Whether an --out names object storage (a URL with a protocol) rather than a local folder."""
    return isinstance(location, str) and "://" in location


class RemoteFolder:
    """The objects under `url`, as a flat folder of named files (names may hold '/')."""

    def __init__(self, url: str) -> None:
        import fsspec

        parts = urlsplit(url)
        if parts.username or parts.password:
            shown = parts._replace(netloc=f"***@{parts.hostname}").geturl()
            raise PatchUNetError(
                f"{shown}: credentials do not belong in the URL, which is printed and sent to every worker; "
                "give them in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or the storage's config"
            )
        if parts.scheme not in OBJECT_STORES or not parts.netloc:
            raise PatchUNetError(
                f"{url}: not object storage ({'|'.join(OBJECT_STORES)}://BUCKET/PREFIX); give a shared folder as a path"
            )
        self.url = url.rstrip("/")
        try:
            self.fs, root = fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as exc:  # the protocol's package not installed
            raise PatchUNetError(f"{self.url}: cannot open this storage ({first_line(exc)})") from None
        self.root = root.rstrip("/")

    def __str__(self) -> str:
        return self.url

    def child(self, name: str) -> RemoteFolder:
        """The folder `name` inside this one."""
        return RemoteFolder(f"{self.url}/{name}")

    def _key(self, name: str) -> str:
        return f"{self.root}/{name}"

    @contextlib.contextmanager
    def _told(self, doing: str, name: str = "") -> Iterator[None]:
        """A storage error as one line naming the object and what was being done."""
        where = f"{self.url}/{name}" if name else self.url
        try:
            yield
        except Exception as exc:  # S3's answers come as OSErrors, but botocore's own (no credentials, no
            # endpoint) share no base with them, nor do other protocols' packages' errors
            raise PatchUNetError(f"{where}: cannot {doing} ({first_line(exc)})") from None

    def exists(self, name: str) -> bool:
        with self._told("check whether it exists", name):
            self.fs.invalidate_cache()  # s3fs answers from its listings: another machine may have written since
            return self.fs.exists(self._key(name))

    def names(self) -> list[str]:
        """The names of the files in the folder, at any depth."""
        with self._told("list the folder"):
            return sorted(key.removeprefix(self.root + "/") for key in self.fs.find(self.root))

    def download(self, name: str, local: Path) -> bool:
        """Copy file `name` to `local` (replaced whole), or return False where there is none."""
        with self._told("download it", name):
            try:
                with atomic_file(local) as partial:
                    self.fs.get_file(self._key(name), str(partial))
            except FileNotFoundError:  # `local` left as it was
                return False
        return True

    def download_all(self, local: Path, skip: tuple[str, ...] = ()) -> None:
        """Copy every file of the folder but `skip` into the local folder `local`, in one batch (which
        s3fs fetches concurrently)."""
        names = [name for name in self.names() if name not in skip]
        if names:
            with self._told("download the folder"):
                self.fs.get([self._key(name) for name in names], [str(local / name) for name in names])

    def upload(self, local: Path, name: str | None = None) -> None:
        """Copy the local file to `name` (default: its own name), as one object."""
        name = name or local.name
        with self._told("upload it", name):
            self.fs.put_file(str(local), self._key(name))

    def remove(self, names: list[str]) -> None:
        if names:
            with self._told("remove files from it"):
                self.fs.rm([self._key(name) for name in names])

    def remove_all(self) -> None:
        self.remove(self.names())

    def check_writable(self) -> None:
        """Refuse, before any work, storage this process cannot write into and delete from (no bucket,
        no credentials, no permission); leaves nothing behind."""
        probe = self._key(f".patchunet-write-test.{uuid.uuid4().hex}")
        with self._told("write the outputs here"):
            self.fs.pipe_file(probe, b"")
        with self._told("delete files here, as it must for a slide's finished tiles"):
            self.fs.rm(probe)
