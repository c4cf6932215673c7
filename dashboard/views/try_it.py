"""Try it: segment your own H&E image with a registered version; download its instance mask.

The image's scale is asked for: an image at another scale than the model's is resampled to the
model's for segmenting, and its nuclei mapped back onto the image, as `patchunet predict --mpp` does.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import streamlit as st

from patchunet.core.errors import DataError, PatchUNetError
from patchunet.evaluation.overlay import prediction_overlay
from patchunet.io.images import read_rgb_bytes, write_label_tiff
from patchunet.io.scale import MAGNIFICATIONS, MAX_SCALE_RATIO, is_same_scale, resampled_shape, scale_label

import queries
import review
import widgets

SHOWN_NAME_CHARS = 60
SCALE_CHOICES = {f"{name} ({MAGNIFICATIONS[name]:g} µm/px)": MAGNIFICATIONS[name] for name in ("40x", "20x")}
OTHER_SCALE = "other mpp"


def shown_name(name: str) -> str:
    """The upload's file name for messages: no folders, at most SHOWN_NAME_CHARS characters."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1] or "upload"
    return name if len(name) <= SHOWN_NAME_CHARS else name[: SHOWN_NAME_CHARS - 3] + "..."


def read_upload(name: str, content: bytes, max_side: int) -> np.ndarray:
    """The uploaded image as RGB uint8, checked as `patchunet predict` checks its inputs; an image
    larger than `max_side` is refused from its header, before it is decoded. The browser's name
    (any length, `..`, slashes) appears in messages only."""
    return read_rgb_bytes(content, shown_name(name), max_side=max_side)


def scale_input(model_mpp: float) -> float:
    """The image's µm per pixel: 40x, 20x or a number; the model's scale by default."""
    choices = [*SCALE_CHOICES, OTHER_SCALE]
    model_choice = [label for label, mpp in SCALE_CHOICES.items() if is_same_scale(mpp, model_mpp)]
    choice = st.selectbox(
        "Image scale",
        choices,
        index=choices.index(model_choice[0] if model_choice else OTHER_SCALE),
        help="Magnification M means 10/M µm per pixel; a scanner's exact µm per pixel is in the slide's properties.",
        key="try_scale",
    )
    if choice != OTHER_SCALE:
        return SCALE_CHOICES[choice]
    return st.number_input(
        "µm per pixel",
        min_value=model_mpp / MAX_SCALE_RATIO,
        max_value=model_mpp * MAX_SCALE_RATIO,
        value=model_mpp,
        step=0.01,
        format="%.4f",
        key="try_mpp",
    )


def mask_tiff(labels: np.ndarray) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "labels.tif"
        write_label_tiff(path, labels)
        return path.read_bytes()


cfg = queries.settings()
st.title("Try a model on your image")
table = widgets.registered_versions_or_stop(cfg)
version = st.selectbox(
    "Model version",
    table["version"].tolist(),
    index=widgets.champion_index(table),
    format_func=lambda v: review.version_label(table, v),
    key="try_version",
)
try:
    model_mpp = queries.model_scale(cfg, version)
except PatchUNetError as exc:
    st.error(str(exc))
    st.stop()
image_mpp = scale_input(model_mpp)
st.caption(
    f"Version {version} was trained on images at {scale_label(model_mpp)}. An image at another scale is "
    "resampled to it for segmenting, and its nuclei are mapped back onto your image."
)
upload = st.file_uploader(
    "H&E image, RGB TIFF or PNG",
    type=["tif", "tiff", "png"],
    max_upload_size=cfg.dashboard.max_upload_mb,
    help=f"Up to {cfg.dashboard.max_upload_mb} MB and {cfg.dashboard.max_image_side} px on a side; "
    "MoNuSeg images are 1000x1000 at 40x.",
    key="try_upload",
)
if upload is None:
    st.caption("Upload an image to segment it. Nothing is written to disk or to MLflow.")
    st.stop()
try:
    image = read_upload(upload.name, upload.getvalue(), cfg.dashboard.max_image_side)
except DataError as exc:
    st.error(f"Cannot segment this file. {exc}")
    st.stop()
at_model_scale = resampled_shape(image.shape, image_mpp, model_mpp)
if max(at_model_scale) > cfg.dashboard.max_image_side:
    st.error(
        f"Cannot segment this file. {shown_name(upload.name)}: at the model's {model_mpp:g} µm/px it becomes "
        f"{at_model_scale[1]}x{at_model_scale[0]} px, larger than {cfg.dashboard.max_image_side} px on a side."
    )
    st.stop()

with st.spinner(f"Segmenting {shown_name(upload.name)} with version {version}..."):
    try:
        live = queries.segment_upload(cfg, table, version, image, image_mpp)
    except PatchUNetError as exc:
        st.error(str(exc))
        st.stop()
widgets.warn_unless_recorded(live.settings, version)
labels = live.labels
count = int(np.count_nonzero(np.unique(labels)))  # mapping back to a smaller image can drop an id
resampled = "" if is_same_scale(image_mpp, model_mpp) else f", resampled to {at_model_scale[1]}x{at_model_scale[0]}"
left, right = st.columns([1, 3])
left.metric("Nuclei", count)
left.caption(
    f"{image.shape[1]}x{image.shape[0]} px at {scale_label(image_mpp)}{resampled}, "
    f"segmented in {live.seconds:.1f} s by version {version} with {live.settings.source}"
)
left.download_button(
    "Download instance mask (TIFF)",
    data=mask_tiff(labels),
    file_name=f"{Path(shown_name(upload.name)).stem}_labels.tif",
    mime="image/tiff",
    on_click="ignore",
)
right.image(prediction_overlay(image, labels), caption=f"{count} nuclei outlined in yellow")
