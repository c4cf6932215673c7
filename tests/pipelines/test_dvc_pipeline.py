"""A real `dvc repro` of the data stages in a temporary git repo, on a subset of the real data."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT, TEST_DIR, TRAIN_DIR, update_params, write_rgb_tiff

from patchunet.data.patches import PatchSet

pytestmark = pytest.mark.slow

TRAIN_IDS = [  # two with XML and map, two with a map only; two organs
    "TCGA-A7-A13E-01Z-00-DX1",
    "TCGA-AR-A1AK-01Z-00-DX1",
    "TCGA-A7-A13F-01Z-00-DX1",
    "TCGA-HE-7128-01Z-00-DX1",
    "TCGA-B0-5710-01Z-00-DX1",
]
TEST_IDS = ["TCGA-2Z-A9J9-01A-01-TS1", "TCGA-AC-A2FO-01A-01-TS1"]


def link_subset(real: Path, dest: Path) -> Path:
    """The official layout with a few of the real files, symlinked."""
    for image_id in TRAIN_IDS:
        for folder, suffix in (("Tissue Images", ".tif"), ("Annotations", ".xml"), ("Instance Maps", ".png")):
            source = real / TRAIN_DIR / folder / f"{image_id}{suffix}"
            if source.exists():
                (dest / TRAIN_DIR / folder).mkdir(parents=True, exist_ok=True)
                (dest / TRAIN_DIR / folder / source.name).symlink_to(source)
    (dest / TEST_DIR).mkdir(parents=True)
    for image_id in TEST_IDS:
        for suffix in (".tif", ".xml"):
            (dest / TEST_DIR / f"{image_id}{suffix}").symlink_to(real / TEST_DIR / f"{image_id}{suffix}")
    return dest


@pytest.fixture(scope="module")
def dvc_repo(real_monuseg: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A temporary git + DVC repo after its first `dvc repro patches`, and that repro's output."""
    base = tmp_path_factory.mktemp("dvc")
    repo = new_dvc_repo(base / "repo")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MONUSEG_DIR", str(link_subset(real_monuseg, base / "monuseg")))
        # dvc.yaml runs `python pipelines/...`: that must be this interpreter, venv or not
        env.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        yield repo, dvc_repro(repo, "patches")


