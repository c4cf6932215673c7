import hashlib
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO_ROOT, TEST_DIR, write_user_source

from patchunet.core.config import DataConfig, load_params, parse_section
from patchunet.core.errors import SourceError
from patchunet.data.monuseg import official_dirs, pair_files
from patchunet.data.sources import chosen_source, download, source_manifest, unpack_source


def zip_official_folders(source: Path, dest: Path) -> Path:
    """Make the two official zips, each holding its top folder, as the organisers ship them."""
    dest.mkdir()
    for name in ("MoNuSeg 2018 Training Data", "MoNuSegTestData"):
        shutil.make_archive(str(dest / name), "zip", root_dir=source, base_dir=name)
    return dest


def test_unzipped_folder_is_used_as_it_is(synthetic_source: Path, tmp_path: Path) -> None:
    assert unpack_source(synthetic_source, tmp_path / "scratch") == synthetic_source


def test_folder_of_official_zips_is_unpacked(synthetic_source: Path, tmp_path: Path) -> None:
    zips = zip_official_folders(synthetic_source, tmp_path / "zips")
    root = unpack_source(zips, tmp_path / "scratch")
    assert len(pair_files(official_dirs(root), "train")) == 4


def test_empty_source_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="empty: MoNuSeg source folder is empty"):
        unpack_source(tmp_path / "empty", tmp_path / "scratch")


def test_missing_source_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        unpack_source(tmp_path / "nowhere", tmp_path / "scratch")


def test_corrupt_zip_is_refused(tmp_path: Path) -> None:
    (tmp_path / "zips").mkdir()
    (tmp_path / "zips" / "MoNuSegTestData.zip").write_bytes(b"PK not really")
    with pytest.raises(SourceError, match=r"MoNuSegTestData\.zip: cannot unzip"):
        unpack_source(tmp_path / "zips", tmp_path / "scratch")


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on loopback serving `served/`."""
    served = tmp_path / "served"
    served.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served
    server.shutdown()
    server.server_close()


def test_download_checks_the_sha256(file_server: tuple[str, Path], tmp_path: Path) -> None:
    url, served = file_server
    (served / "a.zip").write_bytes(b"payload")
    good = hashlib.sha256(b"payload").hexdigest()
    seen: list[int] = []
    download(f"{url}/a.zip", tmp_path / "a.zip", good, on_bytes=seen.append)
    assert (tmp_path / "a.zip").read_bytes() == b"payload" and sum(seen) == 7
    with pytest.raises(SourceError, match="expected 00"):
        download(f"{url}/a.zip", tmp_path / "b.zip", "00" * 32)


def test_download_failure_says_what_to_set(file_server: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = file_server
    with pytest.raises(SourceError, match=r"set MONUSEG_DIR, or data\.source in params\.yaml"):
        download(f"{url}/missing.zip", tmp_path / "x.zip", "")


DATA = parse_section(DataConfig, load_params(REPO_ROOT / "params.yaml"), "data")


def test_manifest_is_the_same_for_the_same_files_under_another_path(synthetic_source: Path, tmp_path: Path) -> None:
    manifest = source_manifest(synthetic_source, DATA)
    assert len(manifest["files"]) == 12 and str(synthetic_source) not in str(manifest)
    assert source_manifest(shutil.copytree(synthetic_source, tmp_path / "moved"), DATA) == manifest


def test_manifest_changes_when_a_file_changes(synthetic_source: Path) -> None:
    before = source_manifest(synthetic_source, DATA)
    xml = synthetic_source / TEST_DIR / "TCGA-AC-0005-01Z.xml"
    xml.write_text(xml.read_text().replace('X="', 'X="1'))
    assert source_manifest(synthetic_source, DATA) != before


def test_manifest_without_a_source_names_the_official_zips() -> None:
    manifest = source_manifest(None, DATA)
    assert [z["sha256"] for z in manifest["download"]] == [DATA.train_zip_sha256, DATA.test_zip_sha256]


def test_source_is_the_option_then_monuseg_dir_then_params(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONUSEG_DIR", "/from/env")
    assert chosen_source("/from/option", DATA) == Path("/from/option")
    assert chosen_source(None, DATA) == Path("/from/env")
    monkeypatch.delenv("MONUSEG_DIR")
    assert chosen_source(None, DATA) is None  # data.source is null: download


def test_manifest_of_a_zip_names_the_zip(synthetic_source: Path, tmp_path: Path) -> None:
    zips = zip_official_folders(synthetic_source, tmp_path / "zips")
    manifest = source_manifest(zips / "MoNuSegTestData.zip", DATA)
    assert [f["path"] for f in manifest["files"]] == ["MoNuSegTestData.zip"]


def test_manifest_of_your_own_images_lists_every_file_of_the_folder(tmp_path: Path) -> None:
    cfg = parse_section(DataConfig, load_params(REPO_ROOT / "params.yaml"), "data")
    source = write_user_source(tmp_path / "mine")
    names = [entry["path"] for entry in source_manifest(source, cfg)["files"]]
    assert "test.txt" in names and "annotations/slide-b-02.geojson" in names and "labels/slide-a-01.png" in names
    assert len(names) == 6 + 6 + 1
    before = source_manifest(source, cfg)
    (source / "test.txt").write_text("slide-b-02\n")
    assert source_manifest(source, cfg) != before  # another test list is other data: fetch reruns
