"""Page pieces every dashboard page shares: the empty-registry state, the version pickers, and the
notice for a version segmented without eval settings of its own."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from patchunet.tracking import names

import queries
import review


def registered_versions_or_stop(cfg: queries.Settings) -> pd.DataFrame:
    """The version table; with none registered, a page that says what to run, and nothing more."""
    table = queries.version_table(cfg.tracking_uri, cfg.registered_model, cfg.ui_url)
    if table.empty:
        st.info(
            f"No version of the model **{cfg.registered_model}** is registered in `{cfg.tracking_uri}` yet.\n\n"
            "Run `dvc repro` (or `patchunet train`, then `patchunet evaluate` and `patchunet register`) to train, "
            "evaluate and register one, then press **Refresh** in the sidebar."
        )
        st.stop()
    return table


def pick_versions(table: pd.DataFrame, label: str, key: str, limit: int | None = None) -> list[int]:
    """A version multiselect that remembers the choice across pages (widget state alone is per page)."""
    options = table["version"].tolist()
    remembered = [v for v in st.session_state.get("chosen_versions", options[:2]) if v in options][:limit]
    chosen = st.multiselect(
        label,
        options,
        default=remembered,
        format_func=lambda v: review.version_label(table, v),
        max_selections=limit,
        key=key,
    )
    st.session_state["chosen_versions"] = chosen
    return chosen


def champion_index(table: pd.DataFrame) -> int:
    """Row of the champion in `table`, else of the newest version."""
    holders = table.index[table["aliases"].str.split(", ").apply(lambda aliases: names.CHAMPION in aliases)]
    return int(holders[0]) if len(holders) else 0


def warn_unless_recorded(settings: queries.VersionEval, version: int) -> None:
    """A visible notice when version `version` recorded no eval settings of its own, so that its live
    segmentation used params.yaml's, which need not be those its scores came from."""
    if not settings.recorded:
        st.warning(
            f"Version {version} recorded no eval settings (registered before `register` logged them): "
            "segmented with the eval params of params.yaml, which may not be those its scores came from."
        )
