"""`patchunet predict`: segment your own H&E images with a checkpoint or a registered model.

For each IMAGE it writes, into --out: <stem>_labels.tif (uint16 or uint32 nucleus ids,
0 = background), <stem>_overlay.png (the image with each nucleus outlined) and <stem>_nuclei.csv
(one row per nucleus: id, area, centroid, bounding box, mean probability); summary.csv has one
row per image, and keeps the rows of images an earlier run wrote there. Each image's three files
are renamed into place together and then its row is written, so a run killed mid-way keeps every
image it finished. Without --overwrite, a rerun skips the images whose three files and row are
there (resuming a killed run), and any other file it would write in --out stops it before any
inference, naming the first one; --overwrite redoes every image given.
Inference and post-processing follow the `eval` section of params.yaml, as the evaluate stage does.

Scale: an image at another scale than the model's (a 20x image for a model of MoNuSeg's 40x) is
resampled to the model's for inference, and its labels back onto the image's pixels. Give the
scale with --mpp or --magnification; else a scale the TIFF records (Aperio's MPP, or its
resolution in pixels per cm or inch) is used where it is over 10 % from the model's; else the
image is assumed to be at the model's scale, and a line says so.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import re
import sys
import tempfile
from pathlib import Path

DEFAULT_MODEL = "models:/patchunet@champion"
SUMMARY_COLUMNS_BEFORE_SCALE = ("image", "nuclei", "mean_area_px", "median_area_px", "foreground_fraction")
SUMMARY_COLUMNS = (*SUMMARY_COLUMNS_BEFORE_SCALE, "microns_per_pixel", "scale_from")
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
        help="redo every image, replacing its files in --out and its row of summary.csv; without it, images "
        "already done there are skipped and any other file this run would write stops it",
    )
    from patchunet.inference.scale import MAGNIFICATIONS

    parser.add_argument(
        "--mpp",
        metavar="MPP",
        help="the images' scale in µm per pixel (MoNuSeg, 40x: 0.25); they are resampled to the model's "
        "scale and the labels back (not with --magnification)",
    )
    parser.add_argument(
        "--magnification",
        metavar="|".join(MAGNIFICATIONS),
        help="the images' scale as an objective magnification, 10 / M µm per pixel (20x: 0.5); "
        "as --mpp. Without either, a scale the TIFF records, else the model's",
    )


def run(args: argparse.Namespace) -> None:
    given_mpp, option = scale_option(args.mpp, args.magnification)  # before the heavy imports: a typo answers at once

    import numpy as np
    from tqdm import tqdm

    from patchunet import tracking
    from patchunet.config import EvalConfig, MlflowConfig, PatchConfig, load_params, parse_section
    from patchunet.data.images import label_tiff_bytes, png_bytes, read_rgb_image
    from patchunet.errors import PatchUNetError
    from patchunet.evaluation.overlay import prediction_overlay
    from patchunet.inference.nuclei import NUCLEUS_COLUMNS, nucleus_table, segment_nuclei
    from patchunet.inference.runtimes import runtime_network
    from patchunet.inference.scale import recorded_mpp

    params = load_params(args.params)
    cfg = parse_section(EvalConfig, params, "eval")
    patch_size = parse_section(PatchConfig, params, "patch").size
    stems = [path.stem for path in args.images]
    duplicates = sorted({stem for stem in stems if stems.count(stem) > 1})
    if duplicates:
        raise PatchUNetError(f"two images named {duplicates[0]}: their outputs would overwrite each other")
    summary = read_summary(args.out / SUMMARY_FILE)
    done = set() if args.overwrite else finished_stems(args.out, stems, summary)
    todo = [path for path in args.images if path.stem not in done]
    if not args.overwrite:
        refuse_existing_outputs(args.out, [path.stem for path in todo])
    images = {path: read_rgb_image(path) for path in todo}  # every input checked before any output
    recorded = {path: recorded_mpp(path) for path in todo}
    check_writable_folder(args.out)
    remove_dead_writers_files(args.out)
    if done:
        print(
            f"{len(done)} of {len(stems)} images already done in {args.out}: skipped (--overwrite redoes them)",
            file=sys.stderr,
        )
    if not todo:
        return
    model = load_model_reference(
        args.model, tracking.resolve_tracking_uri(parse_section(MlflowConfig, params, "mlflow").tracking_uri)
    )
    window = cfg.window_for(patch_size, model.cfg.size_multiple)
    network = runtime_network(model, cfg)
    model_mpp = model.cfg.microns_per_pixel
    scales = {
        path: image_scale(path, image, given_mpp, option, recorded[path], model_mpp) for path, image in images.items()
    }
    announce_scales(scales, model_mpp)

    for path, image in tqdm(images.items(), desc="predict", unit="image"):
        mpp, source = scales[path]
        labels, probabilities = segment_nuclei(network, image, cfg, window, mpp)
        nuclei = nucleus_table(labels, mpp, probabilities)
        write_together(
            {
                args.out / f"{path.stem}_labels.tif": label_tiff_bytes(labels),
                args.out / f"{path.stem}_overlay.png": png_bytes(prediction_overlay(image, labels)),
                args.out / f"{path.stem}_nuclei.csv": csv_bytes(NUCLEUS_COLUMNS, nuclei),
            }
        )
        areas = np.array([row["area_px"] for row in nuclei])
        row = {
            "image": str(path),
            "nuclei": len(nuclei),
            "mean_area_px": round(float(areas.mean()), 1) if len(areas) else 0,
            "median_area_px": float(np.median(areas)) if len(areas) else 0,
            "foreground_fraction": round(float((labels > 0).mean()), 4),
            "microns_per_pixel": mpp,
            "scale_from": source,
        }
        # after the image's files, so a row always stands for three complete files; each image's row is
        # written at once, so a run killed later keeps them, and replaces an earlier run's row only now
        summary = [*(earlier for earlier in summary if Path(earlier["image"]).stem != path.stem), row]
        write_rows(args.out / SUMMARY_FILE, SUMMARY_COLUMNS, summary)
        tqdm.write(f"{path}: {len(nuclei)} nuclei -> {args.out / (path.stem + '_labels.tif')}")


def finished_stems(folder: Path, stems: list[str], summary: list[dict]) -> set[str]:
    """The stems whose outputs an earlier run finished: all their files in `folder` and their row in
    the summary (written after the files, so a run killed mid-image leaves no row)."""
    in_summary = {Path(row["image"]).stem for row in summary}
    return {
        stem
        for stem in stems
        if stem in in_summary and all((folder / f"{stem}{suffix}").is_file() for suffix in OUTPUT_SUFFIXES)
    }


def write_together(contents: dict[Path, bytes]) -> None:
    """Write files atomically and together: none is renamed into place before every one is written,
    so a failure or a kill while writing leaves none of them (only temporaries, which
    `remove_dead_writers_files` removes)."""
    from patchunet.files import atomic_file

    with contextlib.ExitStack() as stack:
        for path, content in contents.items():
            stack.enter_context(atomic_file(path)).write_bytes(content)


TEMPORARY_NAME = re.compile(r"\.(?P<name>.+)\.\d+\.[^.]+\.tmp")
"""`files.atomic_file`'s temporaries: `.<name>.<pid>.<random>.tmp`."""


