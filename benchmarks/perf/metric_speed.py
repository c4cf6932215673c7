"""Time to score one image (pixel Dice/IoU, AJI, AJI+, PQ, F1) on the densest MoNuSeg label map.

Finds the label map with the most nuclei among data/interim/{train,test}/labels (made by
`dvc repro masks`), predicts it with the trained model and the `eval` params (not timed), then
times `score_segmentation` and, alone, the AJI path. Prints medians over the repeats.

    .venv/bin/python -m benchmarks.perf.metric_speed --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from benchmarks import ROOT
from patchunet.core.config import EvalConfig, PatchConfig, load_params, parse_section
from patchunet.core.paths import MODEL_FILE, RAW_DIR, labels_dir
from patchunet.evaluation.metrics import instance_counts, score_segmentation
from patchunet.inference.sliding_window import segment_image
from patchunet.io.annotations import count_nuclei
from patchunet.io.images import read_label_image, read_rgb_image
from patchunet.model.unet import load_model


def timed(function, repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--model", type=Path, default=ROOT / MODEL_FILE)
    args = parser.parse_args()
    paths = [p for split in ("train", "test") for p in sorted((ROOT / labels_dir(split)).glob("*.tif"))]
    if not paths:
        raise SystemExit("no label maps under data/interim: run `dvc repro masks` first")
    nuclei, densest = max((count_nuclei(read_label_image(p)), p) for p in paths)
    split = densest.parent.parent.name
    truth = read_label_image(densest)
    image = read_rgb_image(ROOT / RAW_DIR / split / "images" / densest.name)

    params = load_params(ROOT / "params.yaml")
    cfg = parse_section(EvalConfig, params, "eval")
    model = load_model(args.model)
    window = cfg.window_for(parse_section(PatchConfig, params, "patch").size, model.cfg.size_multiple)
    _, predicted = segment_image(model, image, cfg, window)
    score_segmentation(truth, predicted)  # warm-up: imports and first allocations

    everything = timed(lambda: score_segmentation(truth, predicted), args.repeats)
    aji_path = timed(lambda: instance_counts(truth, predicted), args.repeats)
    scores = score_segmentation(truth, predicted).as_dict()
    print(f"{densest.stem} ({split}): {nuclei} true nuclei, {int(predicted.max())} predicted, {truth.shape}")
    print(f"AJI {scores['aji']:.4f}, PQ {scores['pq']:.4f} on this image")
    print(f"all scores: median {statistics.median(everything):.3f} s over {args.repeats} repeats")
    print(f"instance metrics (AJI, AJI+, PQ, F1): median {statistics.median(aji_path):.3f} s")


if __name__ == "__main__":
    main()
