"""`patchunet stack`: real PostgreSQL, S3 and MLflow servers on loopback, started and stopped."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO_ROOT, mlflow_client

from patchunet import stack

pytestmark = pytest.mark.distributed


def s3_keys(team_stack: stack.Stack, bucket: str) -> list[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=team_stack.s3_endpoint, **boto3_credentials(team_stack))
    return [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def boto3_credentials(team_stack: stack.Stack) -> dict[str, str]:
    env = team_stack.s3_env
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_DEFAULT_REGION"],
    }


def test_mlflow_keeps_runs_in_postgresql_and_artifacts_in_s3(
    team_stack: stack.Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = mlflow_client(team_stack.tracking_uri)
    experiment = client.create_experiment("stack-check")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "dice", 0.5)
    (tmp_path / "note.txt").write_text("proxied")
    client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))  # through the server: no S3 credentials here
    assert client.get_run(run.info.run_id).data.metrics == {"dice": 0.5}
    assert f"{experiment}/{run.info.run_id}/artifacts/note.txt" in s3_keys(team_stack, stack.ARTIFACT_BUCKET)

    import sqlalchemy

    monkeypatch.setenv("PGPASSFILE", team_stack.pgpass_file)
    engine = sqlalchemy.create_engine(team_stack.public_database_url("mlflow"))
    with engine.connect() as connection:
        stored = connection.execute(sqlalchemy.text("SELECT run_uuid FROM runs")).scalars().all()
    engine.dispose()
    assert run.info.run_id in stored


def test_postgresql_runs_as_an_unprivileged_user_and_wants_a_password(team_stack: stack.Stack) -> None:
    import pwd

    import psycopg2

    postmaster = int((Path(team_stack.folder) / "postgres" / "postmaster.pid").read_text().split()[0])
    owner = Path(f"/proc/{postmaster}").stat().st_uid
    assert owner == (pwd.getpwnam(team_stack.run_as).pw_uid if team_stack.run_as else os.getuid())
    assert owner != 0
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(host="127.0.0.1", port=team_stack.postgres_port, user=stack.USER, dbname="optuna")


def test_no_command_line_on_the_machine_holds_the_password(team_stack: stack.Stack) -> None:
    """/proc/<pid>/cmdline is every local user's to read."""
    seen = 0
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().decode(errors="replace")
        except OSError:  # the process ended meanwhile
            continue
        seen += "mlflow" in text and "server" in text
        assert team_stack.password not in text, text.replace("\0", " ")
    assert seen  # the stack's mlflow server was among them


def test_the_stack_role_is_no_superuser_and_cannot_run_programs(team_stack: stack.Stack) -> None:
    import psycopg2

    connection = psycopg2.connect(
        host="127.0.0.1", port=team_stack.postgres_port, user=stack.USER, password=team_stack.password, dbname="optuna"
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user")
            assert cursor.fetchone() == (False, False)
            cursor.execute("CREATE TEMP TABLE t (x text)")
            with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="pg_execute_server_program"):
                cursor.execute("COPY t FROM PROGRAM 'id'")
    finally:
        connection.close()


