"""`patchunet stack up|down`: a throwaway team stack on loopback, for development and the tests.

Three real servers, as a team would run them on real machines:
- PostgreSQL: a cluster made by `initdb` in a temporary folder (Debian's `postgresql` package), run
  as an unprivileged user when started by root; one database for MLflow, one for Optuna;
- an S3-protocol server: moto's standalone server (in memory); production points at S3, MinIO or
  any S3-compatible store instead;
- `mlflow server` on PostgreSQL, its artifacts in S3 and proxied through it, so that clients need
  only MLFLOW_TRACKING_URI and no S3 credentials.

`up` leaves them running and records them in `.stack/stack.json`; `down` stops them and removes
the temporary folder `up` made, and nothing else.

Secrets stay off command lines (which every local user reads in /proc) and off the console:
PostgreSQL's password is in `.stack/password` and in a libpq password file (`.stack/pgpass`, what
PGPASSFILE names), both readable by their owner only, and MLflow and Optuna connect as `patchunet`,
a role that owns their two databases and nothing more: not a superuser, so it cannot run programs on
the server (COPY ... FROM PROGRAM). The cluster's superuser sets that up at `start` and is then left
without a password, so nobody logs in as it over the network.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from patchunet.core.errors import PatchUNetError

STATE_FILE = Path(".stack") / "stack.json"
PASSWORD_FILE = Path(".stack") / "password"
PGPASS_FILE = Path(".stack") / "pgpass"
FOLDER_PREFIX = "patchunet-stack-"
USER = "patchunet"
"""The role MLflow and Optuna connect as: the owner of their databases, not a superuser."""
ADMIN = "stack_admin"
"""The cluster's superuser: creates USER and the databases at `start`, then loses its password."""
DATABASES = ("mlflow", "optuna")
ARTIFACT_BUCKET, DVC_BUCKET = "mlflow-artifacts", "dvc-remote"
S3_KEY = "stack"
"""moto accepts any credentials; these name them for the DVC remote and mlflow server."""
START_TIMEOUT_S = 120
UP_PORTS = {"postgres": 55432, "s3": 59000, "mlflow": 55000}
"""`patchunet stack up`'s ports: fixed, so that the URLs it prints (and a `tune.storage` that names
them) stay the same from one `up` to the next. The tests take free ports instead."""


@dataclasses.dataclass(frozen=True)
class Stack:
    """Where the servers of one `up` listen, and how to stop them."""

    folder: str
    postgres_port: int
    s3_port: int
    mlflow_port: int
    pids: dict[str, int]
    password: str
    run_as: str | None = None
    """The unprivileged user PostgreSQL runs as when `up` ran as root."""
    pgpass_file: str = ""
    """The libpq password file (PGPASSFILE) that gives USER's password to the stack's clients."""

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def public_database_url(self, database: str) -> str:
        """A SQLAlchemy URL without the password: libpq reads it from PGPASSFILE (`pgpass_file`)."""
        return f"postgresql+psycopg2://{USER}@127.0.0.1:{self.postgres_port}/{database}"

    @property
    def s3_env(self) -> dict[str, str]:
        """What an S3 client (the mlflow server, DVC, boto3) needs to reach the S3 server."""
        return {
            "AWS_ACCESS_KEY_ID": S3_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.s3_endpoint,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
        }

    def instructions(self) -> str:
        """What to export and configure to work on this stack, as shell lines."""
        return "\n".join(
            [
                f"export MLFLOW_TRACKING_URI={self.tracking_uri}",
                f"export PGPASSFILE={self.pgpass_file}  # PostgreSQL's password, for Optuna and psql",
                f"# Optuna: tune.storage: {self.public_database_url('optuna')}",
                "# a DVC remote on the S3 server (--local: kept out of git):",
                f"dvc remote add --local -d stack s3://{DVC_BUCKET}",
                f"dvc remote modify --local stack endpointurl {self.s3_endpoint}",
                f"dvc remote modify --local stack access_key_id {S3_KEY}",
                f"dvc remote modify --local stack secret_access_key {S3_KEY}",
            ]
        )