def new_dvc_repo(repo: Path) -> Path:
    """A git + DVC repo holding a copy of the project's pipeline, params and code."""
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO_ROOT / name, repo / name)
    shutil.copytree(REPO_ROOT / "pipelines", repo / "pipelines", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO_ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    run(repo, "git", "init", "-q")
    run(repo, sys.executable, "-m", "dvc", "init", "-q")
    run(repo, sys.executable, "-m", "dvc", "config", "core.analytics", "false")
    return repo


def tiny_chain_repo(repo: Path, patch_size: int, overlap: int, **sections: dict) -> Path:
    """`new_dvc_repo` with the project's .gitignore and the whole chain at a tiny configuration:
    `patch_size` px patches, no augmented copies, a depth-2 foreground-only model, 1 epoch."""
    new_dvc_repo(repo)
    shutil.copy(REPO_ROOT / ".gitignore", repo / ".gitignore")
    update_params(
        repo,
        patch={"size": patch_size, "stride": patch_size},
        augment={"copies": 0},
        model={"depth": 2, "instance_head": "none"},
        train={"epochs": 1, "num_workers": 0},
        eval={"window": None, "overlap": overlap, "samples": 1, "min_nucleus_area": 8},
        **sections,
    )
    return repo


def run(repo: Path, *command: str) -> str:
    result = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def dvc_repro(repo: Path, *targets: str) -> str:
    return run(repo, sys.executable, "-m", "dvc", "repro", *targets)


def test_repro_patches_runs_every_data_stage(dvc_repo: tuple[Path, str]) -> None:
    repo, first_output = dvc_repo
    for stage in ("fetch", "masks", "split", "patches"):
        assert f"Running stage '{stage}'" in first_output
    assert (repo / "dvc.lock").is_file()


def stages_run(out: str) -> set[str]:
    return set(re.findall(r"Running stage '(\w+)'", out))


def test_second_repro_runs_only_the_source_check(dvc_repo: tuple[Path, str]) -> None:
    # `dvc repro patches`, not a bare `dvc repro`: that would also train a model
    out = dvc_repro(dvc_repo[0], "patches")
    assert stages_run(out) == {"source"}  # always runs, finds the same files, so fetch and the rest do not


def test_train_and_val_images_never_overlap(dvc_repo: tuple[Path, str]) -> None:
    repo, _ = dvc_repo
    split = yaml.safe_load((repo / "data/interim/split.json").read_text())
    assert set(split["train"]).isdisjoint(split["val"])
    assert sorted(split["train"] + split["val"]) == sorted(TRAIN_IDS)
    assert split["test"] == sorted(TEST_IDS)


def test_no_val_patch_appears_among_train_patches(dvc_repo: tuple[Path, str]) -> None:
    repo, _ = dvc_repo
    train = PatchSet.load(repo / "data/processed/patches/train")
    val = PatchSet.load(repo / "data/processed/patches/val")
    assert {r["image_id"] for r in train.index}.isdisjoint(r["image_id"] for r in val.index)
    train_hashes = {hashlib.sha1(p.tobytes()).hexdigest() for p in train.images}
    assert not any(hashlib.sha1(p.tobytes()).hexdigest() in train_hashes for p in val.images)


def test_changing_patch_size_reruns_only_patches(dvc_repo: tuple[Path, str]) -> None:
    repo, _ = dvc_repo
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["patch"].update(size=192, stride=192)  # a multiple of 2**model.depth, as the network needs
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    out = dvc_repro(repo, "patches")
    assert "Running stage 'patches'" in out
    for stage in ("fetch", "masks", "split"):
        assert f"Running stage '{stage}'" not in out
    assert PatchSet.load(repo / "data/processed/patches/val").images.shape[1:3] == (192, 192)


def test_full_repro_trains_evaluates_and_registers(dvc_repo: tuple[Path, str]) -> None:
    """The whole default chain on a tiny configuration: a bare `dvc repro`, then `dvc metrics show`."""
    repo, _ = dvc_repo
    update_params(
        repo,
        patch={"size": 128, "stride": 128},
        augment={"copies": 0},
        model={"depth": 2},
        train={"epochs": 1, "num_workers": 0},
        eval={"window": None, "samples": 1},
    )
    out = dvc_repro(repo)
    for stage in ("train", "evaluate", "register"):
        assert f"Running stage '{stage}'" in out
    test_metrics = yaml.safe_load((repo / "metrics/test.json").read_text())
    assert test_metrics["images"] == len(TEST_IDS) and test_metrics["window"] == 128
    registry = yaml.safe_load((repo / "models/registry.json").read_text())
    assert registry["champion"] == registry["challenger"] == 1 and registry["promoted"]
    head = yaml.safe_load((repo / "params.yaml").read_text())["model"]["instance_head"]
    pictures = sorted(p.name.removeprefix(TEST_IDS[0]) for p in (repo / "reports/samples").glob("*.png"))
    assert pictures == ([".png"] if head == "none" else [".png", "_head.png"])  # the sample, and its head's map

    shown = run(repo, sys.executable, "-m", "dvc", "metrics", "show")
    assert "metrics/test.json" in shown and "per_image_mean.aji" in shown
    assert stages_run(dvc_repro(repo)) == {"source"}  # and nothing is left to do


# --- on synthetic data: what the source stage, a failed repro and the stage launcher do ---


@pytest.fixture
def synthetic_repo(tmp_path: Path, synthetic_source: Path) -> tuple[Path, dict[str, str]]:
    """A fresh DVC repo, and the environment that points it at the synthetic source."""
    env = {
        **os.environ,
        "MONUSEG_DIR": str(synthetic_source),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    return new_dvc_repo(tmp_path / "repo"), env


def dvc(repo: Path, env: dict[str, str], *args: str, dvc_command: str | None = None) -> subprocess.CompletedProcess:
    command = [dvc_command] if dvc_command else [sys.executable, "-m", "dvc"]
    return subprocess.run([*command, *args], cwd=repo, env=env, capture_output=True, text=True, timeout=600)


def succeeded(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def files_under(folder: Path) -> dict[Path, bytes]:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_fetch_reruns_when_the_source_data_changes_not_when_it_moves(
    synthetic_repo: tuple[Path, dict[str, str]], synthetic_source: Path, tmp_path: Path
) -> None:
    repo, env = synthetic_repo
    assert "Running stage 'fetch'" in succeeded(dvc(repo, env, "repro", "fetch"))
    moved = shutil.copytree(synthetic_source, tmp_path / "elsewhere")
    env["MONUSEG_DIR"] = str(moved)
    out = succeeded(dvc(repo, env, "repro", "fetch"))
    assert "Running stage 'source'" in out and "Running stage 'fetch'" not in out
    write_rgb_tiff(moved / TEST_DIR / "TCGA-AC-0005-01Z.tif", seed=99)  # another source: one image differs
    assert "Running stage 'fetch'" in succeeded(dvc(repo, env, "repro", "fetch"))
    fetched = repo / "data/raw/monuseg/test/images/TCGA-AC-0005-01Z.tif"
    assert fetched.read_bytes() == (moved / TEST_DIR / "TCGA-AC-0005-01Z.tif").read_bytes()


def test_after_a_failed_repro_dvc_checkout_restores_the_previous_outputs(
    synthetic_repo: tuple[Path, dict[str, str]], synthetic_source: Path
) -> None:
    repo, env = synthetic_repo
    succeeded(dvc(repo, env, "repro", "masks"))
    interim = repo / "data/interim"
    before = files_under(interim)
    (synthetic_source / TEST_DIR / "TCGA-FG-0006-01Z.xml").write_text("<Annotations><Region>")
    failed = dvc(repo, env, "repro", "masks")
    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "TCGA-FG-0006-01Z.xml: malformed XML" in errors[0], failed.stderr
    assert not (interim / "train/labels").exists()  # DVC deletes a stage's outputs before running it
    succeeded(dvc(repo, env, "checkout", "masks"))
    assert files_under(interim) == before


VENV_DVC = Path(sys.executable).parent / "dvc"
needs_venv = pytest.mark.skipif(
    sys.prefix == sys.base_prefix or not VENV_DVC.is_file(), reason="the tests do not run from a virtual environment"
)
BARE_PATH = "/usr/bin:/bin"  # no python with patchunet on it


@needs_venv
def test_venv_dvc_runs_the_stages_without_the_environment_activated(
    synthetic_repo: tuple[Path, dict[str, str]],
) -> None:
    repo, env = synthetic_repo
    (repo / ".venv").symlink_to(sys.prefix)
    out = succeeded(dvc(repo, {**env, "PATH": BARE_PATH}, "repro", "source", dvc_command=str(repo / ".venv/bin/dvc")))
    assert "Running stage 'source'" in out and (repo / "data/source.json").is_file()


@needs_venv
def test_without_any_environment_a_stage_fails_in_one_line(synthetic_repo: tuple[Path, dict[str, str]]) -> None:
    repo, env = synthetic_repo
    result = dvc(repo, {**env, "PATH": BARE_PATH}, "repro", "source", dvc_command=str(VENV_DVC))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "error: no python with patchunet installed on PATH or in .venv: run `make setup`" in result.stderr
