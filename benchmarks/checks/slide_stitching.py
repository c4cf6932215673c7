"""How the stitched slide compares with `patchunet predict` on each image alone, on real pixels.

Builds the mosaic of tests/inference/test_predict_slide.py (the first four test images of data/raw,
2 x 2 with 200 px of glass around each, a pyramidal TIFF at 0.25 µm/px), runs `patchunet
predict-slide` with 512 px tiles (seams across every image) and `patchunet predict` on the four
images, and prints per image: AJI against the truth alone and from the slide, their difference,
the AJI of the slide against predict, and how many of predict's nuclei cross a seam and how many
of those the slide cut at it.

    .venv/bin/python -m benchmarks.checks.slide_stitching --model models/patchunet.pt
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml
from scipy import ndimage

from benchmarks import ROOT, pipeline_images
from patchunet.core.paths import MODEL_FILE
from patchunet.evaluation.metrics import score_segmentation
from patchunet.io.geojson import rasterize_geojson
from patchunet.io.images import read_label_image, read_rgb_image
from patchunet.io.slides import write_pyramidal_tiff

SIDE, GAP, TILE = 1000, 200, 512


def seam_cuts(alone: np.ndarray, from_slide: np.ndarray, x: int, y: int) -> tuple[int, int]:
    """(nuclei of `alone` crossing a seam, of those whose main slide nucleus stops at the seam)."""
    seams_x = [s - x for s in range(TILE, x + SIDE, TILE) if 0 < s - x < SIDE]
    seams_y = [s - y for s in range(TILE, y + SIDE, TILE) if 0 < s - y < SIDE]
    crossing = cut = 0
    for nucleus, (rows, cols) in enumerate(ndimage.find_objects(alone), start=1):
        across = [(s, 1) for s in seams_x if cols.start < s < cols.stop]
        across += [(s, 0) for s in seams_y if rows.start < s < rows.stop]
        if not across:
            continue
        crossing += 1
        ids, counts = np.unique(from_slide[rows, cols][alone[rows, cols] == nucleus], return_counts=True)
        main = ids[np.argmax(np.where(ids > 0, counts, -1))]
        if main:
            where = np.argwhere(from_slide == main)
            cut += any(not (where[:, axis].min() < s <= where[:, axis].max()) for s, axis in across)
    return crossing, cut


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / MODEL_FILE))
    args = parser.parse_args()
    labelled = {image: labels for _, image, labels in pipeline_images("test")[:4]}
    images = list(labelled)
    with tempfile.TemporaryDirectory(prefix="slide-stitching-") as scratch:
        work = Path(scratch)
        side = 2 * SIDE + 3 * GAP
        slide = np.full((side, side, 3), 236, np.uint8) + np.random.default_rng(0).integers(
            0, 8, (side, side, 1), np.uint8
        )
        places = {}
        for index, path in enumerate(images):
            x, y = GAP + (index % 2) * (SIDE + GAP), GAP + (index // 2) * (SIDE + GAP)
            slide[y : y + SIDE, x : x + SIDE] = read_rgb_image(path)
            places[path] = (x, y)
        write_pyramidal_tiff(work / "mosaic.tif", slide, 0.25)
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["slide"]["tile_size"] = TILE
        (work / "params.yaml").write_text(yaml.safe_dump(params))
        common = ["--model", args.model, "--params", str(work / "params.yaml")]
        for command in (["predict-slide", str(work / "mosaic.tif")], ["predict", *map(str, images)]):
            out = work / command[0]
            subprocess.run([sys.executable, "-m", "patchunet", *command, *common, "--out", str(out)], check=True)
        print("image | AJI alone | AJI from the slide | difference | slide vs alone AJI | cross a seam | cut")
        for path, (x, y) in places.items():
            truth = read_label_image(labelled[path])
            alone = read_label_image(work / "predict" / f"{path.stem}_labels.tif")
            geojson = work / "predict-slide" / "mosaic_nuclei.geojson"
            from_slide = rasterize_geojson(geojson, (SIDE, SIDE), offset=(x, y))[0]
            alone_aji = score_segmentation(truth, alone).instances.aji
            slide_aji = score_segmentation(truth, from_slide).instances.aji
            agreement = score_segmentation(alone, from_slide).instances.aji
            crossing, cut = seam_cuts(alone, from_slide, x, y)
            print(
                f"{path.stem} | {alone_aji:.4f} | {slide_aji:.4f} | {slide_aji - alone_aji:+.4f} | "
                f"{agreement:.3f} | {crossing} | {cut}"
            )


if __name__ == "__main__":
    main()
