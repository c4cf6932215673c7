"""The Streamlit dashboard through streamlit.testing's AppTest, against a real SQLite MLflow store.

Two tiny models are trained, evaluated and registered by the real stage scripts; the app then
reads that store exactly as it reads mlflow.db in a checkout.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import REPO_ROOT, TEST_IDS, params_changed
from streamlit.testing.v1 import AppTest

APP = str(REPO_ROOT / "dashboard" / "app.py")
PAGES = ("views/models.py", "views/curves.py", "views/samples.py", "views/try_it.py", "views/studies.py")


def open_app(project: Path, uri: str, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return AppTest.from_file(APP, default_timeout=120).run()


def chart_traces(app: AppTest) -> list[dict]:
    """The traces of the page's one plotly chart, as sent to the browser, numeric arrays decoded."""
    (chart,) = app.get("plotly_chart")
    traces = json.loads(chart.proto.spec)["data"]
    for trace in traces:
        for axis in ("x", "y"):
            if isinstance(trace[axis], dict):  # plotly sends numbers as base64 typed arrays
                trace[axis] = np.frombuffer(base64.b64decode(trace[axis]["bdata"]), trace[axis]["dtype"]).tolist()
    return traces


def assert_no_exception(app: AppTest) -> None:
    assert not app.exception, [e.value for e in app.exception]


def test_every_page_renders(two_versions, monkeypatch: pytest.MonkeyPatch) -> None:
    app = open_app(*two_versions, monkeypatch)
    for page in PAGES:
        app.switch_page(page).run()
        assert_no_exception(app)
        assert not app.error, [e.value for e in app.error]
        assert app.title, page


def test_models_table_lists_both_versions_with_aliases_and_metrics(two_versions, monkeypatch) -> None:
    app = open_app(*two_versions, monkeypatch)
    assert_no_exception(app)
    table = app.dataframe[0].value
    assert table["version"].tolist() == [2, 1]
    assert table["aliases"].tolist() == ["challenger", "champion"]  # equal AJI: champion stays with v1
    for column in ("Dice", "IoU", "AJI", "AJI+", "PQ", "F1", "parameters", "s/image"):
        assert table[column].between(0, 1e7).all(), column  # every version evaluated: no missing value
    assert (table["Dice"] > 0).all() and (table["parameters"] > 1000).all()
    assert table["lr"].tolist() == [0.003, 0.01]
    assert all(link.startswith("http://127.0.0.1:5000/#/experiments/") for link in table["run"])


def test_selecting_two_versions_draws_the_comparison(two_versions, monkeypatch) -> None:
    app = open_app(*two_versions, monkeypatch)
    app.multiselect(key="models_compare").set_value([2]).run()
    assert not app.get("plotly_chart") and "two or more" in app.main.caption[-1].value
    app.multiselect(key="models_compare").set_value([1, 2]).run()
    assert_no_exception(app)
    bars = chart_traces(app)
    assert [bar["name"].split()[0] for bar in bars] == ["v1", "v2"]
    assert all(bar["x"] == ["Dice", "IoU", "AJI", "AJI+", "PQ", "F1"] for bar in bars)


def test_curves_overlay_the_chosen_runs(two_versions, monkeypatch) -> None:
    app = open_app(*two_versions, monkeypatch)
    app.switch_page("views/curves.py").run()
    lines = chart_traces(app)
    assert {line["name"].split()[0] for line in lines} == {"v1", "v2"}
    assert len(lines) == 6 and all(line["x"] == [0, 1] for line in lines)  # 3 metrics x 2 runs, 2 epochs


def test_samples_use_logged_predictions_else_predict_live(two_versions, monkeypatch) -> None:
    app = open_app(*two_versions, monkeypatch)
    app.switch_page("views/samples.py").run()
    assert "from the evaluation artifacts" in app.main.caption[-1].value  # eval.samples = 2: the first two images
    assert len(app.get("image")) == 2 and "AJI" in app.markdown[-1].value
    app.selectbox(key="samples_image").set_value(TEST_IDS[2]).run()
    assert_no_exception(app)
    assert "predicted live" in app.main.caption[-1].value
    pictures = [app.get("image")[0].value]
    app.slider(key="samples_opacity").set_value(0.5).run()
    pictures.append(app.get("image")[0].value)
    app.select_slider(key="samples_zoom").set_value(4).run()
    pictures.append(app.get("image")[0].value)
    assert_no_exception(app)
    assert len({tuple(urls) for urls in pictures}) == 3  # each control redrew the picture


def test_try_it_segments_an_upload_and_refuses_a_bad_file(two_versions, monkeypatch) -> None:
    project, uri = two_versions
    app = open_app(project, uri, monkeypatch)
    app.switch_page("views/try_it.py").run()
    assert "champion" in app.selectbox(key="try_version").format_func(app.selectbox(key="try_version").value)
    image = tifffile.imread(project / f"data/raw/monuseg/test/images/{TEST_IDS[0]}.tif")
    upload = project / "upload.tif"
    tifffile.imwrite(upload, image, photometric="rgb")
    app.get("file_uploader")[0].upload("mine.tif", upload.read_bytes(), "image/tiff")
    app.run()
    assert_no_exception(app)
    assert int(app.metric[0].value) > 0
    assert app.get("download_button")

    app.get("file_uploader")[0].set_value(("broken.png", b"not a png at all", "image/png"))
    app.run()
    assert_no_exception(app)
    assert app.error and "broken.png" in app.error[0].value

    tifffile.imwrite(upload, np.zeros((40, 40), np.uint8))
    app.get("file_uploader")[0].set_value(("gray.tif", upload.read_bytes(), "image/tiff"))
    app.run()
    assert "gray.tif: grayscale image" in app.error[0].value


