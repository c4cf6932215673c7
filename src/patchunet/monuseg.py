"""What the MoNuSeg 2018 release looks like: where its files lie, how they pair, which organ.

Two layouts are known. The official one, once unzipped:

    MoNuSeg 2018 Training Data/Tissue Images/<id>.tif
    MoNuSeg 2018 Training Data/Annotations/<id>.xml        (may be missing for some ids)
    MoNuSeg 2018 Training Data/Instance Maps/<id>.png      (label maps, where shipped)
    MoNuSegTestData/<id>.tif + <id>.xml

and the project's raw layout, which `copy_to_raw` writes and every later stage reads:

    data/raw/monuseg/{train,test}/{images,annotations,instance_maps}/<id>.*

where every image is `<id>.tif`, whatever its suffix in the source.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Literal

from patchunet.errors import DataError, SourceError

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")

OFFICIAL_TRAIN_DIR = "MoNuSeg 2018 Training Data"
OFFICIAL_TEST_DIR = "MoNuSegTestData"
IMAGE_SUFFIXES = (".tif", ".tiff")

# TCGA tissue source site (the 2 characters after "TCGA-") -> organ, for every site in MoNuSeg
# 2018. The release calls sites 18/21/38/49/50 "liver", but they are TCGA lung (LUSC/LUAD) sites;
# either name groups the same six images, which is all stratification needs.
ORGAN_BY_SITE = {
    **dict.fromkeys(["A7", "AR", "E2", "AC", "AO"], "breast"),
    **dict.fromkeys(["B0", "HE", "2Z", "GL", "IZ"], "kidney"),
    **dict.fromkeys(["18", "21", "38", "49", "50", "44", "69"], "lung"),
    **dict.fromkeys(["CH", "G9", "EJ", "HC"], "prostate"),
    **dict.fromkeys(["DK", "G2", "CU", "ZF"], "bladder"),
    **dict.fromkeys(["AY", "NH", "A6"], "colon"),
    **dict.fromkeys(["KB", "RD"], "stomach"),
    **dict.fromkeys(["FG", "HT"], "brain"),
}


def organ_of(image_id: str) -> str:
    """Organ from a TCGA barcode such as 'TCGA-A7-A13E-01Z-00-DX1'; 'unknown' otherwise."""
    parts = image_id.split("-")
    site = parts[1] if len(parts) > 1 and parts[0] == "TCGA" else ""
    return ORGAN_BY_SITE.get(site, "unknown")


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One image and the files that label it; at least one of `xml` and `instance_map` exists."""

    image_id: str
    split: Split
    image: Path
    xml: Path | None
    instance_map: Path | None


@dataclasses.dataclass(frozen=True)
class SourceDirs:
    """Where each split's images and annotations lie inside a source."""

    images: dict[Split, Path]
    annotations: dict[Split, Path]
    instance_maps: dict[Split, Path | None]


def official_dirs(root: Path) -> SourceDirs:
    """Locate the two unzipped official folders anywhere below `root`."""
    train = _find_dir(root, OFFICIAL_TRAIN_DIR)
    test = _find_dir(root, OFFICIAL_TEST_DIR)
    maps = train / "Instance Maps"
    return SourceDirs(
        images={"train": train / "Tissue Images", "test": test},
        annotations={"train": train / "Annotations", "test": test},
        instance_maps={"train": maps if maps.is_dir() else None, "test": None},
    )


def raw_dirs(raw_root: Path) -> SourceDirs:
    """The project's own raw layout under data/raw/monuseg."""
    return SourceDirs(
        images={s: raw_root / s / "images" for s in SPLITS},
        annotations={s: raw_root / s / "annotations" for s in SPLITS},
        instance_maps={s: raw_root / s / "instance_maps" for s in SPLITS},
    )


def _find_dir(root: Path, name: str) -> Path:
    if (root / name).is_dir():
        return root / name
    found = sorted(p for p in root.rglob(name) if p.is_dir())
    if not found:
        raise SourceError(f"{root}: no '{name}' folder found (expected the official MoNuSeg layout or zips)")
    return found[0]


def pair_files(dirs: SourceDirs, split: Split) -> list[ImageRecord]:
    """Match every image with its XML and/or instance map, refusing orphans on either side."""
    images = _files_by_id(dirs.images[split], IMAGE_SUFFIXES)
    xmls = _files_by_id(dirs.annotations[split], (".xml",))
    maps_dir = dirs.instance_maps[split]
    maps = _files_by_id(maps_dir, (".png", ".tif", ".tiff")) if maps_dir else {}
    if not images:
        raise DataError(dirs.images[split], f"no {split} images (*.tif) found")
    for image_id, path in sorted(images.items()):
        if image_id not in xmls and image_id not in maps:
            raise DataError(path, "image has no annotation: neither an XML nor an instance map")
    for image_id, path in sorted({**maps, **xmls}.items()):
        if image_id not in images:
            raise DataError(path, "annotation has no image")
    return [ImageRecord(i, split, images[i], xmls.get(i), maps.get(i)) for i in sorted(images)]


def _files_by_id(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in suffixes}


def copy_to_raw(records: list[ImageRecord], raw_root: Path) -> None:
    """Copy records into the project's raw layout (see module docstring) under `raw_root`."""
    dirs = raw_dirs(raw_root)
    for record in records:
        targets = [
            (record.image, dirs.images[record.split], ".tif"),
            (record.xml, dirs.annotations[record.split], ".xml"),
            (record.instance_map, dirs.instance_maps[record.split], None),
        ]
        for source, folder, suffix in targets:
            if source is not None:
                assert folder is not None
                folder.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, folder / f"{record.image_id}{suffix or source.suffix.lower()}")