def test_the_superuser_cannot_log_in_over_the_network_even_with_its_own_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cluster of its own, started in this process: the superuser's password, drawn at start and
    kept nowhere, is caught as it is drawn."""
    import psycopg2

    try:
        stack.postgres_bin("initdb")
    except stack.PatchUNetError as exc:
        pytest.skip(str(exc))
    draw, drawn = secrets.token_urlsafe, []
    monkeypatch.setattr(stack.secrets, "token_urlsafe", lambda nbytes=None: drawn.append(draw(nbytes)) or drawn[-1])
    folder = tempfile.mkdtemp(prefix=stack.FOLDER_PREFIX)
    cluster = stack.Stack(folder, stack.free_port(), 0, 0, {}, "the-role's-password", stack.unprivileged_user())
    try:
        stack.start_postgres(cluster)  # it logs in as the superuser with that password, so it was the real one
        [admin_password] = drawn
        for password in (admin_password, cluster.password, ""):
            with pytest.raises(psycopg2.OperationalError, match="password"):
                psycopg2.connect(
                    host="127.0.0.1", port=cluster.postgres_port, user=stack.ADMIN, password=password, dbname="postgres"
                )
    finally:
        stack.stop(cluster)


def test_the_password_file_lets_clients_in_without_the_password_in_the_url(team_stack: stack.Stack) -> None:
    import sqlalchemy

    assert Path(team_stack.pgpass_file).stat().st_mode & 0o077 == 0
    assert team_stack.password not in team_stack.public_database_url("optuna")
    os.environ["PGPASSFILE"] = team_stack.pgpass_file
    try:
        engine = sqlalchemy.create_engine(team_stack.public_database_url("optuna"))
        with engine.connect() as connection:
            assert connection.execute(sqlalchemy.text("SELECT current_user")).scalar() == stack.USER
        engine.dispose()
    finally:
        del os.environ["PGPASSFILE"]


def test_up_prints_the_settings_and_down_removes_only_its_own_folder(tmp_path: Path) -> None:
    for server, port in stack.UP_PORTS.items():
        try:
            stack.check_port_free(port, server)
        except stack.PatchUNetError as exc:
            pytest.skip(f"{exc} (a `patchunet stack up` of this machine's own?)")
    root = tmp_path / "checkout"
    (root / "pipelines").mkdir(parents=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / ".stack").mkdir()
    (root / ".stack" / "mine.txt").write_text("the user's")  # beside the state file: never removed
    command = [sys.executable, "-m", "patchunet", "stack"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    try:
        up = subprocess.run([*command, "up"], cwd=root, capture_output=True, text=True, timeout=300, env=env)
        assert up.returncode == 0, up.stderr
        state = json.loads((root / stack.STATE_FILE).read_text())
        assert (state["postgres_port"], state["s3_port"], state["mlflow_port"]) == tuple(stack.UP_PORTS.values())
        tracking_uri = f"http://127.0.0.1:{state['mlflow_port']}"
        assert f"export MLFLOW_TRACKING_URI={tracking_uri}" in up.stdout
        assert "tune.storage: postgresql+psycopg2://" in up.stdout and "dvc remote add" in up.stdout
        password = (root / stack.PASSWORD_FILE).read_text().strip()
        assert password not in up.stdout + up.stderr
        assert f"export PGPASSFILE={root / stack.PGPASS_FILE}" in up.stdout
        for secret in (stack.PASSWORD_FILE, stack.PGPASS_FILE, stack.STATE_FILE):
            assert (root / secret).stat().st_mode & 0o077 == 0, secret
        with urllib.request.urlopen(f"{tracking_uri}/health", timeout=5) as answer:
            assert answer.status == 200
        again = subprocess.run([*command, "up"], cwd=root, capture_output=True, text=True, timeout=60, env=env)
        assert again.returncode == 1 and "already up" in again.stderr and again.stderr.count("\n") == 1
    finally:
        down = subprocess.run([*command, "down"], cwd=root, capture_output=True, text=True, timeout=120, env=env)
    assert down.returncode == 0, down.stderr
    assert not Path(state["folder"]).exists() and not (root / stack.STATE_FILE).exists()
    assert (root / ".stack" / "mine.txt").read_text() == "the user's"
    assert not any(stack.alive(pid) for pid in state["pids"].values())
    assert (root / stack.PASSWORD_FILE).stat().st_mode & 0o077 == 0  # kept for the next up, for its owner only


def test_a_corrupt_record_and_a_foreign_folder_are_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / ".stack").mkdir()
    (tmp_path / stack.STATE_FILE).write_text("{not json")
    with pytest.raises(stack.PatchUNetError, match="unreadable stack record"):
        stack.down(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    with pytest.raises(stack.PatchUNetError, match="not a folder `patchunet stack up` made"):
        stack.stop(stack.Stack(str(mine), 1, 2, 3, {}, "pw"))
    assert mine.is_dir()


def test_a_secret_written_over_stays_whole_when_the_write_fails_halfway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`down` needs `.stack/stack.json`: a crash while `up` rewrites it must leave the old record."""
    record = tmp_path / "stack.json"
    stack.write_secret(record, "the old record")
    fdopen = os.fdopen

    class HalfWrite:
        def __init__(self, fd: int, mode: str) -> None:
            self.file = fdopen(fd, mode)

        def __enter__(self) -> HalfWrite:
            return self

        def __exit__(self, *exc: object) -> None:
            self.file.close()

        def write(self, text: str) -> None:
            self.file.write(text[: len(text) // 2])
            self.file.flush()
            raise OSError(28, "No space left on device")

    with monkeypatch.context() as failing:
        failing.setattr(stack.os, "fdopen", HalfWrite)
        with pytest.raises(OSError, match="No space left"):
            stack.write_secret(record, "the new record, which is longer")
    assert record.read_text() == "the old record"
    assert list(tmp_path.iterdir()) == [record]  # no temporary file left behind
    stack.write_secret(record, "the new record")
    assert record.read_text() == "the new record" and record.stat().st_mode & 0o777 == 0o600


def test_without_postgresql_up_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack.glob, "glob", lambda pattern: [])
    monkeypatch.setenv("PATH", str(REPO_ROOT))  # no initdb on it
    with pytest.raises(stack.PatchUNetError, match="apt-get install postgresql"):
        stack.postgres_bin("initdb")


def test_a_port_in_use_is_one_line_naming_it() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(stack.PatchUNetError, match=f"port {port} for mlflow is in use"):
            stack.start({"postgres": stack.free_port(), "s3": stack.free_port(), "mlflow": port})
