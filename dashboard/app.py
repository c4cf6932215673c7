"""PatchUNet review dashboard: registered models, training curves, sample segmentations, live inference, studies.

Start it from the project folder with `patchunet dashboard` or `streamlit run dashboard/app.py`.
It reads MLflow only (the tracking URI follows params.yaml and MLFLOW_TRACKING_URI, as the DVC
stages do), plus the local test images on the Samples page.
"""

from __future__ import annotations

import streamlit as st

from patchunet.core.errors import PatchUNetError

import queries

st.set_page_config(page_title="PatchUNet review", page_icon=":microscope:", layout="wide")

PAGES = [
    st.Page("views/models.py", title="Models", icon=":material/leaderboard:", default=True),
    st.Page("views/curves.py", title="Curves", icon=":material/show_chart:"),
    st.Page("views/samples.py", title="Samples", icon=":material/biotech:"),
    st.Page("views/try_it.py", title="Try it", icon=":material/upload:"),
    st.Page("views/studies.py", title="Studies", icon=":material/tune:"),
]
navigation = st.navigation(PAGES)

try:
    cfg = queries.settings()
except PatchUNetError as exc:
    st.error(str(exc))
    st.stop()

with st.sidebar:
    st.caption(f"MLflow: `{cfg.tracking_uri}`")
    if st.button("Refresh", help=f"MLflow answers are reused for {queries.QUERY_TTL_S} s; read them again now"):
        st.cache_data.clear()

WHAT_TO_RUN = (
    "Run `dvc repro` in the project folder to train, evaluate and register a model into `mlflow.db`, "
    "or point `MLFLOW_TRACKING_URI` at a running server (`mlflow server --backend-store-uri sqlite:///mlflow.db`). "
    "Then press **Refresh** in the sidebar."
)


def unavailable(problem: str) -> None:
    st.title("PatchUNet review")
    st.warning(problem)
    st.info(WHAT_TO_RUN)


problem = queries.connection_problem(cfg.tracking_uri)
if problem:
    unavailable(problem)
    st.stop()
try:
    navigation.run()
except PatchUNetError as exc:  # e.g. tracking's TrackingError: the server went away since the last check
    st.cache_data.clear()
    unavailable(f"MLflow could not be read: {str(exc).splitlines()[0]}")  # the line names the store
