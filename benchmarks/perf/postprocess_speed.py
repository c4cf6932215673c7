"""Post-processing time of the `none` head per 1000x1000 val image: today's blob-by-blob
splitting against the per-blob h-maxima and watershed it replaced, on the same maps.

Predicts the 6 validation images once with the trained model (models/patchunet.pt) and the
`eval` params of params.yaml, then runs both post-processings on each map, alternating within each
repeat so machine noise hits both alike. Prints the median seconds per image and their ratio,
whether the labels are identical (same pixels and numbering), and the per-image-mean val AJI of
each. `--cache DIR` keeps the predicted maps there for later runs. The test set is never read.

    .venv/bin/python -m benchmarks.perf.postprocess_speed --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.morphology import h_maxima, remove_small_holes, remove_small_objects
from skimage.segmentation import relabel_sequential, watershed

from benchmarks.harness import ROOT, Settings, predict_images, val_images
from patchunet.core.paths import MODEL_FILE
from patchunet.evaluation.metrics import score_segmentation
from patchunet.io.images import read_label_image
from patchunet.postprocess import instances

# The post-processing as it was before the blob-by-blob decisions (docstrings left out): the reference.


def instances_from_probabilities(
    probabilities: np.ndarray,
    *,
    threshold: float,
    min_nucleus_area: int,
    max_hole_area: int,
    distance_sigma: float,
    watershed_h: float,
) -> np.ndarray:
    foreground = clean_foreground(probabilities, threshold, min_nucleus_area, max_hole_area)
    return finished_labels(split_touching(foreground, distance_sigma, watershed_h), min_nucleus_area)


def clean_foreground(probabilities: np.ndarray, threshold: float, min_area: int, max_hole_area: int) -> np.ndarray:
    foreground = probabilities > threshold
    foreground = remove_small_objects(foreground, max_size=min_area - 1) if min_area > 1 else foreground
    return remove_small_holes(foreground, max_size=max_hole_area) if max_hole_area > 0 else foreground


def finished_labels(labels: np.ndarray, min_area: int) -> np.ndarray:
    too_small = np.bincount(labels.ravel()) < min_area
    too_small[0] = False
    labels[too_small[labels]] = 0
    labels, _, _ = relabel_sequential(labels)
    return labels.astype(np.promote_types(np.min_scalar_type(labels.max()), np.uint16))


def with_orphan_blobs(markers: np.ndarray, foreground: np.ndarray, count: int) -> np.ndarray:
    components, _ = ndimage.label(foreground)
    has_marker = np.zeros(components.max() + 1, bool)
    has_marker[components[markers > 0]] = True
    orphan = ~has_marker[components] & foreground
    markers[orphan] = components[orphan] + count
    return markers


def split_touching(foreground: np.ndarray, distance_sigma: float, watershed_h: float) -> np.ndarray:
    distance = distance_by_blob(foreground)
    if distance_sigma > 0:
        ndimage.gaussian_filter(distance, distance_sigma, output=distance)
    markers, count = ndimage.label(h_maxima_by_blob(distance, watershed_h), structure=np.ones((3, 3)))
    markers = with_orphan_blobs(markers, foreground, count)
    np.negative(distance, out=distance)
    return watershed(distance, markers, mask=foreground).astype(np.int32, copy=False)


def distance_by_blob(foreground: np.ndarray) -> np.ndarray:
    distance = np.zeros(foreground.shape, np.float64)
    blobs, _ = ndimage.label(foreground)
    for blob, box in enumerate(ndimage.find_objects(blobs), start=1):
        box = _grown(box, foreground.shape)
        inside = blobs[box] == blob
        distance[box][inside] = ndimage.distance_transform_edt(foreground[box])[inside]
    return distance


def h_maxima_by_blob(image: np.ndarray, h: float) -> np.ndarray:
    maxima = np.zeros(image.shape, np.uint8)
    if h > np.ptp(image):
        return maxima
    peak = image.max()
    regions, _ = ndimage.label(image > 0, structure=np.ones((3, 3)))
    for region, box in enumerate(ndimage.find_objects(regions), start=1):
        inside = regions[box] == region
        crop = np.pad(np.where(inside, image[box], 0), 2)
        crop[0, 0] = peak
        maxima[box][inside] = h_maxima(crop, h)[2:-2, 2:-2][inside]
    return maxima


def _grown(box: tuple[slice, slice], shape: tuple[int, ...]) -> tuple[slice, slice]:
    return tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, shape, strict=True))


def differing_nuclei(old: np.ndarray, new: np.ndarray) -> int:
    """Nuclei of `old` whose pixels are not exactly those of one nucleus of `new` (0: the same up to numbering)."""
    pairs = np.unique(old.astype(np.int64) * (int(new.max()) + 1) + new)
    in_old, in_new = np.divmod(pairs, int(new.max()) + 1)
    same = (in_old > 0) & (in_new > 0) & (np.bincount(in_old)[in_old] == 1) & (np.bincount(in_new)[in_new] == 1)
    return len(np.unique(in_old[in_old > 0])) - int(same.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / MODEL_FILE)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache", type=Path, help="folder for the predicted val maps (read if there)")
    args = parser.parse_args()
    from patchunet.model.unet import load_model

    settings = Settings.load()
    cfg = settings.eval
    images = val_images()
    cached = [args.cache / f"{image_id}.npy" for image_id, _, _ in images] if args.cache else []
    if cached and all(path.exists() for path in cached):
        maps = [np.load(path)[0] for path in cached]
        truths = [read_label_image(labels) for _, _, labels in images]
    else:
        model = load_model(args.model)
        if model.cfg.instance_head != "none":
            raise SystemExit(f"{args.model}: instance head {model.cfg.instance_head!r}, not 'none'")
        predictions = predict_images(model, images, settings, "val")
        maps, truths = [p.maps[0] for p in predictions], [p.truth for p in predictions]
        if args.cache:
            args.cache.mkdir(parents=True, exist_ok=True)
            for path, prediction in zip(cached, predictions, strict=True):
                np.save(path, prediction.maps)
    params = {
        "threshold": cfg.threshold,
        "min_nucleus_area": cfg.min_nucleus_area,
        "max_hole_area": cfg.max_hole_area,
        "distance_sigma": cfg.distance_sigma,
        "watershed_h": cfg.watershed_h,
    }
    methods = {"before": instances_from_probabilities, "now": instances.instances_from_probabilities}

    seconds: dict[str, list[float]] = {name: [] for name in methods}
    labels: dict[str, list[np.ndarray]] = {name: [] for name in methods}
    for repeat in range(args.repeats):
        for probabilities in maps:
            for name in list(methods)[:: 1 if repeat % 2 == 0 else -1]:
                started = time.perf_counter()
                result = methods[name](probabilities, **params)
                seconds[name].append(time.perf_counter() - started)
                if repeat == 0:
                    labels[name].append(result)
        print(f"repeat {repeat + 1}/{args.repeats}: " + ", ".join(f"{n} {s[-1]:.3f} s" for n, s in seconds.items()))

    side = f"{maps[0].shape[1]}x{maps[0].shape[0]}"
    print(f"{len(maps)} val images of {side} px x {args.repeats} repeats; {params}")
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    for name, median in medians.items():
        print(f"{name}: median {median:.3f} s per image (min {min(seconds[name]):.3f}, max {max(seconds[name]):.3f})")
    print(f"before / now: {medians['before'] / medians['now']:.1f}x")
    for (image_id, _, _), old, new in zip(images, labels["before"], labels["now"], strict=True):
        same = old.dtype == new.dtype and np.array_equal(old, new)
        print(
            f"{image_id}: {old.max()} nuclei, labels "
            + ("identical" if same else f"differ in {int((old != new).sum())} px, {differing_nuclei(old, new)} nuclei")
        )
    for name, results in labels.items():
        aji = statistics.mean(score_segmentation(t, r).as_dict()["aji"] for t, r in zip(truths, results, strict=True))
        print(f"{name}: val AJI (per-image mean) {aji:.4f}")


if __name__ == "__main__":
    main()
