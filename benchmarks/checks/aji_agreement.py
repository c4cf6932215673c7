"""The project's AJI against the MoNuSeg organisers' MATLAB (ported in tests/aji_reference.py), per test image.

Predictions come from --labels-dir, a folder of predicted instance maps named <id>_labels.tif (as
`patchunet predict --out` writes them) or <id>.tif; without it, from the trained model (--model,
default models/patchunet.pt) with the `eval` params. Truth is the masks stage's label maps of the
test images (data/interim/test/labels: the official XML, rasterised). Prints, for each test image,
both AJIs and their absolute difference, then the largest difference.

    .venv/bin/python -m benchmarks.checks.aji_agreement
    .venv/bin/patchunet predict data/raw/monuseg/test/images/*.tif --model models/patchunet.pt --out predicted/
    .venv/bin/python -m benchmarks.checks.aji_agreement --labels-dir predicted/
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from benchmarks import ROOT, pipeline_images
from patchunet.core.paths import MODEL_FILE

LABEL_SUFFIXES = ("_labels.tif", ".tif")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels-dir", type=Path, help="predicted instance maps; without it, run --model")
    parser.add_argument("--model", type=Path, default=ROOT / MODEL_FILE)
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml", help="for the eval and patch sections")
    args = parser.parse_args()

    from patchunet.evaluation.metrics import score_segmentation
    from patchunet.io.images import read_label_image
    from tests.aji_reference import aggregated_jaccard_index

    images = pipeline_images("test")
    if args.labels_dir:
        predict = functools.partial(read_predicted, args.labels_dir)
    else:
        predict = model_predictor(args.model, args.params)
    largest = 0.0
    print(f"{'image':<26} {'project AJI':>12} {'MATLAB AJI':>12} {'|difference|':>13}")
    for image_id, image, labels in images:
        truth = read_label_image(labels)
        predicted = predict(image_id, image)
        project = score_segmentation(truth, predicted).as_dict()["aji"]
        reference = aggregated_jaccard_index(truth, predicted)
        difference = abs(project - reference)
        largest = max(largest, difference)
        print(f"{image_id:<26} {project:>12.9f} {reference:>12.9f} {difference:>13.3e}")
    print(f"max |difference| over {len(images)} images: {largest:.3e}")


def read_predicted(labels_dir: Path, image_id: str, image: Path):
    """The (H, W) predicted instance map of one test image from --labels-dir."""
    from patchunet.io.images import read_label_image

    for suffix in LABEL_SUFFIXES:
        path = labels_dir / f"{image_id}{suffix}"
        if path.is_file():
            return read_label_image(path)
    raise SystemExit(f"{labels_dir}: no {' or '.join(image_id + s for s in LABEL_SUFFIXES)}")


def model_predictor(model_file: Path, params_file: Path):
    """A function (id, image file) -> (H, W) predicted instance map, from the model and the `eval` params."""
    from patchunet.core.config import EvalConfig, PatchConfig, load_params, parse_section
    from patchunet.inference.sliding_window import segment_image
    from patchunet.io.images import read_rgb_image
    from patchunet.model.unet import load_model
    from patchunet.training.devices import pick_device

    if not model_file.is_file():
        raise SystemExit(f"{model_file}: no trained model; run `dvc repro`, or pass --labels-dir")
    params = load_params(params_file)
    cfg = parse_section(EvalConfig, params, "eval")
    model = load_model(model_file).to(pick_device())
    window = cfg.window_for(parse_section(PatchConfig, params, "patch").size, model.cfg.size_multiple)

    def predict(image_id: str, image: Path):
        return segment_image(model, read_rgb_image(image), cfg, window)[1]

    return predict


if __name__ == "__main__":
    main()
