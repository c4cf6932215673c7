import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import REPO_ROOT, free_port, wait_for_http, wait_gone

from patchunet.cli import STAGES, build_parser, dashboard_command, train_command


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "patchunet", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_help_lists_one_subcommand_per_dvc_stage() -> None:
    dvc_stages = set(yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"])
    dvc_stages |= set(yaml.safe_load((REPO_ROOT / "tune/dvc.yaml").read_text())["stages"])
    assert set(STAGES) == dvc_stages
    help_text = build_parser().format_help()
    assert all(stage in help_text for stage in dvc_stages)


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from patchunet.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])\n"
        "heavy = {'torch', 'mlflow', 'numpy', 'albumentations', 'cv2', 'skimage'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_stage_subcommand_runs_the_pipeline_script() -> None:
    result = run_cli("fetch", "--help", cwd=REPO_ROOT)
    assert result.returncode == 0 and "--source" in result.stdout


def test_stage_outside_a_checkout_is_one_line(tmp_path: Path) -> None:
    result = run_cli("split", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "not inside a PatchUNet checkout" in result.stderr


def test_dashboard_serves_the_app_from_the_checkout(tmp_path: Path) -> None:
    """`patchunet dashboard` starts a real Streamlit server on the port it is given."""
    port = free_port()
    log = tmp_path / "dashboard.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "patchunet", "dashboard", "--port", str(port), "--server.headless=true"],
            cwd=REPO_ROOT / "dashboard",  # any folder inside the checkout
            stdout=output,
            stderr=output,
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/_stcore/health", server, log)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert f"127.0.0.1:{port}" in log.read_text()


def test_dashboard_command_sets_the_server_upload_limit_from_params() -> None:
    command = dashboard_command(REPO_ROOT, 8501, "127.0.0.1", [], max_upload_mb=7)
    assert "--server.maxUploadSize=7" in command and "--server.address=127.0.0.1" in command


def test_stopping_the_dashboard_stops_its_streamlit_server(tmp_path: Path) -> None:
    """SIGTERM to `patchunet dashboard` leaves no Streamlit process behind and frees the port."""
    port = free_port()
    log = tmp_path / "dashboard.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "patchunet", "dashboard", "--port", str(port), "--server.headless=true"],
            cwd=REPO_ROOT,
            stdout=output,
            stderr=output,
        )
    processes = [psutil.Process(server.pid)]
    try:
        wait_for_http(f"http://127.0.0.1:{port}/_stcore/health", server, log)
        processes += processes[0].children(recursive=True)
        server.send_signal(signal.SIGTERM)
        alive = wait_gone(processes, timeout=10)
        assert not alive, [p.cmdline() for p in alive]
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more
    finally:
        for process in processes:  # whatever the outcome, stop what this test started
            if process.is_running():
                process.kill()
        server.wait(timeout=30)


def test_train_with_fewer_than_one_process_is_one_line() -> None:
    result = run_cli("train", "--nproc", "0", cwd=REPO_ROOT)
    assert result.returncode == 1 and result.stderr.strip().count("\n") == 0
    assert "--nproc 0: the number of training processes must be 1 or more" in result.stderr


def test_train_with_several_processes_runs_under_torchrun_and_with_one_as_before() -> None:
    script = REPO_ROOT / "pipelines" / "train.py"
    assert train_command(script, 1, ["--resume"]) == [sys.executable, str(script), "--resume"]
    launcher = [sys.executable, "-m", "patchunet.training.launch", "--standalone", "--nproc_per_node=2"]
    assert train_command(script, 2, ["--resume"]) == [*launcher, str(script), "--resume"]


@pytest.mark.parametrize("command", ["dashboard", "serve"])
def test_a_port_outside_the_range_is_one_line(command: str) -> None:
    """`dashboard --port 70000` printed a 52-line Streamlit traceback."""
    for port in ("70000", "0"):
        result = run_cli(command, "--port", port, cwd=REPO_ROOT)
        assert result.returncode == 1 and result.stderr.strip().count("\n") == 0, result.stderr
        assert f"error: --port {port}: a port must be from 1 to 65535" in result.stderr


@pytest.mark.parametrize("command", ["dashboard", "serve"])
def test_a_port_in_use_is_one_line(command: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(command, "--port", str(port), cwd=REPO_ROOT)
    assert result.returncode == 1 and result.stderr.strip().count("\n") == 0, result.stderr
    assert f"error: --port {port}: cannot serve on 127.0.0.1:{port} (Address already in use)" in result.stderr
