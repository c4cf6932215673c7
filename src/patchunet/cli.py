"""The `patchunet` command: one subcommand per DVC stage, plus `predict`, `predict-slide`,
`dashboard`, `stack` and `serve`.

Stage subcommands become the project's own `pipelines/<stage>.py` (the same script `dvc repro`
runs) in the checkout they are called in, so a stage has exactly one implementation; they exec it,
so a signal to `patchunet train` reaches the trainer itself. This module imports nothing heavy, so
`patchunet --help` answers at once.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from patchunet.core.console import run_stage
from patchunet.core.errors import PatchUNetError

STAGES = {
    "source": "list the source's files (path, size, SHA-256) in data/source.json; fetch reruns when they change",
    "fetch": "copy MoNuSeg (folder, zips or download) or your own images into data/raw/monuseg, every pair checked",
    "masks": "rasterise XML polygons (or take instance maps) into data/interim/*/labels",
    "split": "split the training images by image, stratified by organ, into data/interim/split.json",
    "patches": "tile train/val images into patches plus augmented copies in data/processed/patches",
    "train": "train PatchUNet on the patches, log the run and its model to MLflow (--resume; --nproc N: DDP)",
    "evaluate": "segment every test image whole, score Dice/IoU/AJI/PQ/F1, log them to the training run",
    "register": "register the evaluated model: challenger, and champion if its test AJI beats the champion's",
    "tune": "Optuna study over tune.space (lr, patch size), resumable, --workers N; best params to reports/tune",
}


def find_project_root(start: Path) -> Path:
    """The nearest folder at or above `start` holding dvc.yaml and pipelines/."""
    for folder in (start, *start.parents):
        if (folder / "dvc.yaml").is_file() and (folder / "pipelines").is_dir():
            return folder
    raise PatchUNetError(f"{start}: not inside a PatchUNet checkout (no dvc.yaml with pipelines/ found above)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patchunet",
        description="PatchUNet: nuclei segmentation on MoNuSeg, tracked with DVC and MLflow. "
        "Stage commands run pipelines/<stage>.py in this checkout; `dvc repro` runs them all.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, summary in STAGES.items():
        # add_help=False: `patchunet fetch -h` reaches the stage script, which knows its options
        stage_parser = sub.add_parser(name, help=summary, description=summary, add_help=False)
        if name == "train":
            stage_parser.add_argument("--nproc", type=int, default=1, help=argparse.SUPPRESS)
    from patchunet.inference import predict

    predict_parser = sub.add_parser(
        "predict", help="segment your own images: instance-label TIFF, overlay PNG and nucleus CSV per image"
    )
    predict_parser.description = predict.__doc__
    predict_parser.formatter_class = argparse.RawDescriptionHelpFormatter
    predict.add_arguments(predict_parser)
    from patchunet.inference import predict_slide

    slide_parser = sub.add_parser(
        "predict-slide",
        help="segment whole slides (SVS, NDPI, pyramidal TIFF): QuPath GeoJSON, nucleus CSV and overview PNG",
    )
    slide_parser.description = predict_slide.__doc__
    slide_parser.formatter_class = argparse.RawDescriptionHelpFormatter
    predict_slide.add_arguments(slide_parser)
    dashboard_parser = sub.add_parser(
        "dashboard",
        help="start the Streamlit review app (dashboard/app.py) on this checkout's MLflow store",
        description="Runs `streamlit run dashboard/app.py` from the project root. Extra arguments go to "
        "streamlit, e.g. `patchunet dashboard --server.headless true`.",
    )
    dashboard_parser.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    dashboard_parser.add_argument("--address", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    stack_parser = sub.add_parser(
        "stack",
        help="up: a throwaway PostgreSQL + S3 + `mlflow server` on loopback, for a team setup; down: stop it",
        description="up starts them in the background, records them in .stack/stack.json and prints the "
        "settings to use; down stops them and removes the temporary folder up made.",
    )
    stack_parser.add_argument("action", choices=("up", "down"))
    serve_parser = sub.add_parser(
        "serve",
        help="serve a registered model over HTTP as `mlflow models serve` does, every error in one line",
        description="MLflow's scoring server (POST /invocations, GET /ping) for MODEL, without its stack "
        "traces and echoed requests in error answers; MLFLOW_TRACKING_URI says where MODEL is registered.",
    )
    serve_parser.add_argument("-m", "--model", default="models:/patchunet@champion", help="model URI")
    serve_parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve_parser.add_argument("--port", type=int, default=5001, help="port to serve on (default 5001)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args, stage_args = build_parser().parse_known_args(argv)
    if args.command in ("predict", "predict-slide"):
        from patchunet.inference import predict, predict_slide

        if stage_args:
            build_parser().error(f"unrecognized arguments: {' '.join(stage_args)}")
        command = predict if args.command == "predict" else predict_slide
        run_stage(lambda: command.run(args))
        return
    if args.command == "serve":
        from patchunet.serving.scoring import serve

        run_stage(lambda: check_port(args.port, args.host) or serve(args.model, args.host, args.port))
        return
    root = _project_root_or_exit()
    if args.command == "stack":
        run_stage(lambda: report_stack(args.action, root))
        return
    if args.command == "dashboard":
        run_stage(lambda: start_dashboard(root, args.port, args.address, stage_args))
    script = root / "pipelines" / f"{args.command}.py"
    command = [sys.executable, str(script), *stage_args]
    if args.command == "train":
        run_stage(lambda: check_nproc(args.nproc))
        command = train_command(script, args.nproc, stage_args)
    become(command, root)


def become(command: list[str], root: Path) -> None:
    """Replace this process by `command`, run in `root`: not a child process, which a signal to this
    one (`kill`, a service manager's SIGTERM, even SIGKILL) would leave running, orphaned."""
    os.chdir(root)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)


