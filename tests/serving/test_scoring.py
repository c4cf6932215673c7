"""`patchunet serve`: the registered nuclei model behind a real scoring server on loopback; its own
serving example answered with nuclei, and every bad or hostile request with one line: no stack
trace, no echo of the request, nothing past the `serve` limits computed."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import signal
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import requests
import tifffile
import yaml
from conftest import REPO_ROOT, free_port, wait_for_http

from patchunet import tracking
from patchunet.core.config import ServeConfig
from patchunet.serving.scoring import max_request_bytes

pytestmark = pytest.mark.e2e
SERVE = {"max_image_side": 256, "max_images": 2}


def png_base64(height: int, width: int) -> str:
    return base64.b64encode(imagecodecs.png_encode(np.full((height, width, 3), 200, np.uint8))).decode()


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """(tracking URI, model URI, what logging printed): the nuclei model of a tiny network, registered."""
    folder = tmp_path_factory.mktemp("scoring")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    settings = {**yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["eval"], "backend": "torch"}
    settings["precision"] = "fp32"
    log = folder / "log.txt"
    script = f"""
from conftest import tiny_network
from patchunet import tracking
from patchunet.serving.nuclei_model import log_nuclei_model

tracking.connect({uri!r})
with tracking.run("serve") as active:
    pass
