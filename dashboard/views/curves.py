"""Curves: train/loss, val/loss and val/dice per epoch, the chosen versions' runs overlaid."""

from __future__ import annotations

import streamlit as st

import queries
import review
import widgets

cfg = queries.settings()
st.title("Training curves")
table = widgets.registered_versions_or_stop(cfg)
chosen = widgets.pick_versions(table, "Versions", key="curves_versions")
if not chosen:
    st.caption("Select one or more versions.")
    st.stop()
run_ids = table.set_index("version")["run_id"]
histories = {
    review.version_label(table, v): queries.metric_histories(cfg.tracking_uri, run_ids[v], review.CURVE_METRICS)
    for v in chosen
}
curves = review.curve_table(histories)
if curves.empty:
    st.info("These runs logged no per-epoch metrics.")
    st.stop()
st.plotly_chart(review.curves_figure(curves), key="curves")
st.caption("Epochs count from 0. val/dice is pooled over the validation patches, not whole images.")
