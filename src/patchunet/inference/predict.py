"""`patchunet predict`: segment your own H&E images with a checkpoint or a registered model.

For each IMAGE it writes, into --out: <stem>_labels.tif (uint16 or uint32 nucleus ids,
0 = background), <stem>_overlay.png (the image with each nucleus outlined) and <stem>_nuclei.csv
(one row per nucleus: id, centroid, bounding box, area, perimeter, eccentricity, mean intensity
and probability, in the image's pixels); summary.csv has one row per image, and keeps the rows of
images an earlier run wrote there.

Resuming: without --overwrite, a rerun skips an image whose three files are there and whose row
records the same model (a hash of its weights and config, whatever file or URI gave it), the same
settings (the `eval` section but `samples`, patch.size, --mpp or --magnification) and the same
input (its resolved path and the SHA-256 of its bytes). Any other output file of an image given
stops the run before any inference, naming the file and, where its row says, what differs;
--overwrite redoes every image given. Write order: the SHA-256 of an image's three files goes
into .predict-pending.json in --out, then the files are renamed into place together, then the
row is written, then the pending entry dropped. So a run killed mid-way keeps every image it
finished, and a rerun recognises the files a kill left without a row (or before the entry was
dropped) by their hashes as its own, and redoes that image, saying so.
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
import dataclasses
import hashlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from patchunet.core.files import file_sha256

if TYPE_CHECKING:  # numpy loads with the work, not for --help
    import numpy as np

    from patchunet.io.remote_folder import RemoteFolder

DEFAULT_MODEL = "models:/patchunet@champion"
SUMMARY_COLUMNS_BEFORE_SCALE = ("image", "nuclei", "mean_area_px", "median_area_px", "foreground_fraction")
SUMMARY_COLUMNS_BEFORE_IDENTITY = (*SUMMARY_COLUMNS_BEFORE_SCALE, "microns_per_pixel", "scale_from")
IDENTITY_COLUMNS = {
    "model_id": "by another model",
    "settings_id": "with other settings (params.yaml eval or patch.size, --mpp, --magnification)",
    "resolved_image": "from another input file",
    "image_sha256": "from another content of its input file",
}
"""What a summary row records of what made its image's outputs, and how a rerun says it differs."""
SUMMARY_COLUMNS = (*SUMMARY_COLUMNS_BEFORE_IDENTITY, *IDENTITY_COLUMNS)
OUTPUT_SUFFIXES = ("_labels.tif", "_overlay.png", "_nuclei.csv")
SUMMARY_FILE = "summary.csv"
PENDING_FILE = ".predict-pending.json"
"""{file name: SHA-256} of the output files being renamed into place, until their row is written."""


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
        "already done there with the same model, settings and input are skipped and any other file this run "
        "would write stops it",
    )
    from patchunet.io.scale import MAGNIFICATIONS

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

    from tqdm import tqdm

    from patchunet import tracking
    from patchunet.core.config import EvalConfig, MlflowConfig, PatchConfig, load_params, parse_section
    from patchunet.inference.nuclei import segment_nuclei
    from patchunet.inference.runtimes import runtime_network
    from patchunet.io.images import read_rgb_image
    from patchunet.io.scale import recorded_mpp

    params = load_params(args.params)
    cfg = parse_section(EvalConfig, params, "eval")
    patch_size = parse_section(PatchConfig, params, "patch").size
    summary, pending, done, unfinished = plan_outputs(args)
    todo = [path for path in args.images if path.stem not in done]
    images = {path: read_rgb_image(path) for path in todo}  # every input checked before any output
    recorded = {path: recorded_mpp(path) for path in todo}
    inputs = {path: {"resolved_image": str(path.resolve()), "image_sha256": file_sha256(path)} for path in args.images}
    check_writable_folder(args.out)
    remove_dead_writers_files(args.out)
    model = load_model_reference(
        args.model, tracking.resolve_tracking_uri(parse_section(MlflowConfig, params, "mlflow").tracking_uri)
    )
    identity = {"model_id": model_identity(model), "settings_id": settings_identity(cfg, patch_size, given_mpp)}
    identities = {path: {**identity, **inputs[path]} for path in args.images}
    rows = {Path(row["image"]).stem: row for row in summary}
    for path in args.images:
        if path.stem in done:
            refuse_other_identity(args.out, path.stem, rows[path.stem], identities[path])
    announce_skipped(args.out, todo, done, unfinished, len(args.images))
    if not todo:
        return
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
        recorded_as = {"microns_per_pixel": mpp, "scale_from": source, **identities[path]}
        summary = write_image_outputs(args.out, path, image, labels, probabilities, recorded_as, summary, pending)


