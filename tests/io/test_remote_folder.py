"""`RemoteFolder` against a real S3-protocol server (moto's, on loopback): whole files up and down,
and storage it cannot write into refused in one line before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
import s3fs

from patchunet.core.errors import PatchUNetError
from patchunet.io.remote_folder import RemoteFolder, is_url

pytestmark = pytest.mark.distributed


def test_files_go_up_and_come_back_whole_in_their_subfolders(s3_bucket: str, tmp_path: Path) -> None:
    folder = RemoteFolder(f"{s3_bucket}/run/")
    local = tmp_path / "a.bin"
    local.write_bytes(b"\x00first" * 1000)
    folder.upload(local)
    tiles = folder.child("slide_tiles")
    tiles.upload(local, "0000_0001.json")
    assert folder.names() == ["a.bin", "slide_tiles/0000_0001.json"] and tiles.names() == ["0000_0001.json"]
    back = tmp_path / "back" / "a.bin"
    back.parent.mkdir()
    back.write_bytes(b"older and longer" * 2000)
    assert folder.download("a.bin", back) and back.read_bytes() == local.read_bytes()
    assert not folder.download("missing.bin", tmp_path / "missing.bin") and not (tmp_path / "missing.bin").exists()
    assert sorted(path.name for path in back.parent.iterdir()) == ["a.bin"]  # no partial file left
    tiles.download_all(tmp_path / "copy")
    assert (tmp_path / "copy" / "0000_0001.json").read_bytes() == local.read_bytes()
    tiles.remove_all()
    assert folder.names() == ["a.bin"] and folder.exists("a.bin") and not tiles.exists("0000_0001.json")


def test_writable_storage_is_left_as_it_was(s3_bucket: str) -> None:
    folder = RemoteFolder(f"{s3_bucket}/run")
    folder.check_writable()
    assert folder.names() == []


def test_a_file_written_by_another_client_is_seen_at_once(s3_bucket: str, tmp_path: Path) -> None:
    folder = RemoteFolder(f"{s3_bucket}/run")
    assert folder.names() == [] and not folder.exists("late.json")  # s3fs's listings cached
    s3fs.S3FileSystem(skip_instance_cache=True).pipe_file(f"{s3_bucket}/run/late.json", b"{}")
    assert folder.exists("late.json") and folder.download("late.json", tmp_path / "late.json")


NOT_OBJECT_STORAGE = "not object storage (s3|s3a|gs|gcs|az|abfs|abfss://BUCKET/PREFIX); give a shared folder as a path"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("s3://no-such-bucket-here/run", "cannot write the outputs here (The specified bucket does not exist)"),
        ("file:///tmp/run", NOT_OBJECT_STORAGE),
        ("memory://run", NOT_OBJECT_STORAGE),
        ("s3://", NOT_OBJECT_STORAGE),
    ],
    ids=["no-bucket", "a-folder", "memory", "no-bucket-name"],
)
def test_storage_it_cannot_write_into_is_one_line_naming_it(s3_bucket: str, url: str, problem: str) -> None:
    with pytest.raises(PatchUNetError) as caught:
        RemoteFolder(url).check_writable()
    assert str(caught.value) == f"{url}: {problem}"


def test_credentials_in_the_url_are_refused_without_showing_them() -> None:
    with pytest.raises(PatchUNetError) as caught:
        RemoteFolder("s3://AKIAEXAMPLE:topsecret@bucket/run")
    message = str(caught.value)
    assert message.startswith("s3://***@bucket/run: credentials do not belong in the URL")
    assert "topsecret" not in message and "AKIAEXAMPLE" not in message and "\n" not in message


def test_no_credentials_is_one_line_naming_the_storage(s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role's credentials either
    s3fs.S3FileSystem.clear_instance_cache()
    with pytest.raises(
        PatchUNetError, match=r"^s3://.+/run: cannot write the outputs here \(Unable to locate credentials\)$"
    ):
        RemoteFolder(f"{s3_bucket}/run").check_writable()


def test_only_a_url_with_a_protocol_is_remote() -> None:
    assert is_url("s3://bucket/prefix") and not is_url("out/slides") and not is_url(Path("s3:/x"))
