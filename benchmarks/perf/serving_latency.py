"""Latency of the served model: one `/invocations` request for a 1000x1000 MoNuSeg test image.

Starts `mlflow models serve -m MODEL --env-manager local` on a free loopback port against the
project's store (MLFLOW_TRACKING_URI, else sqlite:///mlflow.db), sends the same real test image
(its TIFF bytes in base64, as a client sends them) `--requests` times after one warm-up, and
prints the median and range of the request's wall time; then the served model's own work on the
same image in this process (decode, segment, table, encode), for what HTTP and JSON add. Stops
the server whatever happens.

    .venv/bin/python -m benchmarks.perf.serving_latency --requests 7
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import requests

from benchmarks import ROOT, pipeline_images
from patchunet.stack import free_port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models:/patchunet@champion")
    parser.add_argument("--requests", type=int, default=7)
    args = parser.parse_args()
    uri = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{ROOT / 'mlflow.db'}")
    image = pipeline_images("test")[0][1]
    body = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(image.read_bytes()).decode()]]}}

    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="patchunet-serve-")) / "serve.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", args.model, "--env-manager", "local"]
    with open(log, "w") as out:
        server = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        started = time.perf_counter()
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.perf_counter() - started > 300:
                    raise SystemExit(f"the server did not start:\n{log.read_text()[-3000:]}") from None
                time.sleep(0.5)
        ready = time.perf_counter() - started
        print(f"{args.model} served in {ready:.1f} s; {image.name}, {image.stat().st_size:,} bytes")
        url = f"http://127.0.0.1:{port}/invocations"
        seconds = []
        for n in range(args.requests + 1):
            started = time.perf_counter()
            answer = requests.post(url, json=body, timeout=300)
            answer.raise_for_status()
            if n:  # the first is a warm-up
                seconds.append(time.perf_counter() - started)
        nuclei = len(answer.json()["predictions"][0]["nuclei"])
        print(
            f"/invocations: median {statistics.median(seconds):.3f} s (min {min(seconds):.3f}, max {max(seconds):.3f}) "
            f"over {len(seconds)} requests; {nuclei} nuclei, answer {len(answer.content):,} bytes"
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)

    # the same work in this process, as the served model does it (served_nuclei.py)
    from patchunet import tracking
    from patchunet.core.config import EvalConfig, PatchConfig, load_params, parse_section
    from patchunet.inference.nuclei import segment_nuclei
    from patchunet.inference.runtimes import runtime_network
    from patchunet.io.images import read_rgb_image
    from patchunet.postprocess.nuclei import nucleus_table
    from patchunet.serving.requests import encoded_labels

    params = load_params(ROOT / "params.yaml")
    cfg = parse_section(EvalConfig, params, "eval")
    tracking.connect(uri)
    model = tracking.load_logged_model(args.model)
    network = runtime_network(model, cfg)
    window = cfg.window_for(parse_section(PatchConfig, params, "patch").size, model.cfg.size_multiple)
    seconds = []
    for _ in range(args.requests + 1):
        started = time.perf_counter()
        pixels = read_rgb_image(image)
        labels, probabilities = segment_nuclei(network, pixels, cfg, window, model.cfg.microns_per_pixel)
        nucleus_table(labels, model.cfg.microns_per_pixel, probabilities)
        encoded_labels(labels)
        seconds.append(time.perf_counter() - started)
    print(f"the same in this process ({cfg.backend} {cfg.precision}): median {statistics.median(seconds[1:]):.3f} s")


if __name__ == "__main__":
    main()
