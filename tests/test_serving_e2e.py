"""`mlflow models serve -m models:/patchunet@champion`: a real server on loopback answers a real
MoNuSeg test image with the nuclei `patchunet predict` finds, and bad requests with a 400."""

from __future__ import annotations

import base64
import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import requests
import tifffile
from conftest import TEST_DIR, free_port, run_cli, wait_for_http

from patchunet.serving.requests import decoded_labels

pytestmark = pytest.mark.e2e
REAL_IMAGE = "TCGA-2Z-A9J9-01A-01-TS1.tif"


@pytest.fixture(scope="module")
def served(two_versions, tmp_path_factory: pytest.TempPathFactory):
    """(project, uri, invocations URL) of the champion served by `mlflow models serve`."""
    project, uri = two_versions
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/patchunet@champion"]
    with open(log, "w") as out:
        server = subprocess.Popen(
            [*command, "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            cwd=project,
            # MLflow starts `uvicorn` from PATH: the environment's bin, as when it is activated
            env={
                **os.environ,
                "MLFLOW_TRACKING_URI": uri,
                "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the server's worker processes go with it
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", server, log, timeout_s=180)
        yield project, uri, f"http://127.0.0.1:{port}/invocations"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def invoke(url: str, images: list[str], **params: float) -> requests.Response:
    body = {"dataframe_split": {"columns": ["image"], "data": [[image] for image in images]}}
    return requests.post(url, json={**body, "params": params} if params else body, timeout=300)


def test_a_served_real_image_gives_the_nuclei_predict_finds(served, real_monuseg: Path, tmp_path: Path) -> None:
    project, uri, url = served
    path = real_monuseg / TEST_DIR / REAL_IMAGE
    answer = invoke(url, [base64.b64encode(path.read_bytes()).decode()])
    assert answer.status_code == 200, answer.text
    [prediction] = answer.json()["predictions"]

    out = tmp_path / "out"
    result = run_cli(project, uri, "predict", str(path), "--model", "models:/patchunet@champion", "--out", str(out))
    assert result.returncode == 0, result.stderr
    expected = tifffile.imread(out / f"{path.stem}_labels.tif")
    assert expected.max() > 0  # nuclei found, so the comparison means something
    np.testing.assert_array_equal(decoded_labels(prediction["labels"]), expected)
    with (out / f"{path.stem}_nuclei.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(prediction["nuclei"]) == len(rows) == expected.max()
    assert [{key: str(value) for key, value in row.items()} for row in prediction["nuclei"]] == rows


@pytest.mark.parametrize(
    ("image", "params", "reason"),
    [
        (base64.b64encode(b"just some text").decode(), {}, "image 0: corrupt or truncated image, or not an image"),
        (base64.b64encode(imagecodecs.png_encode(np.zeros((30, 30), np.uint8))).decode(), {}, "image 0: grayscale"),
        (
            base64.b64encode(imagecodecs.png_encode(np.zeros((8, 4001, 3), np.uint8))).decode(),
            {},
            "image 0: 4001x8 px is larger than 4000 px on a side",
        ),
        ("not base64!", {}, "image 0: not base64 of a PNG or TIFF image"),
        (base64.b64encode(imagecodecs.png_encode(np.zeros((30, 30, 3), np.uint8))).decode(), {"mpp": -1.0}, "mpp"),
    ],
    ids=["not an image", "grayscale", "too large", "not base64", "bad mpp"],
)
def test_a_bad_request_gets_a_400_with_its_reason_and_the_server_stays_up(served, image, params, reason) -> None:
    _, _, url = served
    answer = invoke(url, [image], **params)
    assert answer.status_code == 400, answer.text
    assert reason in answer.json()["message"].splitlines()[-1]
    small = base64.b64encode(imagecodecs.png_encode(np.full((40, 40, 3), 200, np.uint8))).decode()
    assert invoke(url, [small]).status_code == 200  # still serving


def test_the_registered_models_own_serving_example_gets_nuclei(served) -> None:
    """`register` logs an input example: MLflow's own serving example of it must be a request the
    served model answers (it was refused: "expected a table with an 'image' column"). MLflow resolves
    `models:/` by the global tracking URI alone: set for the download, and put back for later tests."""
    import mlflow.artifacts

    _, uri, url = served
    before = mlflow.get_tracking_uri() if mlflow.tracking.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri="models:/patchunet@champion"))
    finally:
        mlflow.set_tracking_uri(before)
    assert (mlflow.get_tracking_uri() if mlflow.tracking.is_tracking_uri_set() else None) == before
    example = (folder / "serving_input_example.json").read_text()
    answer = requests.post(url, data=example, headers={"Content-Type": "application/json"}, timeout=300)
    assert answer.status_code == 200, answer.text
    assert all(isinstance(prediction["nuclei"], list) for prediction in answer.json()["predictions"])
