"""Tracking stores that cannot be used stop a stage at once, in one line: a real HTTP server on
127.0.0.1 that answers /health but fails every API call, and a URI of an unknown scheme."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from conftest import run_pipeline

LIMIT_S = 30
"""How long a stage may take to give up on such a server, Python's start included."""


class HealthyButFailing(http.server.BaseHTTPRequestHandler):
    """200 on /health, 503 on everything else: a server whose database or proxy is down."""

    def answer(self) -> None:
        healthy = self.path.startswith("/health")
        body = b"OK" if healthy else b"Service Unavailable"
        self.send_response(200 if healthy else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = answer

    def log_message(self, *args: object) -> None:  # quiet: pytest shows stderr of failures
        pass


@pytest.fixture
def failing_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HealthyButFailing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_training_against_a_server_that_fails_its_api_stops_in_one_line(train_project: Path, failing_server) -> None:
    started = time.monotonic()
    result = run_pipeline(train_project, "train", failing_server)
    assert time.monotonic() - started < LIMIT_S
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: MLflow tracking server {failing_server} answers /health but not its API")
    assert result.stderr.count("\n") == 1, result.stderr
    assert "epoch" not in result.stdout


def test_predict_against_a_server_that_fails_its_api_stops_in_one_line(stage_project: Path, failing_server) -> None:
    (stage_project / "mine.png").write_bytes(imagecodecs.png_encode(np.full((64, 64, 3), 200, np.uint8)))
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "patchunet", "predict", "mine.png", "--out", "out"],
        cwd=stage_project,
        env={**os.environ, "MLFLOW_TRACKING_URI": failing_server},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert time.monotonic() - started < LIMIT_S
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: MLflow tracking server {failing_server} answers /health but not its API")
    assert result.stderr.count("\n") == 1, result.stderr
    assert not (stage_project / "out").exists()


def test_a_tracking_uri_of_an_unknown_scheme_stops_training_in_one_line(train_project: Path) -> None:
    result = run_pipeline(train_project, "train", "foo://bar")
    assert result.returncode == 1
    assert result.stderr.startswith("error: MLflow store foo://bar: cannot be used (")
    assert result.stderr.count("\n") == 1, result.stderr