def postgres_bin(program: str) -> str:
    """`program` of the newest PostgreSQL installed: Debian keeps them off PATH, by version."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}"), key=_version_key)
    path = found[-1] if found else shutil.which(program)
    if path is None:
        raise PatchUNetError(f"{program}: PostgreSQL is not installed (Debian: apt-get install postgresql)")
    return path


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parts[-3]
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_port_free(port: int, server: str) -> int:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # only a listener counts, not a closed connection
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise PatchUNetError(f"stack: port {port} for {server} is in use on 127.0.0.1; free it first") from None
    return port


def unprivileged_user() -> str | None:
    """None when not root; else the user PostgreSQL will run as (it refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise PatchUNetError("running as root, and neither a postgres nor a nobody user exists to run PostgreSQL as")


def as_user(user: str | None, command: list[str]) -> list[str]:
    return command if user is None else ["runuser", "-u", user, "--", *command]


def start(ports: dict[str, int] | None = None, password: str | None = None, pgpass: Path | None = None) -> Stack:
    """Start PostgreSQL, the S3 server and `mlflow server` on loopback: on `ports` (by server, as
    UP_PORTS), else each on a free port; PostgreSQL with `password`, else a new random one, written
    to the password file `pgpass` (else one in the stack's folder).

    A new temporary folder holds the cluster and the logs. A failure to start stops whatever had
    started, and says which server failed, with its log.
    """
    if ports:
        chosen = [check_port_free(ports[server], server) for server in ("postgres", "s3", "mlflow")]
    else:
        chosen = [free_port() for _ in range(3)]
    run_as = unprivileged_user()
    folder = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))
    pgpass = pgpass or folder / "pgpass"
    stack = Stack(str(folder), *chosen, {}, password or secrets.token_urlsafe(16), run_as, str(pgpass.absolute()))
    try:
        write_secret(pgpass, f"127.0.0.1:*:*:{USER}:{stack.password}\n")
        start_postgres(stack)
        stack.pids["s3"] = spawn(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(stack.s3_port)], folder / "s3.log"
        )
        wait_for(f"{stack.s3_endpoint}/moto-api/", stack.pids["s3"], folder / "s3.log")
        create_buckets(stack)
        server = [sys.executable, "-m", "mlflow", "server", "--workers", "1", "--host", "127.0.0.1",
                  "--port", str(stack.mlflow_port), "--backend-store-uri", stack.public_database_url("mlflow"),
                  "--artifacts-destination", f"s3://{ARTIFACT_BUCKET}"]  # fmt: skip
        stack.pids["mlflow"] = spawn(
            server, folder / "mlflow.log", env={**stack.s3_env, "PGPASSFILE": stack.pgpass_file}
        )
        wait_for(f"{stack.tracking_uri}/health", stack.pids["mlflow"], folder / "mlflow.log")
    except BaseException:
        stop(stack)
        raise
    return stack