def plan_outputs(args: argparse.Namespace) -> tuple[list[dict], dict[str, str], set[str], set[str]]:
    """The output folder's summary rows and pending hashes, the images already done there (skipped once
    the model confirms they are its own) and those a killed run left unfinished (redone); refuses
    two inputs of one name, and outputs that are not resumable, before any work."""
    from patchunet.core.errors import PatchUNetError

    stems = [path.stem for path in args.images]
    duplicates = sorted({stem for stem in stems if stems.count(stem) > 1})
    if duplicates:
        raise PatchUNetError(f"two images named {duplicates[0]}: their outputs would overwrite each other")
    summary = read_summary(args.out / SUMMARY_FILE)
    pending = read_pending(args.out / PENDING_FILE)
    rows = {Path(row["image"]).stem: row for row in summary}
    unfinished = set() if args.overwrite else unfinished_stems(args.out, stems, rows, pending)
    # skipped, once the model is loaded, if made by this run's model, settings and input; else refused
    done = set() if args.overwrite else {stem for stem in stems if outputs_of(args.out, stem)} - unfinished
    refuse_existing_outputs(args.out, [stem for stem in stems if stem in done and not resumable(args.out, stem, rows)])
    return summary, pending, done, unfinished


def announce_skipped(out: Path, todo: list[Path], done: set[str], unfinished: set[str], total: int) -> None:
    if done:
        skipped = f"{len(done)} of {total} images already done in {out}: skipped (--overwrite redoes them)"
        print(skipped, file=sys.stderr)
    for path in todo:
        if path.stem in unfinished:
            print(f"{path}: a killed run left its outputs in {out} unfinished: redoing it", file=sys.stderr)


def write_image_outputs(
    out: Path,
    path: Path,
    image: np.ndarray,
    labels: np.ndarray,
    probabilities: np.ndarray,
    recorded_as: dict,
    summary: list[dict],
    pending: dict[str, str],
) -> list[dict]:
    """Writes the image's labels, overlay and nucleus table together, then its summary row (with
    `recorded_as`: its scale and identity); returns the summary with that row. A run killed between
    the two leaves the files' hashes in the pending file, so a rerun knows them as its own."""
    import numpy as np
    from tqdm import tqdm

    from patchunet.core.files import csv_bytes, write_csv
    from patchunet.evaluation.overlay import prediction_overlay
    from patchunet.io.images import label_tiff_bytes, png_bytes
    from patchunet.postprocess.nuclei import NUCLEUS_COLUMNS, nucleus_table

    mpp = recorded_as["microns_per_pixel"]
    nuclei = nucleus_table(labels, mpp, probabilities, image)
    contents = {
        out / f"{path.stem}_labels.tif": label_tiff_bytes(labels),
        out / f"{path.stem}_overlay.png": png_bytes(prediction_overlay(image, labels)),
        out / f"{path.stem}_nuclei.csv": csv_bytes(nuclei, NUCLEUS_COLUMNS),
    }
    hashes = {file.name: hashlib.sha256(content).hexdigest() for file, content in contents.items()}
    # the hashes before the renames, so a rerun after a kill before the row knows these files as its own
    pending.update(hashes)
    write_pending(out / PENDING_FILE, pending)
    write_together(contents)
    areas = np.array([row["area_px"] for row in nuclei])
    row = {
        "image": str(path),
        "nuclei": len(nuclei),
        "mean_area_px": round(float(areas.mean()), 1) if len(areas) else 0,
        "median_area_px": float(np.median(areas)) if len(areas) else 0,
        "foreground_fraction": round(float((labels > 0).mean()), 4),
        **recorded_as,
    }
    # after the image's files, so a row always stands for three complete files; each image's row is
    # written at once, so a run killed later keeps them, and replaces an earlier run's row only now
    summary = [*(earlier for earlier in summary if Path(earlier["image"]).stem != path.stem), row]
    write_csv(out / SUMMARY_FILE, summary, SUMMARY_COLUMNS)
    for name in hashes:
        del pending[name]
    write_pending(out / PENDING_FILE, pending)
    tqdm.write(f"{path}: {len(nuclei)} nuclei -> {out / (path.stem + '_labels.tif')}")
    return summary