def remove_dead_writers_files(folder: Path) -> None:
    """Remove the temporaries that killed writers left in `folder`, of any file (`files.remove_stale_temporaries`):
    a rerun may never write that file again (an image done before the kill, or not given again)."""
    from patchunet.files import remove_stale_temporaries

    if not folder.is_dir():  # `check_writable_folder` removes a folder it created
        return
    names = {match["name"] for entry in folder.iterdir() if (match := TEMPORARY_NAME.fullmatch(entry.name))}
    for name in sorted(names):
        remove_stale_temporaries(folder / name)


def scale_option(mpp: str | None, magnification: str | None) -> tuple[float | None, str]:
    """The µm per pixel that --mpp or --magnification gives, or None, and the option as written."""
    from patchunet.errors import PatchUNetError
    from patchunet.inference.scale import mpp_of_magnification, parse_mpp

    if mpp is not None and magnification is not None:
        raise PatchUNetError("--mpp and --magnification both give the scale: pass one of them")
    if mpp is not None:
        return parse_mpp(mpp, "--mpp"), f"--mpp {mpp}"
    if magnification is not None:
        return mpp_of_magnification(magnification, "--magnification"), f"--magnification {magnification}"
    return None, ""


def image_scale(
    path: Path, image, given_mpp: float | None, option: str, recorded: float | None, model_mpp: float
) -> tuple[float, str]:
    """The scale to segment the image at and where it comes from: the option as written, "file"
    or "model" (see `scale.chosen_scale`); refused in one line naming the option or file if it is
    too far from the model's."""
    from patchunet.inference.scale import check_scale, chosen_scale

    mpp, source = chosen_scale(given_mpp, recorded, model_mpp)
    what = {"option": f"{path}: {option}", "file": f"{path}: the scale its file records"}.get(source, str(path))
    check_scale(image.shape, mpp, model_mpp, what)
    return mpp, option if source == "option" else source


