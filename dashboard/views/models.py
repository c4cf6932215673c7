"""Models: every registered version side by side, the best of each column highlighted."""

from __future__ import annotations

import streamlit as st

import queries
import review
import widgets

cfg = queries.settings()
st.title("Registered models")
table = widgets.registered_versions_or_stop(cfg)
st.caption(
    f"`{cfg.registered_model}` in `{cfg.tracking_uri}`. Scores are per-image means on the official test set; "
    "the best of each column is highlighted (lowest for parameters and seconds per image). Click a header to sort."
)
st.dataframe(
    review.highlight_best(table),
    hide_index=True,
    column_order=[c for c in table.columns if c != "run_id"],
    column_config={
        **{score: st.column_config.NumberColumn(score, format="%.4f") for score in review.SCORE_COLUMNS},
        "lr": st.column_config.NumberColumn("lr", format="%.1e"),
        "parameters": st.column_config.NumberColumn("parameters", format="localized"),
        **{
            column: st.column_config.NumberColumn(column, format="%d")
            for column in ("version", "patch", "width", "depth")
        },
        "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm"),
        "run": st.column_config.LinkColumn("run", display_text="open in MLflow"),
        "s/image": st.column_config.NumberColumn(
            "s/image", format="%.2f", help="median seconds of inference per 1000x1000 test image"
        ),
    },
)

chosen = widgets.pick_versions(table, "Compare versions", key="models_compare")
if len(chosen) >= 2:
    st.plotly_chart(review.comparison_figure(review.score_comparison(table, chosen)), key="comparison")
else:
    st.caption("Select two or more versions to compare their test scores side by side.")