def outputs_of(folder: Path, stem: str) -> list[Path]:
    """The per-image files of `stem` that are in `folder`."""
    return [folder / f"{stem}{suffix}" for suffix in OUTPUT_SUFFIXES if (folder / f"{stem}{suffix}").exists()]


def unfinished_stems(folder: Path, stems: list[str], rows: dict[str, dict], pending: dict[str, str]) -> set[str]:
    """The stems a killed run was writing: some of their files have the hash this command recorded
    before renaming them into place, and any other is an earlier run's, which the stem's row stands for."""
    unfinished = set()
    for stem in stems:
        existing = outputs_of(folder, stem)
        own = [path for path in existing if path.name in pending and pending[path.name] == file_sha256(path)]
        if own and (stem in rows or len(own) == len(existing)):
            unfinished.add(stem)
    return unfinished


def resumable(folder: Path, stem: str, rows: dict[str, dict]) -> bool:
    """Whether `stem` has its three files and a row that records what made them (rows written before
    identities were recorded do not)."""
    row = rows.get(stem, {})
    return len(outputs_of(folder, stem)) == len(OUTPUT_SUFFIXES) and all(row.get(column) for column in IDENTITY_COLUMNS)


def refuse_other_identity(folder: Path, stem: str, row: dict, identity: dict[str, str]) -> None:
    """Refuse, naming its first file and what differs, an image done by another model, with other
    settings or from another input than this run's."""
    from patchunet.core.errors import DataError

    for column, made in IDENTITY_COLUMNS.items():
        if row[column] != identity[column]:
            raise DataError(outputs_of(folder, stem)[0], f"already exists, made {made}: pass --overwrite to replace it")


def model_identity(model) -> str:
    """16 hex digits naming what the model computes: its weights and its config, whatever file or
    MLflow URI gave it."""
    from patchunet.inference.runtimes import weights_hash

    return short_hash([weights_hash(model), repr(model.cfg)])


def settings_identity(cfg, patch_size: int, given_mpp: float | None) -> str:
    """16 hex digits naming the settings predict's outputs depend on: the `eval` section but
    `samples` (the evaluate stage's figures), the patch size (the default window) and the scale given."""
    settings = {key: value for key, value in dataclasses.asdict(cfg).items() if key != "samples"}
    return short_hash({"eval": settings, "patch_size": patch_size, "mpp": given_mpp})


def short_hash(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_pending(path: Path) -> dict[str, str]:
    """The {file name: SHA-256} of outputs an earlier run was renaming into place ({} if none)."""
    from patchunet.core.errors import DataError

    if not path.exists():
        return {}
    try:
        pending = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"cannot read this record of outputs being written ({exc}): remove it") from None
    if not isinstance(pending, dict):
        raise DataError(path, "not a record this command wrote: remove it")
    return pending


def write_pending(path: Path, pending: dict[str, str]) -> None:
    from patchunet.core.files import write_json

    if pending:
        write_json(path, pending)
    else:
        path.unlink(missing_ok=True)


