"""Studies: the Optuna trials of `patchunet tune`, as logged to its MLflow experiment."""

from __future__ import annotations

import streamlit as st

from patchunet.tracking import names

import queries
import review

cfg = queries.settings()
st.title("Tuning studies")
trials = queries.trials(cfg.tracking_uri, cfg.tune_experiment)
if trials.empty:
    st.info(
        f"No Optuna study is logged in the MLflow experiment `{cfg.tune_experiment}` yet. "
        "Run `dvc repro tune/dvc.yaml` (or `patchunet tune`) to start one."
    )
    st.stop()
study = st.selectbox("Study", sorted(trials["study"].unique()), key="studies_study")
chosen = trials[trials["study"] == study].drop(columns="study").dropna(axis="columns", how="all")
complete = chosen[chosen["state"] == "COMPLETE"]
st.caption(
    f"{len(chosen)} trials: {len(complete)} complete, {int((chosen['state'] == 'PRUNED').sum())} pruned. "
    "The value is each trial's best val Dice; a pruned trial's is where it was stopped."
)
history, space = st.columns(2)
with history:
    st.subheader("Optimisation history")
    st.plotly_chart(review.history_figure(review.optimisation_history(chosen)), key="history")
with space:
    st.subheader("Learning rate x patch size")
    if {names.LR_PARAM, names.PATCH_SIZE_PARAM} <= set(chosen.columns):
        st.plotly_chart(review.lr_patch_figure(chosen), key="lr_patch")
    else:
        st.caption(f"This study did not search both {names.LR_PARAM} and {names.PATCH_SIZE_PARAM}.")
st.dataframe(chosen, hide_index=True, column_config={names.LR_PARAM: st.column_config.NumberColumn(format="%.2e")})
