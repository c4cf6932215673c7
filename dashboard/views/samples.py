"""Samples: one test image segmented by up to three versions, with truth and prediction outlined,
and, beside it, what each version's instance head predicted (boundary, distance or offsets)."""

from __future__ import annotations

import io

import numpy as np
import streamlit as st

from patchunet.core.errors import PatchUNetError
from patchunet.core.paths import RAW_DIR, labels_dir
from patchunet.evaluation.metrics import score_segmentation
from patchunet.evaluation.overlay import truth_and_prediction_overlay
from patchunet.io.images import read_label_image, read_rgb_image
from patchunet.tracking import names

import queries
import review
import widgets

IMAGE_DIR = RAW_DIR / "test" / "images"


@st.cache_data(max_entries=4, show_spinner=False)
def test_image(image_id: str) -> tuple[np.ndarray, np.ndarray]:
    """The official test image and its ground-truth instance map, from the DVC data folder."""
    return read_rgb_image(IMAGE_DIR / f"{image_id}.tif"), read_label_image(labels_dir("test") / f"{image_id}.tif")


cfg = queries.settings()
st.title("Sample segmentations")
table = widgets.registered_versions_or_stop(cfg)
image_ids = sorted(path.stem for path in IMAGE_DIR.glob("*.tif"))
if not image_ids:
    st.warning(f"No test images under `{IMAGE_DIR}`: run `dvc repro masks` to fetch them and build their labels.")
    st.stop()

picker, look = st.columns([3, 2])
with picker:
    image_id = st.selectbox("Test image", image_ids, key="samples_image")
    versions = widgets.pick_versions(table, "Versions (up to 3)", key="samples_versions", limit=3)
with look:
    opacity = st.slider("Contour opacity", 0.0, 1.0, 1.0, 0.1, key="samples_opacity")
    show_head = st.toggle("Show the instance head's map", key="samples_head", help="boundary, distance or offsets")
    zoom = st.select_slider("Zoom", [1, 2, 4, 8], value=1, key="samples_zoom", help="nuclei are small: zoom in")
    centre = (0.5, 0.5)
    if zoom > 1:
        down, right = st.columns(2)
        centre = (
            down.slider("Centre from the top (%)", 0, 100, 50, key="samples_y") / 100,
            right.slider("Centre from the left (%)", 0, 100, 50, key="samples_x") / 100,
        )
if not versions:
    st.caption("Select one or more versions.")
    st.stop()

image, truth = test_image(image_id)
rows, cols = review.zoom_region(truth.shape, zoom, centre)
st.caption("Green: ground truth. Yellow: prediction.")
run_ids = table.set_index("version")["run_id"]
for column, version in zip(st.columns(len(versions)), versions, strict=True):
    run_id = run_ids[version]
    with column:
        st.subheader(review.version_label(table, version))
        predicted = queries.logged_prediction(cfg.tracking_uri, run_id, image_id)
        logged_scores = queries.per_image_scores(cfg.tracking_uri, run_id)
        if predicted is not None and logged_scores is not None and image_id in logged_scores.index:
            scores, source = logged_scores.loc[image_id].to_dict(), "from the evaluation artifacts"
        else:
            with st.spinner(f"Segmenting {image_id} with version {version}..."):
                try:
                    live = queries.segment_upload(cfg, table, version, image)
                except PatchUNetError as exc:
                    st.error(str(exc))
                    continue
            widgets.warn_unless_recorded(live.settings, version)
            predicted, scores = live.labels, score_segmentation(truth, live.labels).as_dict()
            source = f"predicted live in {live.seconds:.1f} s with {live.settings.source}"
        st.image(
            truth_and_prediction_overlay(image[rows, cols], truth[rows, cols], predicted[rows, cols], opacity),
            width="stretch",
        )
        st.markdown(f"Dice **{scores['dice']:.4f}** · AJI **{scores['aji']:.4f}** · PQ **{scores['pq']:.4f}**")
        st.caption(f"Nuclei predicted: {int(predicted.max())}, {source}")
        if show_head:
            head_png = queries.artifact_bytes(cfg.tracking_uri, run_id, f"{names.SAMPLES_ARTIFACT}/{image_id}_head.png")
            if head_png is None:
                st.caption(
                    "No head map: this version predicts the foreground only, or this image was not a logged sample."
                )
            else:
                from PIL import Image

                head_map = np.asarray(Image.open(io.BytesIO(head_png)))
                same_size = head_map.shape[:2] == truth.shape  # HoVer-Net's two offset maps are side by side
                st.image(head_map[rows, cols] if same_size else head_map, width="stretch")
                st.caption(f"Instance head of version {version}: white is high (offsets: mid-grey is 0).")
