"""Whole-image inference time per 1000x1000 MoNuSeg test image, without and with TTA.

Runs the library's own `segment_image` (sliding windows, blending, watershed post-processing)
with the `eval` params of params.yaml, on the trained model (models/patchunet.pt, made by
`dvc repro train`) and real test images (data/raw/monuseg, made by `dvc repro fetch`). The two
settings alternate within each repeat, so machine noise hits both alike. Prints medians and
their ratio.

    .venv/bin/python -m benchmarks.perf.inference_speed --images 3 --repeats 3
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

from benchmarks import ROOT, pipeline_images
from patchunet.core.config import EvalConfig, PatchConfig, load_params, parse_section
from patchunet.core.paths import MODEL_FILE
from patchunet.inference.sliding_window import segment_image
from patchunet.io.images import read_rgb_image
from patchunet.model.unet import load_model
from patchunet.training.devices import pick_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3, help="test images per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", type=Path, default=ROOT / MODEL_FILE)
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    cfg = parse_section(EvalConfig, params, "eval")
    device = pick_device()
    model = load_model(args.model).to(device)
    window = cfg.window_for(parse_section(PatchConfig, params, "patch").size, model.cfg.size_multiple)
    images = [read_rgb_image(image) for _, image, _ in pipeline_images("test")[: args.images]]
    settings = {"no TTA": dataclasses.replace(cfg, tta=False), "8x TTA": dataclasses.replace(cfg, tta=True)}
    segment_image(model, images[0], cfg, window)  # warm-up: first-call allocations and thread start

    seconds: dict[str, list[float]] = {name: [] for name in settings}
    for repeat in range(args.repeats):
        for name, setting in settings.items():
            for image in images:
                started = time.perf_counter()
                segment_image(model, image, setting, window)
                seconds[name].append(time.perf_counter() - started)
        print(f"repeat {repeat + 1}/{args.repeats}: " + ", ".join(f"{n} {s[-1]:.2f} s" for n, s in seconds.items()))

    print(
        f"device {device}, window {window}, overlap {cfg.overlap}, batch {cfg.batch_size}, "
        f"{len(images)} images x {args.repeats} repeats, {images[0].shape[1]}x{images[0].shape[0]} px"
    )
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    for name, median in medians.items():
        print(f"{name}: median {median:.2f} s per image (min {min(seconds[name]):.2f}, max {max(seconds[name]):.2f})")
    print(f"TTA / no TTA: {medians['8x TTA'] / medians['no TTA']:.1f}x")


if __name__ == "__main__":
    main()