def start_postgres(stack: Stack) -> None:
    folder, data = Path(stack.folder), Path(stack.folder) / "postgres"
    if stack.run_as:  # the unprivileged user must own the cluster's folder, and reach it
        shutil.chown(folder, user=stack.run_as)
        folder.chmod(0o700)
    log, password_file = folder / "postgres.log", folder / "admin-password"
    admin_password = secrets.token_urlsafe(16)  # used below, then never again: kept nowhere
    write_secret(password_file, admin_password)
    if stack.run_as:
        shutil.chown(password_file, user=stack.run_as)
    check_run(as_user(stack.run_as, [postgres_bin("initdb"), "-D", str(data), "-U", ADMIN, "-A", "scram-sha-256",
                                     f"--pwfile={password_file}", "-E", "UTF8", "--no-sync"]), "initdb")  # fmt: skip
    password_file.unlink()
    settings = f"-p {stack.postgres_port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={folder}"
    # fsync off: a throwaway cluster, rebuilt at every `up`, need not survive a power cut
    check_run(
        as_user(stack.run_as, [postgres_bin("pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                               "-o", f"{settings} -c fsync=off", "start"]),
        "pg_ctl start",
        log,
    )  # fmt: skip
    create_role_and_databases(stack, admin_password)


def create_role_and_databases(stack: Stack, admin_password: str) -> None:
    """As ADMIN: USER, owning DATABASES and nothing more; then ADMIN loses its password. In this
    process, so that no password reaches a command line."""
    import psycopg2

    try:
        connection = psycopg2.connect(
            host="127.0.0.1", port=stack.postgres_port, user=ADMIN, password=admin_password, dbname="postgres"
        )
    except psycopg2.Error as exc:
        raise PatchUNetError(f"stack: PostgreSQL on port {stack.postgres_port} refused its superuser: {exc}") from None
    connection.autocommit = True  # CREATE DATABASE runs outside a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                f"CREATE ROLE {USER} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %s", (stack.password,)
            )
            for database in DATABASES:
                cursor.execute(f"CREATE DATABASE {database} OWNER {USER}")
            cursor.execute(f"ALTER ROLE {ADMIN} PASSWORD NULL")
    finally:
        connection.close()


def write_secret(path: Path, text: str) -> None:
    """Write `text` to `path`, readable and writable by its owner only from the first byte on, and
    atomically: a new file in the same folder, renamed over `path` once written, so that a crash
    leaves the old file or the new one, never a partial one."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def check_run(command: list[str], what: str, log: Path | None = None, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=START_TIMEOUT_S, env={**os.environ, **(env or {})}
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip() or (log.read_text() if log and log.exists() else "")
        raise PatchUNetError(f"stack: {what} failed: {detail}")


def spawn(command: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    """Start a server in its own session (so `stop` ends it and its workers), logging to `log`."""
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True
        )
    return process.pid


def wait_for(url: str, pid: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if not alive(pid) or time.monotonic() > deadline:
                raise PatchUNetError(f"stack: {url} never answered; its log ({log}):\n{log.read_text()}") from None
            time.sleep(0.3)


def create_buckets(stack: Stack) -> None:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=stack.s3_endpoint,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_KEY,
        region_name="us-east-1",
    )
    for bucket in (ARTIFACT_BUCKET, DVC_BUCKET):
        s3.create_bucket(Bucket=bucket)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ChildProcessError):  # reap it, if it is our own child that exited
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    return True


SERVER_MARKERS = {"s3": "moto.server", "mlflow": "mlflow"}
"""What each server's command line holds: a recorded pid is only signalled while it still does."""


def running_servers(stack: Stack) -> dict[str, int]:
    """The stack's servers still running: a pid that another program took over since does not count."""
    return {name: pid for name, pid in stack.pids.items() if alive(pid) and runs(pid, SERVER_MARKERS[name])}


def runs(pid: int, marker: str) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def stop(stack: Stack) -> None:
    """Stop the servers (SIGTERM, then SIGKILL after 10 s) and the cluster; remove the folder `start` made."""
    folder = Path(stack.folder)
    if folder.parent != Path(tempfile.gettempdir()) or not folder.name.startswith(FOLDER_PREFIX):
        raise PatchUNetError(f"{folder}: not a folder `patchunet stack up` made; refusing to remove it")
    for pid in running_servers(stack).values():
        stop_process_group(pid)
    data = folder / "postgres"
    if (data / "postmaster.pid").exists():
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                as_user(stack.run_as, [postgres_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                capture_output=True,
                timeout=60,
            )
    shutil.rmtree(folder, ignore_errors=True)


def stop_process_group(pid: int, timeout_s: float = 10) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


@contextlib.contextmanager
def running() -> Iterator[Stack]:
    """A stack for the block: stopped, and its folder removed, however the block ends."""
    stack = start()
    try:
        yield stack
    finally:
        stop(stack)


def up(root: Path) -> tuple[Stack, float]:
    """Start a stack for the checkout at `root` on UP_PORTS and record it; (the stack, seconds taken)."""
    state = root / STATE_FILE
    if state.exists():
        stack = read_state(state)
        if running_servers(stack):
            raise PatchUNetError(f"{state}: a stack is already up (pids {stack.pids}); `patchunet stack down` first")
        stop(stack)  # the servers of a stack whose machine rebooted: clean up its folder
        state.unlink()
    state.parent.mkdir(mode=0o700, exist_ok=True)
    started = time.perf_counter()
    stack = start(UP_PORTS, stack_password(root / PASSWORD_FILE), root / PGPASS_FILE)
    write_secret(state, json.dumps(dataclasses.asdict(stack), indent=2))  # it holds the password
    return stack, time.perf_counter() - started


def stack_password(path: Path) -> str:
    """The checkout's stack password: the same at every `up`, so that a `tune.storage` naming it lasts."""
    if not path.exists():
        write_secret(path, secrets.token_urlsafe(16))
    return path.read_text().strip()


def down(root: Path) -> Stack | None:
    """Stop the stack recorded for the checkout at `root`; None when there is none."""
    state = root / STATE_FILE
    if not state.exists():
        return None
    stack = read_state(state)
    stop(stack)
    state.unlink()
    return stack


def read_state(path: Path) -> Stack:
    try:
        return Stack(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise PatchUNetError(
            f"{path}: unreadable stack record ({exc}); stop its servers by hand and delete it"
        ) from None