def test_try_it_refuses_an_image_larger_than_the_limit(two_versions, monkeypatch) -> None:
    project, uri = two_versions
    with params_changed(project, dashboard={"max_image_side": 64}):
        app = open_app(project, uri, monkeypatch)
        app.switch_page("views/try_it.py").run()
        image = tifffile.imread(project / f"data/raw/monuseg/test/images/{TEST_IDS[0]}.tif")
        upload = project / "large.tif"
        tifffile.imwrite(upload, image, photometric="rgb")
        app.get("file_uploader")[0].upload("large.tif", upload.read_bytes(), "image/tiff").run()
    assert_no_exception(app)
    assert "large.tif: 100x100 px is larger than 64 px on a side" in app.error[0].value
    assert not app.metric


def test_studies_show_the_trials_of_a_real_study(two_versions, monkeypatch) -> None:
    app = open_app(*two_versions, monkeypatch)
    app.switch_page("views/studies.py").run()
    assert_no_exception(app)
    assert app.selectbox(key="studies_study").value == "patchunet-lr-patch"
    assert app.main.caption[0].value.startswith("2 trials")
    history, lr_patch = (json.loads(chart.proto.spec) for chart in app.get("plotly_chart"))
    assert history["layout"]["yaxis"]["title"]["text"] == "best val Dice of the trial"
    assert lr_patch["layout"]["xaxis"]["type"] == "log"
    trials = app.dataframe[0].value
    assert trials["trial"].tolist() == [0, 1] and trials["val dice"].between(0, 1).all()
    assert set(trials["patch.size"]) <= {16, 32}


def test_empty_registry_says_what_to_run(tmp_path: Path, monkeypatch) -> None:
    project = tmp_path / "empty"
    project.mkdir()
    (project / "params.yaml").write_text((REPO_ROOT / "params.yaml").read_text())
    uri = f"sqlite:///{project / 'mlflow.db'}"
    app = open_app(project, uri, monkeypatch)
    assert "There is no MLflow store" in app.warning[0].value and "dvc repro" in app.info[0].value
    assert not (project / "mlflow.db").exists()  # looking never creates a store

    from patchunet import tracking

    tracking.connect(uri)
    tracking.ensure_experiment("patchunet")
    app.button[0].click().run()  # Refresh
    assert_no_exception(app)
    assert "No version of the model **patchunet**" in app.info[0].value and "dvc repro" in app.info[0].value
    app.switch_page("views/studies.py").run()
    assert "No Optuna study" in app.info[0].value


def test_unreachable_server_is_a_friendly_page(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "params.yaml").write_text((REPO_ROOT / "params.yaml").read_text())
    app = open_app(tmp_path, "http://127.0.0.1:9", monkeypatch)
    assert_no_exception(app)
    assert "unreachable" in app.warning[0].value and "MLFLOW_TRACKING_URI" in app.info[0].value


def test_try_it_takes_uploads_with_long_or_path_like_names(two_versions, monkeypatch) -> None:
    """The browser's file name never becomes a path: 300 characters, `..` or folders are only shown, shortened."""
    import imagecodecs

    project, uri = two_versions
    app = open_app(project, uri, monkeypatch)
    app.switch_page("views/try_it.py").run()
    image = tifffile.imread(project / f"data/raw/monuseg/test/images/{TEST_IDS[0]}.tif")
    png = imagecodecs.png_encode(image)
    for name in ("n" * 300 + ".png", "../../etc/passwd.png", "..\\..\\inner.png", "...png"):
        app.get("file_uploader")[0].set_value((name, png, "image/png"))
        app.run()
        assert_no_exception(app)
        assert not app.error and int(app.metric[0].value) > 0, name
    app.get("file_uploader")[0].set_value(("n" * 300 + ".png", b"not a png", "image/png"))
    app.run()
    assert app.error[0].value.startswith("Cannot segment this file. " + "n" * 57 + "...: ")


def test_try_it_resamples_a_20x_upload_to_the_model_scale(two_versions, monkeypatch) -> None:
    project, uri = two_versions
    app = open_app(project, uri, monkeypatch)
    app.switch_page("views/try_it.py").run()
    assert app.selectbox(key="try_scale").value == "40x (0.25 µm/px)"  # the model's scale by default
    assert any("trained on images at 0.25 µm/px (40x)" in caption.value for caption in app.caption)
    image = tifffile.imread(project / f"data/raw/monuseg/test/images/{TEST_IDS[0]}.tif").astype(np.float32)
    at20x = np.round(image.reshape(50, 2, 50, 2, 3).mean(axis=(1, 3))).astype(np.uint8)
    upload = project / "at20x.tif"
    tifffile.imwrite(upload, at20x, photometric="rgb")
    app.get("file_uploader")[0].upload("at20x.tif", upload.read_bytes(), "image/tiff")
    app.run()
    assert any("50x50 px at 0.25 µm/px (40x), segmented" in caption.value for caption in app.caption)  # as 40x

    app.selectbox(key="try_scale").set_value("20x (0.5 µm/px)").run()
    assert_no_exception(app)
    assert not app.error
    assert any("50x50 px at 0.5 µm/px (20x), resampled to 100x100" in caption.value for caption in app.caption)
    at_20x_count = int(app.metric[0].value)

    app.selectbox(key="try_scale").set_value("other mpp").run()
    app.number_input(key="try_mpp").set_value(0.5).run()
    assert_no_exception(app)
    assert int(app.metric[0].value) == at_20x_count
