"""Where the time of one whole 1000x1000 test image goes: network, blending, thresholding,
distance transform, markers, watershed, relabelling.

Profiles the library's own `segment_image` (no TTA, the `eval` params of params.yaml, on the
runtime `eval.backend` names) on the trained model with cProfile, after a warm-up, over several
real test images, and prints each step's cumulative time per image. The steps are the library
functions that do them, so the table follows the code: what is left of `predict_maps` after the
network's forward passes is the tiling, the blending and the copies.

    .venv/bin/python -m benchmarks.perf.inference_profile --images 3
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from benchmarks import ROOT, pipeline_images
from patchunet.core.config import EvalConfig, PatchConfig, load_params, parse_section
from patchunet.core.paths import MODEL_FILE
from patchunet.inference.runtimes import runtime_network
from patchunet.inference.sliding_window import segment_image
from patchunet.io.images import read_rgb_image
from patchunet.model.unet import load_model
from patchunet.training.devices import pick_device

STEPS = {  # step -> (file suffix, function name) whose cumulative time it is
    "network (forward passes)": ("patchunet/model/unet.py", "forward"),
    "network (exported, on eval.backend)": ("inference/runtimes.py", "__call__"),
    "sliding windows in all (tiling, network, blending)": ("inference/sliding_window.py", "predict_maps"),
    "post-processing in all": ("postprocess/instances.py", "instances_from_maps"),
    "  threshold, small objects and holes": ("postprocess/instances.py", "clean_foreground"),
    "  distance transform": ("postprocess/instances.py", "distance_by_blob"),
    "  markers (h-maxima)": ("postprocess/instances.py", "h_maxima_by_blob"),
    "  watershed": ("skimage/segmentation/_watershed.py", "watershed"),
    "  relabelling and small nuclei": ("postprocess/instances.py", "finished_labels"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3)
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    cfg = parse_section(EvalConfig, params, "eval")
    model = load_model(ROOT / MODEL_FILE)
    model = runtime_network(model.to(pick_device()) if cfg.backend == "torch" else model, cfg)
    window = cfg.window_for(parse_section(PatchConfig, params, "patch").size, model.cfg.size_multiple)
    images = [read_rgb_image(image) for _, image, _ in pipeline_images("test")[: args.images]]
    segment_image(model, images[0], cfg, window)  # warm-up

    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    for image in images:
        segment_image(model, image, cfg, window)
    profile.disable()
    total = (time.perf_counter() - started) / len(images)
    stats = pstats.Stats(profile).stats  # (file, line, name) -> (calls, primitive, tottime, cumtime, callers)
    side = f"{images[0].shape[1]}x{images[0].shape[0]}"
    print(f"{len(images)} test images of {side} px, window {window}, overlap {cfg.overlap}, batch {cfg.batch_size}")
    print(f"no TTA; {cfg.backend} {cfg.precision}; under cProfile, which adds its own overhead")
    print(f"{'step':52s} {'s/image':>8s} {'share':>6s}")
    for step, (suffix, name) in STEPS.items():
        seconds = sum(v[3] for (file, _, function), v in stats.items() if file.endswith(suffix) and function == name)
        print(f"{step:52s} {seconds / len(images):8.3f} {seconds / len(images) / total:6.0%}")
    print(f"{'whole image (segment_image)':52s} {total:8.3f} {1:6.0%}")


if __name__ == "__main__":
    main()
