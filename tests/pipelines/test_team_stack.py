"""The whole pipeline on the team stack: `dvc repro` logging to `mlflow server` (PostgreSQL + S3),
the dashboard reading it, and `dvc push` to the S3 server then `dvc pull` in a teammate's clone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO_ROOT, mlflow_client, write_synthetic_source
from streamlit.testing.v1 import AppTest
from test_dvc_pipeline import stages_run, tiny_chain_repo

from patchunet import stack

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

PUSHED = ("data/raw/monuseg", "data/processed/patches", "models/patchunet.pt", "models/checkpoints/best.pt")


def run(repo: Path, env: dict[str, str], *command: str) -> str:
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def dvc(repo: Path, env: dict[str, str], *args: str) -> str:
    return run(repo, env, sys.executable, "-m", "dvc", *args)


@pytest.fixture(scope="module")
def team_repo(team_stack: stack.Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict]]:
    """A git + DVC repo after a full tiny `dvc repro` against the stack, its remote the stack's S3."""
    base = tmp_path_factory.mktemp("team")
    repo = tiny_chain_repo(
        base / "repo",
        patch_size=64,
        overlap=16,
        mlflow={"experiment": "team-stack", "registered_model": "patchunet-team"},
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))},
        "MONUSEG_DIR": str(write_synthetic_source(base / "monuseg")),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": team_stack.tracking_uri,
        # the teammate's own S3 credentials; the remote's URL and endpoint are in the committed config
        **{k: v for k, v in team_stack.s3_env.items() if k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
    }
    dvc(repo, env, "remote", "add", "-d", "team", f"s3://{stack.DVC_BUCKET}/team-repo")
    dvc(repo, env, "remote", "modify", "team", "endpointurl", team_stack.s3_endpoint)
    run(repo, env, "git", "add", "-A")
    run(repo, env, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "pipeline")
    out = dvc(repo, env, "repro")
    assert {"train", "evaluate", "register"} <= stages_run(out)
    yield repo, env


def test_repro_tracks_registers_and_promotes_on_the_server(team_repo, team_stack: stack.Stack) -> None:
    repo, _ = team_repo
    run_record = json.loads((repo / "models/run.json").read_text())
    assert run_record["tracking_uri"] == team_stack.tracking_uri
    client = mlflow_client(team_stack.tracking_uri)
    training_run = client.get_run(run_record["run_id"])
    assert "aji" in " ".join(training_run.data.metrics)  # evaluate logged its scores into the training run
    champion = client.get_model_version_by_alias("patchunet-team", "champion")
    assert champion.run_id == run_record["run_id"]
    assert champion.tags["git_commit"] == run(repo, os.environ, "git", "rev-parse", "HEAD").strip()
    assert champion.tags["dvc_data_hash"].endswith(".dir")
    artifacts = {a.path for a in client.list_artifacts(run_record["run_id"])}
    assert "checkpoints" in artifacts  # proxied through the server into S3
    from test_stack import s3_keys

    assert any(key.endswith("checkpoints/best.pt") for key in s3_keys(team_stack, stack.ARTIFACT_BUCKET))


def test_dashboard_models_page_reads_the_server(team_repo, team_stack, monkeypatch: pytest.MonkeyPatch) -> None:
    repo, _ = team_repo
    monkeypatch.chdir(repo)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team_stack.tracking_uri)
    app = AppTest.from_file(str(REPO_ROOT / "dashboard" / "app.py"), default_timeout=120).run()
    assert not app.exception, [e.value for e in app.exception]
    table = app.dataframe[0].value
    assert table["version"].tolist() == [1] and table["aliases"].tolist() == ["challenger, champion"]
    assert all(link.startswith(f"{team_stack.tracking_uri}/#/experiments/") for link in table["run"])
    # the champion's model loads through the server (artifacts proxied from S3) and segments an upload
    app.switch_page("views/try_it.py").run()
    image = next((repo / "data/raw/monuseg/test/images").glob("*.tif"))
    app.get("file_uploader")[0].upload("mine.tif", image.read_bytes(), "image/tiff")
    app.run()
    assert not app.exception and not app.error, [e.value for e in (*app.exception, *app.error)]
    assert app.metric and int(app.metric[0].value) >= 0


def test_predict_loads_the_champion_through_the_server(team_repo, tmp_path: Path) -> None:
    repo, env = team_repo
    image = next((repo / "data/raw/monuseg/test/images").glob("*.tif"))
    run(repo, env, sys.executable, "-m", "patchunet", "predict", str(image), "--model",
        "models:/patchunet-team@champion", "--out", str(tmp_path / "out"))  # fmt: skip
    assert (tmp_path / "out" / f"{image.stem}_labels.tif").is_file()


def test_a_teammates_clone_pulls_everything_and_has_nothing_to_rerun(team_repo, team_stack, tmp_path: Path) -> None:
    repo, env = team_repo
    champion = mlflow_client(team_stack.tracking_uri).get_model_version_by_alias("patchunet-team", "champion")
    run(repo, env, "git", "add", "-A")
    run(repo, env, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "dvc repro")
    pushed = dvc(repo, env, "push")
    assert "pushed" in pushed
    clone = tmp_path / "clone"
    run(tmp_path, env, "git", "clone", "-q", str(repo), str(clone))
    dvc(clone, env, "pull")
    for path in PUSHED:
        assert (clone / path).exists(), path
    assert (clone / "models/patchunet.pt").read_bytes() == (repo / "models/patchunet.pt").read_bytes()
    status = dvc(clone, env, "status")
    assert status.split() == ["source:", "always", "changed"], status  # it lists the source at every repro
    assert stages_run(dvc(clone, env, "repro")) == {"source"}  # same files: nothing else to do

    # from the registered version to exactly its data and model (docs/how-to/team-stack.md): the commit
    # whose run.json names its run
    found = run(clone, env, "git", "log", "--format=%H", "-S", champion.run_id, "--", "models/run.json").split()
    run(clone, env, "git", "checkout", "-q", found[-1])
    for output in ("data/processed/patches", "models/patchunet.pt"):
        (shutil.rmtree if (clone / output).is_dir() else Path.unlink)(clone / output)
    dvc(clone, env, "pull")
    assert champion.tags["dvc_data_hash"] in (clone / "dvc.lock").read_text()
    assert (clone / "models/patchunet.pt").read_bytes() == (repo / "models/patchunet.pt").read_bytes()
