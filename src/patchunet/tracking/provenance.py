"""Where a run came from: the git commit of the code and DVC's hash of the data it read."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

UNKNOWN = "unknown"


def git_commit(repo: Path) -> str:
    """HEAD's commit, with '-dirty' when tracked files other than dvc.lock have uncommitted changes.

    dvc.lock is left out: `dvc repro` rewrites it for the stages before `train` in the same run.
    """
    try:
        commit = _git(repo, "rev-parse", "HEAD")
        dirty = _git(repo, "status", "--porcelain", "--untracked-files=no", "--", ".", ":!dvc.lock")
    except (OSError, subprocess.CalledProcessError):
        return UNKNOWN
    return f"{commit}-dirty" if dirty else commit


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def dvc_output_hash(lock_file: Path, output: str) -> str:
    """The md5 that dvc.lock records for `output` (a path as written in dvc.yaml), or 'unknown'."""
    try:
        lock = yaml.safe_load(lock_file.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return UNKNOWN
    for stage in lock.get("stages", {}).values():
        for out in stage.get("outs", []):
            if out.get("path") == output:
                return out.get("md5", UNKNOWN)
    return UNKNOWN
