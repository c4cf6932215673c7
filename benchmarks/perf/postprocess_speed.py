"""Post-processing time of the `none` head per 1000x1000 image, on the default model's maps of the
6 val images and on noisy synthetic maps (seeded smoothed noise: big blobs with many distance peaks
each, as a weakly trained model or a slide unlike the training data gives). Three versions run on
the same maps, alternating within each repeat so machine noise hits them alike:
- `straightforward`: the per-region h-maxima and whole-image watershed of before the blob-by-blob
  decisions (below), the reference;
- `peak by peak`: today's module deciding every lower peak of a blob one at a time, each labelling
  the blob's box (how it did before; its cost grows with blob area times peaks);
- `now`: today's module.
Prints the median seconds per image of each and the ratios, whether the labels are identical to the
reference's (same pixels and numbering), and the per-image-mean val AJI. The val maps are predicted
once with the trained model (models/patchunet.pt) and the `eval` params of params.yaml; `--cache DIR`
keeps them there for later runs. The test set is never read.

    .venv/bin/python -m benchmarks.perf.postprocess_speed --repeats 3 --noisy 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

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


VAL_MAPS = "default model, val"


def noisy_maps(count: int, side: int = 1000) -> list[np.ndarray]:
    """`count` seeded (side, side) float32 probability maps of smoothed noise, about 60% above 0.6 in
    ragged blobs the size of the image."""
    maps = []
    for seed in range(count):
        noise = ndimage.gaussian_filter(np.random.default_rng(seed).random((side, side), np.float32), 3.0)
        maps.append(np.clip((noise - noise.mean()) / (4 * noise.std()) + 0.65, 0, 1))
    return maps


def peak_by_peak(probabilities: np.ndarray, **params: float) -> np.ndarray:
    """Today's post-processing with every lower peak of a blob decided one at a time."""
    with mock.patch.object(instances, "LOWER_PEAKS_ONE_BY_ONE", sys.maxsize):
        return instances.instances_from_probabilities(probabilities, **params)


METHODS: dict[str, Callable[..., np.ndarray]] = {
    "straightforward": instances_from_probabilities,
    "peak by peak": peak_by_peak,
    "now": instances.instances_from_probabilities,
}


def timed(
    maps: list[np.ndarray], params: dict[str, float], repeats: int, name: str
) -> tuple[dict[str, float], dict[str, list[np.ndarray]]]:
    """Median seconds per map of each method, and each method's labels (from the first repeat)."""
    seconds: dict[str, list[float]] = {method: [] for method in METHODS}
    labels: dict[str, list[np.ndarray]] = {method: [] for method in METHODS}
    for repeat in range(repeats):
        for probabilities in maps:
            for method in list(METHODS)[:: 1 if repeat % 2 == 0 else -1]:
                started = time.perf_counter()
                result = METHODS[method](probabilities, **params)
                seconds[method].append(time.perf_counter() - started)
                if repeat == 0:
                    labels[method].append(result)
        print(f"{name} maps, repeat {repeat + 1}/{repeats} done", file=sys.stderr)
    return {method: statistics.median(values) for method, values in seconds.items()}, labels


def val_maps(args: argparse.Namespace, settings: Settings) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """(ids, foreground maps, true labels) of the val images, predicted or read from `args.cache`."""
    from patchunet.model.unet import load_model

    images = val_images()
    ids = [image_id for image_id, _, _ in images]
    cached = [args.cache / f"{image_id}.npy" for image_id in ids] if args.cache else []
    if cached and all(path.exists() for path in cached):
        return ids, [np.load(path)[0] for path in cached], [read_label_image(labels) for _, _, labels in images]
    model = load_model(args.model)
    if model.cfg.instance_head != "none":
        raise SystemExit(f"{args.model}: instance head {model.cfg.instance_head!r}, not 'none'")
    predictions = predict_images(model, images, settings, "val")
    if args.cache:
        args.cache.mkdir(parents=True, exist_ok=True)
        for path, prediction in zip(cached, predictions, strict=True):
            np.save(path, prediction.maps)
    return ids, [p.maps[0] for p in predictions], [p.truth for p in predictions]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / MODEL_FILE)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--noisy", type=int, default=3, help="noisy synthetic maps (0: none)")
    parser.add_argument("--cache", type=Path, help="folder for the predicted val maps (read if there)")
    args = parser.parse_args()

    settings = Settings.load()
    cfg = settings.eval
    params = {
        "threshold": cfg.threshold,
        "min_nucleus_area": cfg.min_nucleus_area,
        "max_hole_area": cfg.max_hole_area,
        "distance_sigma": cfg.distance_sigma,
        "watershed_h": cfg.watershed_h,
    }
    ids, maps, truths = val_maps(args, settings)
    sets = {VAL_MAPS: maps, "noisy synthetic": noisy_maps(args.noisy)}
    print(f"{args.repeats} repeats; {params}")
    print(
        "| maps | images | straightforward s | peak by peak s | now s | peak by peak / now | straightforward / now"
        " | labels |"
    )
    print("|---|---|---|---|---|---|---|---|")
    val_labels: dict[str, list[np.ndarray]] = {}
    for name, images in sets.items():
        if not images:
            continue
        medians, labels = timed(images, params, args.repeats, name)
        same = sum(
            all(r.dtype == ref.dtype and np.array_equal(r, ref) for r in results)
            for ref, *results in zip(labels["straightforward"], labels["peak by peak"], labels["now"], strict=True)
        )
        side = f"{images[0].shape[1]}x{images[0].shape[0]}"
        print(
            f"| {name} | {len(images)} of {side} | {medians['straightforward']:.3f} | {medians['peak by peak']:.3f}"
            f" | {medians['now']:.3f} | {medians['peak by peak'] / medians['now']:.1f}x"
            f" | {medians['straightforward'] / medians['now']:.1f}x | {same}/{len(images)} identical |"
        )
        if name == VAL_MAPS:
            val_labels = labels
    for image_id, old, new in zip(ids, val_labels["straightforward"], val_labels["now"], strict=True):
        if not (old.dtype == new.dtype and np.array_equal(old, new)):
            print(f"{image_id}: labels differ in {int((old != new).sum())} px, {differing_nuclei(old, new)} nuclei")
    for name, results in val_labels.items():
        aji = statistics.mean(score_segmentation(t, r).as_dict()["aji"] for t, r in zip(truths, results, strict=True))
        print(f"{name}: val AJI (per-image mean) {aji:.4f}")


if __name__ == "__main__":
    main()