def announce_scales(scales: dict[Path, tuple[float, str]], model_mpp: float) -> None:
    """One line on stderr per image whose file gave its scale, and one if any is assumed to be at
    the model's: a 20x image must not pass as 40x unnoticed."""
    from patchunet.inference.scale import scale_label

    for path, (mpp, source) in scales.items():
        if source == "file":
            print(
                f"{path}: the file records {scale_label(mpp)}; resampled to the model's {model_mpp:g} µm/px",
                file=sys.stderr,
            )
    if any(source == "model" for _, source in scales.values()):
        print(f"assuming {model_mpp:g} µm/px, the model's scale; pass --mpp or --magnification if not", file=sys.stderr)


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


def refuse_existing_outputs(folder: Path, stems: list[str], suffixes: tuple[str, ...] = OUTPUT_SUFFIXES) -> None:
    """Refuse if any per-image file (stem + suffix) this run would write is already in `folder`.

    The summary is not checked: it keeps the rows of other images.
    """
    from patchunet.errors import DataError

    for stem in stems:
        for suffix in suffixes:
            if (folder / f"{stem}{suffix}").exists():
                raise DataError(folder / f"{stem}{suffix}", "already exists: pass --overwrite to replace it")


def read_summary(path: Path, accepted: tuple[tuple[str, ...], ...] | None = None) -> list[dict]:
    """The rows of an earlier run's summary (columns one of `accepted`, by default predict's); none
    if there is no such file."""
    from patchunet.errors import DataError

    if not path.exists():
        return []
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(path, f"cannot read this summary to add rows to it ({exc})") from None
    accepted = accepted or (SUMMARY_COLUMNS, SUMMARY_COLUMNS_BEFORE_SCALE)
    if tuple(reader.fieldnames or ()) not in accepted:
        raise DataError(path, f"not a summary this command wrote: columns should be {', '.join(accepted[0])}")
    return rows


def load_model_reference(reference: str, tracking_uri: str):
    """A PatchUNet from a file (model or training checkpoint) or from an MLflow model URI.

    A SQLite store that does not exist is refused, not created: a mistyped folder must not
    leave an empty mlflow.db behind.
    """
    from patchunet import tracking
    from patchunet.errors import PatchUNetError
    from patchunet.model.unet import load_model

    if reference.startswith(("models:/", "runs:/")):
        database = tracking.sqlite_file(tracking_uri)
        if database is not None and not database.is_file():
            raise PatchUNetError(
                f"{reference}: no MLflow store at {database.resolve()}: train first, or pass --model a model file"
            )
        tracking.connect(tracking_uri)
        return tracking.load_logged_model(reference)
    return load_model(Path(reference))


def write_rows(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    from patchunet.files import atomic_file

    with atomic_file(path) as tmp:
        tmp.write_bytes(csv_bytes(columns, rows))


def csv_bytes(columns: tuple[str, ...], rows: list[dict]) -> bytes:
    """Rows as a CSV table with a header, as UTF-8 bytes."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode()
