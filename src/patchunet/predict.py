"""`patchunet predict`: segment your own H&E images with a checkpoint or a registered model.

For each IMAGE it writes, into --out: <stem>_labels.tif (uint16 or uint32 nucleus ids,
0 = background), <stem>_overlay.png (the image with each nucleus outlined) and <stem>_nuclei.csv
(one row per nucleus: id, area, centroid); summary.csv has one row per image, and keeps the
rows of images an earlier run wrote there. Files already in --out are never replaced without
--overwrite: the run stops before any inference, naming the first one. Inference and
post-processing follow the `eval` section of params.yaml, as the evaluate stage does.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import tempfile
from pathlib import Path

DEFAULT_MODEL = "models:/patchunet@champion"
NUCLEUS_COLUMNS = ("nucleus", "area_px", "centroid_y", "centroid_x")
SUMMARY_COLUMNS = ("image", "nuclei", "mean_area_px", "median_area_px", "foreground_fraction")
OUTPUT_SUFFIXES = ("_labels.tif", "_overlay.png", "_nuclei.csv")
SUMMARY_FILE = "summary.csv"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="RGB TIFF or PNG files")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"a model file or checkpoint (models/patchunet.pt, best.pt) or an MLflow model URI "
        f"(default {DEFAULT_MODEL})",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the outputs")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="for the eval and patch sections")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace this run's files already in --out (and their rows of summary.csv); without it, stop",
    )


def run(args: argparse.Namespace) -> None:
    import numpy as np
    from tqdm import tqdm

    from patchunet import tracking
    from patchunet.config import EvalConfig, MlflowConfig, PatchConfig, load_params, parse_section
    from patchunet.errors import PatchUNetError
    from patchunet.inference import segment_image
    from patchunet.io import read_rgb_image, write_label_tiff, write_png
    from patchunet.overlay import prediction_overlay

    params = load_params(args.params)
    cfg = parse_section(EvalConfig, params, "eval")
    patch_size = parse_section(PatchConfig, params, "patch").size
    stems = [path.stem for path in args.images]
    duplicates = sorted({stem for stem in stems if stems.count(stem) > 1})
    if duplicates:
        raise PatchUNetError(f"two images named {duplicates[0]}: their outputs would overwrite each other")
    images = {path: read_rgb_image(path) for path in args.images}  # every input checked before any output
    check_writable_folder(args.out)
    if not args.overwrite:
        refuse_existing_outputs(args.out, stems)
    earlier_rows = [row for row in read_summary(args.out / SUMMARY_FILE) if Path(row["image"]).stem not in stems]
    model = load_model_reference(
        args.model, tracking.resolve_tracking_uri(parse_section(MlflowConfig, params, "mlflow").tracking_uri)
    )
    window = cfg.window_for(patch_size, model.cfg.size_multiple)

    summary = earlier_rows
    for path, image in tqdm(images.items(), desc="predict", unit="image"):
        _, labels = segment_image(model, image, cfg, window)
        nuclei = nucleus_table(labels)
        write_label_tiff(args.out / f"{path.stem}_labels.tif", labels)
        write_png(args.out / f"{path.stem}_overlay.png", prediction_overlay(image, labels))
        write_rows(args.out / f"{path.stem}_nuclei.csv", NUCLEUS_COLUMNS, nuclei)
        areas = np.array([row["area_px"] for row in nuclei])
        summary.append(
            {
                "image": str(path),
                "nuclei": len(nuclei),
                "mean_area_px": round(float(areas.mean()), 1) if len(areas) else 0,
                "median_area_px": float(np.median(areas)) if len(areas) else 0,
                "foreground_fraction": round(float((labels > 0).mean()), 4),
            }
        )
        tqdm.write(f"{path}: {len(nuclei)} nuclei -> {args.out / (path.stem + '_labels.tif')}")
    write_rows(args.out / SUMMARY_FILE, SUMMARY_COLUMNS, summary)


def check_writable_folder(folder: Path) -> None:
    """Refuse, before any work, an output folder that cannot be created or written into.

    Leaves nothing behind: a folder it had to create is removed again.
    """
    from patchunet.errors import DataError

    missing = [parent for parent in (folder, *folder.parents) if not parent.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".patchunet-write-test.")
        os.close(fd)
        os.unlink(probe)
    except FileExistsError:
        raise DataError(folder, "exists and is not a folder: --out needs a folder") from None
    except OSError as exc:
        raise DataError(folder, f"cannot write the outputs here ({exc.strerror or exc})") from None
    finally:
        for created in missing:
            with contextlib.suppress(OSError):
                created.rmdir()


def refuse_existing_outputs(folder: Path, stems: list[str]) -> None:
    """Refuse if any per-image file this run would write is already in `folder`.

    summary.csv is not checked: it keeps the rows of other images.
    """
    from patchunet.errors import DataError

    for stem in stems:
        for suffix in OUTPUT_SUFFIXES:
            if (folder / f"{stem}{suffix}").exists():
                raise DataError(folder / f"{stem}{suffix}", "already exists: pass --overwrite to replace it")


def read_summary(path: Path) -> list[dict]:
    """The rows of an earlier run's summary.csv; none if there is no such file."""
    from patchunet.errors import DataError

    if not path.exists():
        return []
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(path, f"cannot read this summary to add rows to it ({exc})") from None
    if tuple(reader.fieldnames or ()) != SUMMARY_COLUMNS:
        raise DataError(path, f"not a summary of patchunet predict: columns should be {', '.join(SUMMARY_COLUMNS)}")
    return rows


def load_model_reference(reference: str, tracking_uri: str):
    """A PatchUNet from a file (model or training checkpoint) or from an MLflow model URI.

    A SQLite store that does not exist is refused, not created: a mistyped folder must not
    leave an empty mlflow.db behind.
    """
    from patchunet import tracking
    from patchunet.errors import PatchUNetError
    from patchunet.model import load_model

    if reference.startswith(("models:/", "runs:/")):
        database = tracking.sqlite_file(tracking_uri)
        if database is not None and not database.is_file():
            raise PatchUNetError(
                f"{reference}: no MLflow store at {database.resolve()}: train first, or pass --model a model file"
            )
        tracking.connect(tracking_uri)
        return tracking.load_logged_model(reference)
    return load_model(Path(reference))


def nucleus_table(labels) -> list[dict]:
    """One row per nucleus: its id, area in pixels and centroid."""
    from skimage.measure import regionprops_table

    table = regionprops_table(labels, properties=("label", "area", "centroid"))
    return [
        {"nucleus": int(n), "area_px": int(a), "centroid_y": round(float(y), 1), "centroid_x": round(float(x), 1)}
        for n, a, y, x in zip(table["label"], table["area"], table["centroid-0"], table["centroid-1"], strict=True)
    ]


def write_rows(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    from patchunet.io import atomic_file

    with atomic_file(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
