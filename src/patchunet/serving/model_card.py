"""The model card: the Markdown description a registered model and each version carry.

MLflow shows it on the model's and the version's pages; `register` writes it from what the
training run logged and what `evaluate` measured, so a reviewer reads there what the model is
without opening the repository.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from patchunet.tracking import names
from patchunet.tracking.records import RunSummary

HEAD_WORDS = {
    "none": "foreground only (touching nuclei split by a watershed on the distance transform)",
    "boundary": "foreground and nucleus boundaries",
    "distance": "foreground and the normalised distance to the background",
    "hover": "foreground and HoVer-Net's horizontal and vertical offsets",
}
TRAINING_PARAMS = ("train.epochs", "train.batch_size", "train.lr", "patch.size", "model.base_channels", "model.depth")


def model_description(name: str) -> str:
    """The registered model's own description: what every version of it does and how to use it."""
    return (
        f"# {name}\n\n"
        "Nuclei instance segmentation of H&E histopathology images (PatchUNet, a lightweight U-Net). "
        "Each version takes RGB images and returns an instance label map (0 = background, one id per "
        "nucleus) and a table of nuclei (id, area, centroid, bounding box, mean probability).\n\n"
        f"{usage(f'models:/{name}@champion')}\n"
        "Each version's description gives its data, training, scores and settings."
    )


def version_description(
    name: str,
    version: int,
    run: RunSummary,
    test_scores: Mapping[str, float],
    eval_settings: Mapping[str, Any],
    window: int,
) -> str:
    """Version `version`'s card, from its training run and its test scores (per-image means)."""
    params, metrics = run.params, run.metrics
    head = params.get(names.INSTANCE_HEAD_PARAM, "none")
    mpp = params.get(names.MICRONS_PER_PIXEL_PARAM) or params.get(names.OLD_MICRONS_PER_PIXEL_PARAM)
    training = ", ".join(f"{key} {params[key]}" for key in TRAINING_PARAMS if key in params)
    nan = float("nan")
    val = f"Dice {metrics.get(names.BEST_VAL_DICE, nan):.4f}, IoU {metrics.get(names.BEST_VAL_IOU, nan):.4f}"
    test = ", ".join(f"{key.upper()} {test_scores[key]:.4f}" for key in ("aji", "pq", "dice") if key in test_scores)
    post = ", ".join(
        f"{key} {eval_settings[key]}"
        for key in ("threshold", "min_nucleus_area", "watershed_h", "overlap", "tta", "backend", "precision")
        if key in eval_settings
    )
    return (
        f"# {name} v{version}\n\n"
        f"**Segments** nuclei in H&E images at {scale_words(mpp)}; other scales are resampled to it "
        f"(param `mpp`).\n\n"
        f"**Heads:** {HEAD_WORDS.get(head, head)}.\n\n"
        f"**Data:** {data_words(params)}\n\n"
        f"**Training:** {training}; best epoch {metrics.get(names.BEST_EPOCH, nan):.0f}; "
        f"run `{run.run_id}`, git commit `{run.tags.get(names.GIT_COMMIT, '?')}`, "
        f"DVC data `{run.tags.get(names.DVC_DATA_HASH, '?')}`.\n\n"
        f"**Scores:** validation (patches) {val}; test (whole images, per-image means) {test}.\n\n"
        f"**Inference:** sliding windows of {window} px; {post}.\n\n"
        f"{usage(f'models:/{name}/{version}')}"
    )


def data_words(params: Mapping[str, str]) -> str:
    """What the run trained on: MoNuSeg's training images, or your own (a run that logged no layout is
    older than your own images, so MoNuSeg's), and which images gave the test scores."""
    own = params.get(names.DATA_LAYOUT_PARAM) == "generic"
    images = "Your own images (`fetch`'s generic layout)" if own else "MoNuSeg 2018 training images"
    test = "The images named in its test.txt" if own else "The official test set (14 images)"
    return (
        f"{images}, split by image into train and validation (val fraction {params.get('split.val_fraction', '?')}, "
        f"seed {params.get('split.seed', '?')}, stratified by organ: {params.get('split.stratify_by_organ', '?')}); "
        f"{params.get('dataset.train_patches', '?')} train and {params.get('dataset.val_patches', '?')} val patches. "
        f"{test} gave the test scores only."
    )


def scale_words(mpp: str | None) -> str:
    """ "0.25 µm per pixel (40x)": a logged scale, with its magnification where it is one of MAGNIFICATIONS."""
    from patchunet.io.scale import MAGNIFICATIONS, is_same_scale

    if mpp is None:
        return "? µm per pixel"
    known = [name for name, value in MAGNIFICATIONS.items() if is_same_scale(float(mpp), value)]
    return f"{mpp} µm per pixel" + (f" ({known[0]})" if known else "")


def usage(model_uri: str) -> str:
    return (
        "```python\n"
        f'model = mlflow.pyfunc.load_model("{model_uri}")\n'
        'labels = model.predict(pd.DataFrame({"image": [rgb_array]}))[0]["labels"]  # params={"mpp": 0.5} at 20x\n'
        "```\n"
    )