def write_together(contents: dict[Path, bytes]) -> None:
    """Write files atomically and together: none is renamed into place before every one is written,
    so a failure or a kill while writing leaves none of them (only temporaries, which
    `remove_dead_writers_files` removes)."""
    from patchunet.core.files import atomic_file

    with contextlib.ExitStack() as stack:
        for path, content in contents.items():
            stack.enter_context(atomic_file(path)).write_bytes(content)


TEMPORARY_NAME = re.compile(r"\.(?P<name>.+)\.\d+\.[^.]+\.tmp")
"""`files.atomic_file`'s temporaries: `.<name>.<pid>.<random>.tmp`."""


def remove_dead_writers_files(folder: Path) -> None:
    """Remove the temporaries that killed writers left in `folder`, of any file (`files.remove_stale_temporaries`):
    a rerun may never write that file again (an image done before the kill, or not given again)."""
    from patchunet.core.files import remove_stale_temporaries

    if not folder.is_dir():  # `check_writable_folder` removes a folder it created
        return
    names = {match["name"] for entry in folder.iterdir() if (match := TEMPORARY_NAME.fullmatch(entry.name))}
    for name in sorted(names):
        remove_stale_temporaries(folder / name)


def scale_option(mpp: str | None, magnification: str | None) -> tuple[float | None, str]:
    """The µm per pixel that --mpp or --magnification gives, or None, and the option as written."""
    from patchunet.core.errors import PatchUNetError
    from patchunet.io.scale import mpp_of_magnification, parse_mpp

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
    from patchunet.io.scale import check_scale, chosen_scale

    mpp, source = chosen_scale(given_mpp, recorded, model_mpp)
    what = {"option": f"{path}: {option}", "file": f"{path}: the scale its file records"}.get(source, str(path))
    check_scale(image.shape, mpp, model_mpp, what)
    return mpp, option if source == "option" else source


def announce_scales(scales: dict[Path, tuple[float, str]], model_mpp: float) -> None:
    """One line on stderr per image whose file gave its scale, and one if any is assumed to be at
    the model's: a 20x image must not pass as 40x unnoticed."""
    from patchunet.io.scale import scale_label

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
    from patchunet.core.errors import DataError

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


def refuse_existing_outputs(
    folder: Path | RemoteFolder, stems: list[str], suffixes: tuple[str, ...] = OUTPUT_SUFFIXES
) -> None:
    """Refuse if any per-image file (stem + suffix) this run would write is already in `folder`, a
    local folder or object storage.

    The summary is not checked: it keeps the rows of other images.
    """
    from patchunet.core.errors import DataError, PatchUNetError

    problem = "already exists: pass --overwrite to replace it"
    for name in (f"{stem}{suffix}" for stem in stems for suffix in suffixes):
        if isinstance(folder, Path) and (folder / name).exists():
            raise DataError(folder / name, problem)
        if not isinstance(folder, Path) and folder.exists(name):
            raise PatchUNetError(f"{folder}/{name}: {problem}")


def read_summary(path: Path, accepted: tuple[tuple[str, ...], ...] | None = None) -> list[dict]:
    """The rows of an earlier run's summary (columns one of `accepted`, by default predict's); none
    if there is no such file."""
    from patchunet.core.errors import DataError

    if not path.exists():
        return []
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(path, f"cannot read this summary to add rows to it ({exc})") from None
    accepted = accepted or (SUMMARY_COLUMNS, SUMMARY_COLUMNS_BEFORE_IDENTITY, SUMMARY_COLUMNS_BEFORE_SCALE)
    if tuple(reader.fieldnames or ()) not in accepted:
        raise DataError(path, f"not a summary this command wrote: columns should be {', '.join(accepted[0])}")
    return rows


def load_model_reference(reference: str, tracking_uri: str):
    """A PatchUNet from a file (model or training checkpoint) or from an MLflow model URI.

    A SQLite store that does not exist is refused, not created: a mistyped folder must not
    leave an empty mlflow.db behind.
    """
    from patchunet import tracking
    from patchunet.core.errors import PatchUNetError
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