model_uri = log_nuclei_model(active.run_id, tiny_network(), {settings!r}, 128, {SERVE!r})
tracking.register_model(model_uri, "nuclei", tags={{}})
print("MODEL", model_uri)
"""
    with open(log, "w") as out:  # a process of its own, so that everything MLflow prints is caught
        inherited = os.environ.get("PYTHONPATH", "")  # conftest's helpers beside any path already set
        done = subprocess.run(
            [sys.executable, "-c", script],
            cwd=folder,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "tests"), inherited])},
            timeout=600,
        )
    printed = log.read_text()
    assert done.returncode == 0, printed
    return uri, printed.split("MODEL ")[-1].strip(), printed


@pytest.fixture(scope="module")
def served(logged, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The invocations URL of `patchunet serve` of the registered model, stopped however the tests end."""
    uri, _, _ = logged
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [sys.executable, "-m", "patchunet", "serve", "-m", "models:/nuclei/1", "--port", str(port)]
    with open(log, "w") as out:
        server = subprocess.Popen(
            command,
            env={**os.environ, "MLFLOW_TRACKING_URI": uri},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", server, log, timeout_s=180)
        yield f"http://127.0.0.1:{port}/invocations"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_logging_the_model_validates_its_own_input_example_without_a_traceback(logged) -> None:
    _, _, printed = logged
    assert "Traceback" not in printed and "Failed to validate" not in printed, printed


def test_the_models_own_serving_example_gets_nuclei_from_the_server(logged, served) -> None:
    import mlflow.artifacts

    uri, model_uri, _ = logged
    tracking.connect(uri)
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    example = (folder / "serving_input_example.json").read_text()
    answer = requests.post(served, data=example, headers={"Content-Type": "application/json"}, timeout=120)
    assert answer.status_code == 200, answer.text
    [prediction] = answer.json()["predictions"]
    assert isinstance(prediction["nuclei"], list) and prediction["microns_per_pixel"] == 0.25


def test_images_as_a_dict_of_columns_are_served_too(served) -> None:
    answer = requests.post(served, json={"inputs": {"image": [png_base64(40, 40)]}}, timeout=120)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == 1


JUNK = base64.b64encode(os.urandom(270_000)).decode()  # 360 kB of base64 that is no image
HOSTILE = {
    "csv": ("text/csv", b"image\nabc\n", 415, "Content-Type text/csv: send application/json"),
    "malformed json": ("application/json", b'{"dataframe_split": {', 400, "request body: not valid JSON"),
    "empty body": ("application/json", b"", 400, "request body: not valid JSON"),
    "not utf-8": ("application/json", b"\xff\xfe{", 400, "request body: not UTF-8"),
    "a list": ("application/json", b"[1, 2]", 400, "request body: a JSON list; expected an object"),
    "no image column": (
        "application/json",
        json.dumps({"dataframe_split": {"columns": ["x"], "data": [[1]]}}).encode(),
        400,
        "Model is missing inputs ['image']",
    ),
    "junk image as inputs": (
        "application/json",
        json.dumps({"inputs": {"image": [JUNK]}}).encode(),
        400,
        "image 0: corrupt or truncated image",
    ),
    "unknown param": (
        "application/json",
        json.dumps({"inputs": {"image": [png_base64(8, 8)]}, "params": {"foo": 1}}).encode(),
        400,
        "params foo: unknown; the model takes mpp",
    ),
    "params not an object": (
        "application/json",
        json.dumps({"inputs": {"image": [png_base64(8, 8)]}, "params": [1]}).encode(),
        400,
        "params: a JSON list; expected an object",
    ),
    "too many images": (
        "application/json",
        json.dumps({"inputs": {"image": [png_base64(8, 8)] * 3}}).encode(),
        400,
        "3 images in one request; at most 2 (serve.max_images)",
    ),
    "too large once resampled": (
        "application/json",
        json.dumps({"inputs": {"image": [png_base64(8, 200)]}, "params": {"mpp": 0.5}}).encode(),
        400,
        "200x8 px is larger than 128 px on a side",
    ),
    "too large as sent": (
        "application/json",
        json.dumps({"inputs": {"image": [png_base64(8, 257)]}}).encode(),
        400,
        "image 0: 257x8 px is larger than 256 px on a side",
    ),
}


@pytest.mark.parametrize(("content_type", "body", "status", "reason"), HOSTILE.values(), ids=HOSTILE.keys())
def test_a_bad_request_gets_one_line_without_trace_or_echo_and_the_server_stays_up(
    served, content_type: str, body: bytes, status: int, reason: str
) -> None:
    answer = requests.post(served, data=body, headers={"Content-Type": content_type}, timeout=120)
    assert answer.status_code == status, answer.text
    message = answer.json()["message"]
    assert reason in message and "\n" not in message, message
    assert len(answer.content) < 1000 and "Traceback" not in answer.text and ".py" not in answer.text
    assert set(answer.json()) == {"error_code", "message"}  # no stack_trace
    assert requests.post(served, json={"inputs": {"image": [png_base64(40, 40)]}}, timeout=120).status_code == 200


def test_the_request_cap_holds_the_largest_request_the_model_takes() -> None:
    """`serve.max_images` uncompressed TIFFs of `serve.max_image_side` px of noise, in base64: the
    largest images the model takes, and the least compressible."""
    serve = ServeConfig(**SERVE)
    noise = np.random.default_rng(0).integers(0, 256, (SERVE["max_image_side"],) * 2 + (3,), np.uint8)
    image = io.BytesIO()
    tifffile.imwrite(image, noise)
    images = [base64.b64encode(image.getvalue()).decode()] * SERVE["max_images"]
    rows = [[encoded] for encoded in images]
    body = json.dumps({"dataframe_split": {"columns": ["image"], "data": rows}, "params": {"mpp": 0.25}})
    assert len(body) <= max_request_bytes(serve)


def post_headers(url: str, headers: dict[str, str]) -> http.client.HTTPConnection:
    """A connection that has sent a POST's headers to `url`, and no body yet."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.putrequest("POST", parts.path)
    for name, value in {"Content-Type": "application/json", **headers}.items():
        connection.putheader(name, value)
    connection.endheaders()
    return connection


def assert_refused_as_too_large(connection: http.client.HTTPConnection) -> None:
    """The server answers 413 in one line, though the body has not all come (else: a timeout here)."""
    try:
        answer = connection.getresponse()
        status, message = answer.status, json.loads(answer.read())["message"]
    finally:
        connection.close()
    assert status == 413 and "request body: over" in message and "\n" not in message, message


def test_a_body_whose_length_is_over_the_cap_is_refused_before_it_is_read(served) -> None:
    cap = max_request_bytes(ServeConfig(**SERVE))
    assert_refused_as_too_large(post_headers(served, {"Content-Length": str(cap + 1)}))
    assert requests.post(served, json={"inputs": {"image": [png_base64(40, 40)]}}, timeout=120).status_code == 200


def test_a_chunked_body_is_no_longer_read_once_it_passes_the_cap(served) -> None:
    cap = max_request_bytes(ServeConfig(**SERVE))
    connection = post_headers(served, {"Transfer-Encoding": "chunked"})
    chunk = b" " * 65536
    for _ in range(cap // len(chunk) + 1):  # just past the cap, and never the closing empty chunk
        connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    assert_refused_as_too_large(connection)
    assert requests.post(served, json={"inputs": {"image": [png_base64(40, 40)]}}, timeout=120).status_code == 200