def check_nproc(nproc: int) -> None:
    if nproc < 1:
        raise PatchUNetError(f"--nproc {nproc}: the number of training processes must be 1 or more")


def train_command(script: Path, nproc: int, stage_args: list[str]) -> list[str]:
    """The train stage as one process, or under torchrun as `nproc` DDP processes on this machine."""
    if nproc == 1:
        return [sys.executable, str(script), *stage_args]
    launcher = [sys.executable, "-m", "patchunet.training.launch", "--standalone", f"--nproc_per_node={nproc}"]
    return [*launcher, str(script), *stage_args]


def report_stack(action: str, root: Path) -> None:
    """`patchunet stack up|down`, and what it says."""
    from patchunet import stack

    if action == "up":
        started, seconds = stack.up(root)
        print(f"stack: PostgreSQL, S3 and MLflow up in {seconds:.1f} s; logs in {started.folder}")
        print(f"stack: MLflow UI at {started.tracking_uri}; `patchunet stack down` stops it all. To use it:")
        print(started.instructions())
        return
    stopped = stack.down(root)
    print(f"stack: stopped, and removed {stopped.folder}" if stopped else f"stack: nothing to stop in {root}")


def start_dashboard(root: Path, port: int, address: str, extra: list[str]) -> None:
    """Become `streamlit run dashboard/app.py` in `root`: exec, not a child process, so a signal
    that stops `patchunet dashboard` (Ctrl-C, SIGTERM from a service manager) stops the server."""
    import importlib.util

    from patchunet.core.config import DashboardConfig, load_params, parse_section

    if importlib.util.find_spec("streamlit") is None:
        raise PatchUNetError('the dashboard needs its extra: pip install -e ".[dashboard]" (or ".[dev]")')
    max_upload_mb = parse_section(DashboardConfig, load_params(root / "params.yaml"), "dashboard").max_upload_mb
    check_port(port, address)
    become(dashboard_command(root, port, address, extra, max_upload_mb=max_upload_mb), root)


def check_port(port: int, address: str) -> None:
    """Refuse, in one line, a port outside 1..65535 or one `address` cannot listen on (in use)."""
    if not 1 <= port <= 65535:
        raise PatchUNetError(f"--port {port}: a port must be from 1 to 65535")
    try:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: TIME_WAIT is free
            probe.bind((address, port))
    except OSError as exc:
        raise PatchUNetError(f"--port {port}: cannot serve on {address}:{port} ({exc.strerror})") from None


def dashboard_command(root: Path, port: int, address: str, extra: list[str], *, max_upload_mb: int) -> list[str]:
    """`streamlit run dashboard/app.py` on `address:port`, refusing uploads over `max_upload_mb`
    (params.yaml dashboard.max_upload_mb) in the server itself, without Streamlit's usage statistics."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(root / "dashboard" / "app.py"),
        f"--server.port={port}",
        f"--server.address={address}",
        f"--server.maxUploadSize={max_upload_mb}",
        "--browser.gatherUsageStats=false",
        "--client.toolbarMode=minimal",
        *extra,
    ]


def _project_root_or_exit() -> Path:
    try:
        return find_project_root(Path.cwd())
    except PatchUNetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
