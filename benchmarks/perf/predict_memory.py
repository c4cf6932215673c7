"""Peak memory of `patchunet predict` on one large image (default 6000x6000 px, 36 Mpx).

Builds the image by tiling the first test image of data/raw/monuseg (6x6 tiles of 1000x1000,
`dvc repro fetch`), then runs `/usr/bin/time -v patchunet predict` on it and prints the
"Maximum resident set size" next to the size of one float32 probability map (H x W x 4 bytes).
The model is --model, else models/patchunet.pt when present, else a default-config PatchUNet
with random weights. Inference memory does not depend on the weights, but post-processing
does, and random weights find no nucleus at all; so a second measurement runs what `predict`
does after inference (post-processing, nucleus table, overlay) on a realistic probability map:
the first train image's label map (data/interim/train/labels, `dvc repro masks`), tiled the same
way, as blurred 0/1 nuclei. `/usr/bin/time` is
Debian's `time` package.

    .venv/bin/python -m benchmarks.perf.predict_memory --side 6000
    .venv/bin/python -m benchmarks.perf.predict_memory --side 6000 --baseline-src /tmp/before/src

`--baseline-src` also measures another checkout's package (e.g. a `git worktree` of an older
commit) on the same image and model, side by side in one run.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import ROOT, pipeline_images

PEAK_RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")
WALL = re.compile(r"Elapsed \(wall clock\) time.*: (\S+)")


def tiled(tile: np.ndarray, side: int) -> np.ndarray:
    """(side, side, ...) copies of `tile` side by side."""
    reps = (-(-side // tile.shape[0]), -(-side // tile.shape[1])) + (1,) * (tile.ndim - 2)
    return np.tile(tile, reps)[:side, :side]


def model_file(folder: Path) -> Path:
    import torch

    from patchunet.core.config import ModelConfig, load_params, parse_section
    from patchunet.core.paths import MODEL_FILE
    from patchunet.model.unet import PatchUNet, save_model

    if (ROOT / MODEL_FILE).is_file():
        return ROOT / MODEL_FILE
    torch.manual_seed(0)
    path = folder / "random.pt"
    save_model(PatchUNet(parse_section(ModelConfig, load_params(ROOT / "params.yaml"), "model")), path)
    return path


def timed(command: list[str], package_src: Path | None = None) -> tuple[float, str, str]:
    """Peak resident MB, wall time and stdout of `command` under /usr/bin/time -v, importing
    patchunet from `package_src` when given (PYTHONPATH comes before the editable install)."""
    env = {**os.environ, "PYTHONPATH": str(package_src)} if package_src else None
    result = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, cwd=ROOT, env=env)
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    return int(PEAK_RSS.search(result.stderr).group(1)) / 1024, WALL.search(result.stderr).group(1), result.stdout


def after_inference(side: int) -> None:
    """What `predict` does once it has the probabilities, on a realistic map; prints the nucleus count."""
    from scipy import ndimage

    from patchunet.core.config import EvalConfig, load_params, parse_section
    from patchunet.evaluation.overlay import prediction_overlay
    from patchunet.io.images import read_label_image, read_rgb_image
    from patchunet.postprocess.instances import instances_from_maps
    from patchunet.postprocess.nuclei import nucleus_table

    cfg = parse_section(EvalConfig, load_params(ROOT / "params.yaml"), "eval")
    image = tiled(read_rgb_image(pipeline_images("test")[0][1]), side)
    nuclei = read_label_image(pipeline_images("train")[0][2]) > 0
    probabilities = ndimage.gaussian_filter(tiled(nuclei, side).astype(np.float32), 1.5)
    labels = instances_from_maps(probabilities[None], "none", cfg)
    prediction_overlay(image, labels)
    print(f"{len(nucleus_table(labels))} nuclei")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=6000, help="image side in pixels")
    parser.add_argument("--model", type=Path, help="model file (default models/patchunet.pt, else random weights)")
    parser.add_argument("--baseline-src", type=Path, help="also measure the patchunet package in this src/ folder")
    parser.add_argument("--after-inference-only", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.after_inference_only:
        after_inference(args.side)
        return

    import tifffile

    from patchunet.io.images import read_rgb_image

    map_mb = args.side * args.side * 4 / 2**20
    with tempfile.TemporaryDirectory() as folder:
        image = Path(folder) / f"tiled_{args.side}.tif"
        tile = read_rgb_image(pipeline_images("test")[0][1])
        tifffile.imwrite(image, tiled(tile, args.side), photometric="rgb")
        model = args.model or model_file(Path(folder))
        for name, package in (("baseline", args.baseline_src), ("this checkout", None)):
            if name == "baseline" and package is None:
                continue
            measure(name, package, image, model, Path(folder) / name.replace(" ", "_"), args, map_mb)


def measure(name: str, package: Path | None, image: Path, model: Path, out: Path, args, map_mb: float) -> None:
    """Print peak memory of `patchunet predict` on `image`, then of the work after inference alone."""
    predict = [sys.executable, "-m", "patchunet", "predict", str(image), "--model", str(model)]
    peak, wall, _ = timed([*predict, "--out", str(out), "--params", str(ROOT / "params.yaml")], package)
    summary = (out / "summary.csv").read_text().splitlines()[1]
    print(f"[{name}] patchunet predict, {args.side}x{args.side} px, model {model.name}: wall {wall}; summary {summary}")
    print(f"  Maximum resident set size: {peak:.0f} MB = {peak / map_mb:.1f} x one float32 map ({map_mb:.0f} MB)")
    child = [sys.executable, "-m", __spec__.name, "--after-inference-only", "--side", str(args.side)]
    peak, wall, stdout = timed(child, package)
    print(
        f"[{name}] after inference only (post-processing, table, overlay) on tiled MoNuSeg nuclei: wall {wall}, "
        f"{stdout.strip()}"
    )
    print(f"  Maximum resident set size: {peak:.0f} MB = {peak / map_mb:.1f} x one float32 map ({map_mb:.0f} MB)")


if __name__ == "__main__":
    main()
