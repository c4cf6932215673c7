"""Queued DVC experiments of the whole pipeline on a tiny synthetic config, run by `dvc queue start`:
each one MLflow run in the repo's own store, named and tagged after its experiment. Then shared with a
teammate through a bare git remote and a DVC remote on a plain local path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import mlflow_client, write_synthetic_source
from test_dvc_pipeline import dvc, succeeded, tiny_chain_repo

from patchunet.tracking import names

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

EXPERIMENTS = {  # name -> its `-S` overrides; the second one also cuts other patches
    "lr-low": {"train.lr": 0.003},
    "lr-high": {"train.lr": 0.01, "patch.size": 48, "patch.stride": 48},
}
FINISHED = {"success", "failed", "canceled"}
QUEUE_TIMEOUT_S = 480
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
}
"""For git, and for DVC committing each experiment in its temporary copy."""


def git(repo: Path, env: dict[str, str], *args: str) -> str:
    return succeeded(subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=120))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A repo whose baseline commit holds the data stages and a DVC remote on a local path, pushed to a
    bare git remote `origin`, after `dvc queue start --jobs 2` ran the EXPERIMENTS queued on it."""
    base = tmp_path_factory.mktemp("experiments")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))},  # the default store
        "MONUSEG_DIR": str(write_synthetic_source(base / "monuseg")),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        **GIT_IDENTITY,
    }
    repo = tiny_chain_repo(base / "repo", patch_size=32, overlap=8)
    # the remote goes into the baseline commit: DVC reads an experiment's remote from its commit's config
    succeeded(dvc(repo, env, "remote", "add", "-d", "shared", str(base / "dvc-remote")))
    succeeded(dvc(repo, env, "repro", "patches"))
    git(repo, env, "add", "-A")
    git(repo, env, "commit", "-qm", "baseline")
    git(base, env, "init", "-q", "--bare", "origin.git")
    git(repo, env, "remote", "add", "origin", str(base / "origin.git"))
    git(repo, env, "push", "-q", "origin", "HEAD")
    for name, overrides in EXPERIMENTS.items():
        sets = [f"--set-param={key}={value}" for key, value in overrides.items()]
        succeeded(dvc(repo, env, "exp", "run", "--queue", "--name", name, *sets))
    try:
        # its workers inherit this environment and its stdout: a pipe would stay open until they exit
        with (base / "queue.log").open("w") as log:
            command = [sys.executable, "-m", "dvc", "queue", "start", "--jobs", "2"]
            started = subprocess.run(command, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=120)
        assert started.returncode == 0, (base / "queue.log").read_text()
        wait_until_finished(repo, env)
        yield repo, env
    finally:
        dvc(repo, env, "queue", "stop", "--kill")


def experiments(repo: Path, env: dict[str, str]) -> dict[str, dict]:
    """{name: {"state": ..., "params": ..., "metrics": ...}} of HEAD's experiments, as `dvc exp show` lists them."""
    return parse_experiments(succeeded(dvc(repo, env, "exp", "show", "--json")))


def parse_experiments(exp_show_json: str) -> dict[str, dict]:
    found = {}
    for baseline in json.loads(exp_show_json):
        for experiment in baseline.get("experiments") or []:
            latest = experiment["revs"][0]
            data = latest.get("data") or {}
            found[experiment["name"]] = {
                "state": (experiment.get("executor") or {}).get("state", "success"),
                "params": (data.get("params") or {}).get("params.yaml", {}).get("data", {}),
                "metrics": {path: value.get("data", {}) for path, value in (data.get("metrics") or {}).items()},
            }
    return found


def wait_until_finished(repo: Path, env: dict[str, str]) -> None:
    deadline, states = time.monotonic() + QUEUE_TIMEOUT_S, {}
    while time.monotonic() < deadline:
        time.sleep(10)  # each look costs a DVC start, on the cores the experiments train on
        shown = dvc(repo, env, "exp", "show", "--json")
        if shown.returncode == 0:  # else the workers held the repo a moment: look again
            states = {name: found["state"] for name, found in parse_experiments(shown.stdout).items()}
        if set(EXPERIMENTS) <= set(states) and FINISHED.issuperset(states.values()):
            return
    raise TimeoutError(f"queued experiments still {states} after {QUEUE_TIMEOUT_S} s:\n{queue_logs(repo, env)}")


def queue_logs(repo: Path, env: dict[str, str]) -> str:
    logs = [dvc(repo, env, "queue", "logs", name) for name in EXPERIMENTS]
    return "\n".join(log.stdout + log.stderr for log in logs)


def test_dvc_queue_start_runs_every_queued_experiment(project: tuple[Path, dict[str, str]]) -> None:
    repo, env = project
    found = experiments(repo, env)
    states = {name: found[name]["state"] for name in EXPERIMENTS}
    assert states == dict.fromkeys(EXPERIMENTS, "success"), queue_logs(repo, env)
    for name, overrides in EXPERIMENTS.items():
        params = found[name]["params"]
        assert {key: params[section][field] for key in overrides for section, field in [key.split(".")]} == overrides
        assert found[name]["metrics"]["metrics/test.json"]["images"] == 2  # evaluated, on the synthetic test set


def test_each_experiment_is_one_mlflow_run_in_the_repos_store(project: tuple[Path, dict[str, str]]) -> None:
    repo, env = project
    client = mlflow_client(f"sqlite:///{repo / 'mlflow.db'}")  # the repo's: the stages ran in temporary copies
    runs = client.search_runs([client.get_experiment_by_name("patchunet").experiment_id])
    by_experiment = {run.data.tags.get(names.DVC_EXPERIMENT): run for run in runs}
    assert len(runs) == len(EXPERIMENTS) and set(by_experiment) == set(EXPERIMENTS)
    baseline = git(repo, env, "rev-parse", "HEAD").strip()
    for name, overrides in EXPERIMENTS.items():
        run = by_experiment[name]
        assert run.info.run_name == name and run.data.tags[names.DVC_BASELINE_REV] == baseline
        assert float(run.data.params[names.LR_PARAM]) == overrides["train.lr"]
        assert names.score_metric("aji") in run.data.metrics  # evaluate logged into the same run
        assert client.list_artifacts(run.info.run_id, names.CHECKPOINTS_ARTIFACT)  # kept after the copy went


def test_a_teammate_pulls_an_experiment_with_its_model_and_metrics(
    project: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    repo, env = project
    succeeded(dvc(repo, env, "exp", "push", "origin", "lr-low"))  # the commit to git, the outputs to the DVC remote
    clone = tmp_path / "clone"
    git(tmp_path, env, "clone", "-q", str(repo.parent / "origin.git"), str(clone))
    succeeded(dvc(clone, env, "exp", "pull", "origin", "lr-low"))
    succeeded(dvc(clone, env, "exp", "apply", "lr-low"))
    succeeded(dvc(clone, env, "pull"))
    pushed = experiments(repo, env)["lr-low"]
    assert (clone / "models/patchunet.pt").is_file()
    assert json.loads((clone / "metrics/test.json").read_text()) == pushed["metrics"]["metrics/test.json"]
    status = json.loads(succeeded(dvc(clone, env, "status", "--json")))
    assert status == {"source": ["always changed"]}  # it lists the source at every repro; nothing else to do
