"""Your own annotated images: the generic source layout, paired into `ImageRecord`s.

    images/<id>.{tif,png}        RGB, 8 bits per channel
    labels/<id>.{tif,png}        an instance map (0 = background, one id per nucleus), or
    annotations/<id>.geojson     polygons as QuPath exports them (`io.geojson`), or
    annotations/<id>.xml         polygons as MoNuSeg's Aperio XML (`io.annotations`)
    test.txt                     the test images' ids, one per line; every other image is for training

Each image has exactly one of the three annotations. A source is in this layout when it holds an
`images/` folder, itself or in the one folder a zip unpacked to; otherwise it is MoNuSeg's.
"""

from __future__ import annotations

from pathlib import Path

from patchunet.core.errors import DataError, SourceError
from patchunet.data.monuseg import (
    ANNOTATION_SUFFIXES,
    LABEL_MAP_SUFFIXES,
    ImageRecord,
    check_pairs,
    files_by_id,
    record_of,
)
from patchunet.io.images import read_label_image, read_rgb_image
from patchunet.io.scale import RECORDED_SCALE_TOLERANCE, recorded_mpp

IMAGES_DIR = "images"
LABELS_DIR = "labels"
ANNOTATIONS_DIR = "annotations"
TEST_LIST = "test.txt"
USER_IMAGE_SUFFIXES = (".tif", ".tiff", ".png")


def find_user_root(root: Path) -> Path | None:
    """The folder of `root` in the generic layout: `root` itself or its one subfolder holding
    `images/` (as a zip of the folder unpacks); None when neither holds one (MoNuSeg's layout)."""
    if (root / IMAGES_DIR).is_dir():
        return root
    found = sorted(p for p in root.iterdir() if p.is_dir() and (p / IMAGES_DIR).is_dir())
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise SourceError(f"{root}: {len(found)} folders hold an '{IMAGES_DIR}' folder ({names}); keep one")
    return found[0] if found else None


def user_records(root: Path) -> list[ImageRecord]:
    """Every image of the generic layout under `root` with its one annotation, split by test.txt."""
    images = files_by_id(root / IMAGES_DIR, USER_IMAGE_SUFFIXES)
    if not images:
        raise DataError(root / IMAGES_DIR, "no images (*.tif, *.png) found")
    labels = files_by_id(root / LABELS_DIR, LABEL_MAP_SUFFIXES)
    annotations = files_by_id(root / ANNOTATIONS_DIR, ANNOTATION_SUFFIXES)  # X.xml beside X.geojson: refused
    check_pairs(images, annotations, labels)
    for image_id, annotation in sorted(annotations.items()):
        if image_id in labels:
            where = labels[image_id].relative_to(root)
            raise DataError(annotation, f"a second annotation for {image_id}, beside {where}: keep only one")
    test_ids = read_test_list(root / TEST_LIST, set(images))
    records = [
        record_of(i, "test" if i in test_ids else "train", images[i], annotations.get(i), labels.get(i))
        for i in sorted(images)
    ]
    if len(test_ids) == len(records):
        raise DataError(root / TEST_LIST, "lists every image: no image is left for training")
    return records


def read_test_list(path: Path, image_ids: set[str]) -> set[str]:
    """The ids in a test.txt, one per line; blank lines and `#` comments are ignored, an unknown or
    repeated id is refused, and so is a list with none."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # -sig: a BOM, as Notepad writes, is not an id
    except FileNotFoundError:
        raise DataError(path, "file not found: list the test images' ids in it, one per line") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read ({exc})") from None
    listed: set[str] = set()
    for number, line in enumerate(lines, start=1):
        image_id = line.split("#", 1)[0].strip()
        if not image_id:
            continue
        if image_id not in image_ids:
            hint = " (write the id without its suffix)" if Path(image_id).stem in image_ids else ""
            raise DataError(path, f"line {number}: no image '{image_id}' in {IMAGES_DIR}/{hint}")
        if image_id in listed:
            raise DataError(path, f"line {number}: {image_id} is listed twice")
        listed.add(image_id)
    if not listed:
        raise DataError(path, "lists no image: name the test images' ids, one per line")
    return listed


def check_label_maps(records: list[ImageRecord]) -> None:
    """Read each instance map of your own layout against its image, so a bad one is named as you
    wrote it (labels/<id>.tif), not as fetch's copy: its ids (`read_label_image`) and its size."""
    for record in records:
        if record.instance_map is None:
            continue
        labels = read_label_image(record.instance_map)
        height, width = read_rgb_image(record.image).shape[:2]
        if labels.shape != (height, width):
            raise DataError(
                record.instance_map,
                f"label map is {labels.shape[1]}x{labels.shape[0]} "
                f"but its image {record.image.name} is {width}x{height}",
            )


def check_recorded_scales(records: list[ImageRecord], microns_per_pixel: float) -> None:
    """Refuse an image whose TIFF records a scale more than RECORDED_SCALE_TOLERANCE (relative) from
    `microns_per_pixel`, the scale params.yaml declares (data.microns_per_pixel)."""
    for record in records:
        recorded = recorded_mpp(record.image)
        if recorded is not None and abs(recorded / microns_per_pixel - 1) > RECORDED_SCALE_TOLERANCE:
            raise DataError(
                record.image,
                f"records {recorded:g} µm per pixel, but data.microns_per_pixel is {microns_per_pixel:g}: "
                "set data.microns_per_pixel in params.yaml to your images' scale",
            )
