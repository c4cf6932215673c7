"""Stage `fetch`: MoNuSeg, or your own images, into data/raw/monuseg, every image paired with its labels.

Source, first found wins: `source` (--source), the MONUSEG_DIR variable, `data.source` in params.yaml;
with none, the official zips are downloaded. A source holding an `images/` folder is your own
images in the generic layout (`data.user_layout`, split by its test.txt); anything else is MoNuSeg's.
Writes data/raw/monuseg/dataset.json: the layout, data.microns_per_pixel and each split's image ids.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from tqdm import tqdm

from patchunet.core.config import DataConfig, parse_section
from patchunet.core.files import atomic_directory, write_json
from patchunet.core.paths import DATASET_FILE, RAW_DIR
from patchunet.data.monuseg import (
    SPLITS,
    ImageRecord,
    check_no_shared_images,
    copy_to_raw,
    dataset_description,
    official_dirs,
    pair_files,
)
from patchunet.data.sources import chosen_source, download, unpack_source
from patchunet.data.user_layout import check_label_maps, check_recorded_scales, find_user_root, user_records


@dataclasses.dataclass(frozen=True)
class FetchSummary:
    raw_dir: Path
    layout: str
    """"monuseg" or "generic"."""
    images: dict[str, list[str]]
    """Each split's image ids."""


def run(params: dict, root: Path, *, source: str | None = None, out: Path | None = None) -> FetchSummary:
    """Copy the source's paired images into `out` (default root/data/raw/monuseg), all or nothing."""
    cfg = parse_section(DataConfig, params, "data")
    chosen = chosen_source(source, cfg)
    out = root / RAW_DIR if out is None else out

    with tempfile.TemporaryDirectory(prefix="monuseg-") as scratch:
        if chosen:
            print(f"fetch: source {chosen}")
            unpacked = unpack_source(chosen, Path(scratch))
        else:
            unpacked = download_official(cfg, Path(scratch))
        layout, records = source_records(unpacked, cfg)
        check_no_shared_images(records)  # before anything is written
        dataset = dataset_description(layout, records, cfg.microns_per_pixel)
        with atomic_directory(out) as staging:
            copy_to_raw(tqdm(records, desc="copy", unit="image"), staging)
            write_json(staging / DATASET_FILE.name, dataset)
    report(records)
    print(f"fetch: {layout} layout at {cfg.microns_per_pixel:g} µm per pixel (data.microns_per_pixel)")
    for split in SPLITS:
        print(f"fetch: {split} images: {', '.join(dataset['images'][split])}")
    print(f"fetch: wrote {out} and {out / DATASET_FILE.name}")
    return FetchSummary(out, layout, dataset["images"])


def source_records(root: Path, cfg: DataConfig) -> tuple[str, list[ImageRecord]]:
    """The source's layout ("generic" or "monuseg") and its paired images."""
    user_root = find_user_root(root)
    if user_root is None:
        dirs = official_dirs(root)
        return "monuseg", [r for split in SPLITS for r in pair_files(dirs, split)]
    records = user_records(user_root)
    check_recorded_scales(records, cfg.microns_per_pixel)
    check_label_maps(records)  # the masks stage would name fetch's copies
    return "generic", records


def download_official(cfg: DataConfig, scratch: Path) -> Path:
    """Download and unzip both official archives into `scratch`."""
    for name, url, sha256 in (
        ("train", cfg.train_zip_url, cfg.train_zip_sha256),
        ("test", cfg.test_zip_url, cfg.test_zip_sha256),
    ):
        archive = scratch / f"{name}.zip"
        with tqdm(desc=f"download {name}", unit="B", unit_scale=True, delay=1) as bar:
            download(url, archive, sha256, on_bytes=bar.update)
        unpack_source(archive, scratch)
        archive.unlink()
    return scratch


def report(records: list[ImageRecord]) -> None:
    for split in SPLITS:
        rows = [r for r in records if r.split == split]
        xml = sum(r.xml is not None for r in rows)
        geojson = sum(r.geojson is not None for r in rows)
        maps = sum(r.instance_map is not None for r in rows)
        with_geojson = f", {geojson} with GeoJSON" if geojson else ""
        print(f"fetch: {split}: {len(rows)} images, {xml} with XML{with_geojson}, {maps} with an instance map")
        no_xml = [r.image_id for r in rows if r.xml is None and r.geojson is None]
        if no_xml:
            print(
                f"fetch: {split}: no XML for {len(no_xml)} images; their instance map is the label: "
                + ", ".join(no_xml)
            )
