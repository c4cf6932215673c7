"""The dashboard in a real browser: `streamlit run` on a loopback port, driven by Playwright in Debian's Chromium.

Also a script, which makes the docs' screenshots and timings from this checkout's own MLflow store:

    .venv/bin/python tests/test_dashboard_e2e.py --upload "$MONUSEG_DIR/MoNuSegTestData/TCGA-2Z-A9J9-01A-01-TS1.tif"
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import REPO_ROOT, TEST_DIR, free_port, wait_for_http

from patchunet.cli import dashboard_command

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",  # and no calls home, which this machine's closed network refuses
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGES = {"Models": "Registered models", "Curves": "Training curves", "Samples": "Sample segmentations"}
PAGES |= {"Try it": "Try a model on your image", "Studies": "Tuning studies"}
"""Sidebar link -> the page's title."""
RENDER_TIMEOUT_MS = 180_000


@contextmanager
def dashboard(project: Path, tracking_uri: str, log: Path) -> Iterator[str]:
    """`streamlit run dashboard/app.py` in `project` on a free loopback port, as `patchunet dashboard`
    starts it; yields its URL."""
    port = free_port()
    command = dashboard_command(REPO_ROOT, port, "127.0.0.1", ["--server.headless=true"], max_upload_mb=20)
    with log.open("w") as output:
        server = subprocess.Popen(
            command, cwd=project, env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}, stdout=output, stderr=output
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/_stcore/health", server, log)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def browse(url: str, upload: Path, screenshots: Path) -> dict[str, float]:
    """Open every page, upload `upload` on Try it, screenshot each page; returns the timings in seconds.

    Fails on a page that shows a Python exception or never shows its title.
    """
    from playwright.sync_api import expect, sync_playwright

    screenshots.mkdir(parents=True, exist_ok=True)
    timings = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.set_default_timeout(RENDER_TIMEOUT_MS)
        expect.set_options(timeout=RENDER_TIMEOUT_MS)
        started = time.perf_counter()
        page.goto(url)  # the Models page; the others through the sidebar, as a user moves between them
        for link, title in PAGES.items():
            if link != "Models":
                started = time.perf_counter()
                page.get_by_role("link", name=link).click()
            expect(page.get_by_role("heading", name=title)).to_be_visible()
            if link == "Models":
                expect(page.locator('[data-testid="stDataFrame"]')).to_be_visible()
                expect(page.locator(".js-plotly-plot").first).to_be_visible()  # two versions compared
                timings["models_first_render_s"] = time.perf_counter() - started
            if link == "Samples":
                expect(page.locator('[data-testid="stImage"]').first).to_be_visible()
            if link == "Studies":
                expect(page.locator(".js-plotly-plot").nth(1)).to_be_visible()
            if link == "Try it":
                started = time.perf_counter()
                page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(upload)
                expect(page.locator('[data-testid="stMetricValue"]')).to_be_visible()
                expect(page.get_by_text("nuclei outlined")).to_be_visible()
                timings["try_it_upload_to_overlay_s"] = time.perf_counter() - started
                expect(page.locator('[data-testid="stImage"] img')).to_be_visible()
                count = int(page.locator('[data-testid="stMetricValue"]').inner_text().replace(",", ""))
                assert count > 0, "Try it showed no nuclei"
                timings["try_it_nuclei"] = count
            page.wait_for_timeout(500)  # let charts finish drawing before the picture
            assert page.locator('[data-testid="stException"]').count() == 0, f"{link}: the page shows an exception"
            page.screenshot(path=str(screenshots / f"{link.lower().replace(' ', '_')}.png"))
        browser.close()
    return timings


@pytest.mark.e2e
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it)")
def test_every_page_in_a_real_browser_and_a_real_upload(two_versions, real_monuseg: Path, tmp_path: Path) -> None:
    project, uri = two_versions
    upload = sorted((real_monuseg / TEST_DIR).glob("*.tif"))[0]
    with dashboard(project, uri, tmp_path / "streamlit.log") as url:
        timings = browse(url, upload, tmp_path / "screenshots")
    print(f"dashboard timings (tiny test models): {timings}")
    assert len(list((tmp_path / "screenshots").glob("*.png"))) == len(PAGES)
    assert "Traceback" not in (tmp_path / "streamlit.log").read_text()


def test_upload_limit_in_config_toml_is_params_yaml_max_upload_mb() -> None:
    import tomllib

    import yaml

    config = tomllib.loads((REPO_ROOT / ".streamlit" / "config.toml").read_text())
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    assert config["server"]["maxUploadSize"] == params["dashboard"]["max_upload_mb"]


@contextmanager
def browser_session(url: str) -> Iterator[str]:
    """A session on the server, open while the block runs, as a browser tab opens one (a script run
    over the websocket); yields its id."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    from websockets.sync.client import connect

    with connect(f"{url.replace('http', 'ws', 1)}/_stcore/stream", subprotocols=["streamlit"]) as socket:
        rerun = BackMsg()
        rerun.rerun_script.query_string = ""
        socket.send(rerun.SerializeToString())
        message = ForwardMsg()
        while message.WhichOneof("type") != "new_session":
            message.ParseFromString(socket.recv(timeout=60))
        yield message.new_session.initialize.session_id


def test_streamlit_run_listens_on_loopback_only_and_refuses_uploads_over_the_limit(tmp_path: Path) -> None:
    """Plain `streamlit run dashboard/app.py`, no flags: .streamlit/config.toml binds 127.0.0.1 and
    makes the server itself answer 413 to an upload over dashboard.max_upload_mb."""
    import psutil
    import requests

    port = free_port()
    log = tmp_path / "streamlit.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    command = ["streamlit", "run", "dashboard/app.py", f"--server.port={port}", "--server.headless=true"]
    with log.open("w") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", *command], cwd=REPO_ROOT, env=env, stdout=output, stderr=output
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/_stcore/health", server, log)
        listening = [c.laddr for c in psutil.Process(server.pid).net_connections("inet") if c.status == "LISTEN"]
        assert listening == [("127.0.0.1", port)]

        http = requests.Session()
        http.get(f"{url}/_stcore/health", timeout=10)  # sets the XSRF cookie that uploads must echo
        headers = {"X-Xsrftoken": http.cookies["_streamlit_xsrf"]}
        limit = 20 * 2**20
        with browser_session(url) as session:
            answers = {
                size: http.put(
                    f"{url}/_stcore/upload_file/{session}/file{size}",
                    files={"file": ("image.png", bytes(size), "image/png")},
                    headers=headers,
                    timeout=60,
                ).status_code
                for size in (1000, limit + 1)
            }
        assert answers == {1000: 204, limit + 1: 413}
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description="Screenshots and timings of the dashboard on this checkout's store")
    parser.add_argument("--upload", type=Path, required=True, help="image to segment on the Try-it page")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "dashboard")
    args = parser.parse_args()
    uri = os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    with tempfile.TemporaryDirectory() as folder, dashboard(REPO_ROOT, uri, Path(folder) / "streamlit.log") as url:
        timings = browse(url, args.upload.resolve(), args.out)
    for name, value in timings.items():
        print(f"{name}: {value:.2f}" if isinstance(value, float) else f"{name}: {value}")


if __name__ == "__main__":
    main()
