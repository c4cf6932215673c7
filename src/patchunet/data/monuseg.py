"""What the MoNuSeg 2018 release looks like: where its files lie, how they pair, which organ.

Two layouts are known. The official one, once unzipped:

    MoNuSeg 2018 Training Data/Tissue Images/<id>.tif
    MoNuSeg 2018 Training Data/Annotations/<id>.xml        (may be missing for some ids)
    MoNuSeg 2018 Training Data/Instance Maps/<id>.png      (label maps, where shipped)
    MoNuSegTestData/<id>.tif + <id>.xml

and the project's raw layout, which `copy_to_raw` writes and every later stage reads:

    data/raw/monuseg/{train,test}/{images,annotations,instance_maps}/<id>.*
    data/raw/monuseg/dataset.json     the source's layout, its scale and the ids of each split

where every image is `<id>.tif` (a PNG is converted), and an annotation `<id>.xml` or `<id>.geojson`.
Your own images come in a third, generic layout: see `data.user_layout`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from patchunet.core.errors import DataError, SourceError
from patchunet.io.images import read_rgb_image, write_rgb_tiff

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")

OFFICIAL_TRAIN_DIR = "MoNuSeg 2018 Training Data"
OFFICIAL_TEST_DIR = "MoNuSegTestData"
IMAGE_SUFFIXES = (".tif", ".tiff")
LABEL_MAP_SUFFIXES = (".png", ".tif", ".tiff")
ANNOTATION_SUFFIXES = (".xml", ".geojson")

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
    """One image and the files that label it: an XML and/or an instance map, or else a GeoJSON."""

    image_id: str
    split: Split
    image: Path
    xml: Path | None
    instance_map: Path | None
    geojson: Path | None = None


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
    """Match every image with its XML and/or instance map, or its GeoJSON, refusing orphans on either side."""
    images = files_by_id(dirs.images[split], IMAGE_SUFFIXES)
    annotations = files_by_id(dirs.annotations[split], ANNOTATION_SUFFIXES)  # X.xml beside X.geojson: refused
    maps_dir = dirs.instance_maps[split]
    maps = files_by_id(maps_dir, LABEL_MAP_SUFFIXES) if maps_dir else {}
    if not images:
        raise DataError(dirs.images[split], f"no {split} images (*.tif) found")
    check_pairs(images, annotations, maps)
    for image_id, annotation in annotations.items():
        if annotation.suffix.lower() == ".geojson" and image_id in maps:
            raise DataError(annotation, f"a second annotation for {image_id}, beside {maps[image_id]}: keep only one")
    return [record_of(i, split, images[i], annotations.get(i), maps.get(i)) for i in sorted(images)]


def check_pairs(images: dict[str, Path], annotations: dict[str, Path], maps: dict[str, Path]) -> None:
    """Refuse an image without an annotation or instance map, and an annotation or map without an image."""
    for image_id, path in sorted(images.items()):
        if image_id not in annotations and image_id not in maps:
            raise DataError(path, "image has no annotation: neither an XML or GeoJSON nor an instance map")
    for image_id, path in sorted({**maps, **annotations}.items()):
        if image_id not in images:
            raise DataError(path, "annotation has no image")


def record_of(
    image_id: str, split: Split, image: Path, annotation: Path | None, instance_map: Path | None
) -> ImageRecord:
    """The record of an image whose `annotation` is an XML or a GeoJSON file, told by its suffix."""
    geojson = annotation if annotation is not None and annotation.suffix.lower() == ".geojson" else None
    xml = annotation if geojson is None else None
    return ImageRecord(image_id, split, image, xml, instance_map, geojson)


def files_by_id(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """id -> file, refusing two files for one id (`X.tif` and `X.tiff`, `X.png` and `X.tif`)."""
    if not folder.is_dir():
        return {}
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in suffixes:
            continue
        if path.stem in files:
            raise DataError(path, f"a second file for {path.stem}, beside {files[path.stem].name}: keep only one")
        files[path.stem] = path
    return files


def check_no_shared_images(records: list[ImageRecord]) -> None:
    """Refuse an image id in both splits, and any two images with the same pixels.

    Pixels are compared decoded, so the same image under another name or re-encoded (another
    compression, another suffix) is caught: a test image among the training images would otherwise
    be trained on and then scored, and a duplicate within training could land in train and val.
    """
    train = {r.image_id: r for r in records if r.split == "train"}
    for record in records:
        other = train.get(record.image_id)
        if record.split == "test" and other is not None:
            raise DataError(record.image, f"test image {record.image_id} is also a training image: {other.image}")
    seen: dict[str, ImageRecord] = {}
    for record in records:
        pixels = read_rgb_image(record.image)
        digest = hashlib.sha256(f"{pixels.shape}".encode() + pixels.tobytes()).hexdigest()
        other = seen.setdefault(digest, record)
        if other is not record:
            raise DataError(
                record.image, f"same pixels as {other.image} ({other.split} image {other.image_id}): a duplicate"
            )


def copy_to_raw(records: Iterable[ImageRecord], raw_root: Path) -> None:
    """Copy records into the project's raw layout (see module docstring) under `raw_root`.

    A TIFF image is copied byte for byte (keeping any scale it records); another format is converted
    to TIFF, as the layout promises `<id>.tif`.
    """
    dirs = raw_dirs(raw_root)
    for record in records:
        images = dirs.images[record.split]
        images.mkdir(parents=True, exist_ok=True)
        if record.image.suffix.lower() in IMAGE_SUFFIXES:
            shutil.copyfile(record.image, images / f"{record.image_id}.tif")
        else:
            write_rgb_tiff(images / f"{record.image_id}.tif", read_rgb_image(record.image))
        targets = [
            (record.xml, dirs.annotations[record.split]),
            (record.geojson, dirs.annotations[record.split]),
            (record.instance_map, dirs.instance_maps[record.split]),
        ]
        for source, folder in targets:
            if source is not None:
                assert folder is not None
                folder.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, folder / f"{record.image_id}{source.suffix.lower()}")


def dataset_description(layout: str, records: list[ImageRecord], microns_per_pixel: float) -> dict:
    """What `dataset.json` holds: the source's layout, its images' scale and each split's image ids."""
    return {
        "layout": layout,
        "microns_per_pixel": microns_per_pixel,
        "images": {split: sorted(r.image_id for r in records if r.split == split) for split in SPLITS},
    }
