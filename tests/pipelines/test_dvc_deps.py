"""dvc.yaml's deps cannot drift from the code: every stage lists every patchunet (and benchmarks)
module its scripts import, directly or through other modules, including imports inside functions (a
file dep, or a folder dep that holds it), and no other. Otherwise a change to that module would not
rerun the stage, or a change to a module it never runs would."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_ROOT = REPO_ROOT / "src"
BENCHMARKS = REPO_ROOT / "benchmarks"
SEARCH_ROOTS = {"patchunet": PACKAGE_ROOT, "benchmarks": REPO_ROOT}
"""Where each top-level package's modules lie: benchmarks/ runs as modules from the project root."""
DVC_FILES = ("dvc.yaml", "tune/dvc.yaml", "benchmarks/experiments/dvc.yaml")  # all run from the project root
STAGES = {
    f"{dvc_file}:{name}": stage
    for dvc_file in DVC_FILES
    for name, stage in yaml.safe_load((REPO_ROOT / dvc_file).read_text())["stages"].items()
}


RUN_BY_PATH = {
    PACKAGE_ROOT / "patchunet/tracking/logged_models.py": [PACKAGE_ROOT / "patchunet/tracking/served_model.py"],
    PACKAGE_ROOT / "patchunet/serving/nuclei_model.py": [PACKAGE_ROOT / "patchunet/serving/served_nuclei.py"],
}
"""Files a module hands to MLflow by path instead of importing them (the logged "model from code")."""


def module_file(name: str) -> Path | None:
    """The file of a dotted patchunet or benchmarks module name, or None when it names no module (a class, say)."""
    base = SEARCH_ROOTS[name.split(".")[0]].joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Dotted names of the patchunet and benchmarks modules a file imports anywhere in it (`from a
    import b` counts b when b is a module, else a)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.split(".")[0] in SEARCH_ROOTS}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in SEARCH_ROOTS:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if module_file(name) is not None}


def only_a_docstring(file: Path) -> bool:
    """A package's `__init__.py` that runs nothing: no stage needs to list it."""
    body = ast.parse(file.read_text()).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def transitive_files(*scripts: Path) -> set[Path]:
    """Every patchunet and benchmarks file the scripts run: their imports, their imports' imports, and
    their packages' __init__ (those that run code)."""
    seen: set[Path] = set()
    pending = set().union(*(imported_modules(script) for script in scripts))
    while pending:
        name = pending.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # the packages a module's import runs
            file = module_file(".".join(parts[:depth]))
            if file is not None and file not in seen:
                seen.add(file)
                pending |= imported_modules(file)
                for run_file in RUN_BY_PATH.get(file, []):
                    seen.add(run_file)
                    pending |= imported_modules(run_file)
    return {file for file in seen if not only_a_docstring(file)}


def stage_scripts(stage: dict) -> list[Path]:
    """The script of each of the stage's commands: `python script.py`, or `python -m package.module`."""
    scripts = []
    for command in [stage["cmd"]] if isinstance(stage["cmd"], str) else stage["cmd"]:
        words = command.split()
        if "-m" in words:
            scripts.append(REPO_ROOT.joinpath(*words[words.index("-m") + 1].split(".")).with_suffix(".py"))
        else:
            scripts.append(REPO_ROOT / next(word for word in words if word.endswith(".py")))
    return scripts


def stage_deps(stage: dict) -> list[str]:
    return [dep if isinstance(dep, str) else next(iter(dep)) for dep in stage.get("deps", [])]


def is_code(path: Path) -> bool:
    return path.is_relative_to(PACKAGE_ROOT) or path.is_relative_to(BENCHMARKS)


def covered(file: Path, deps: list[str]) -> bool:
    return any(file == REPO_ROOT / dep or (REPO_ROOT / dep) in file.parents for dep in deps)


@pytest.mark.parametrize("stage_name", sorted(STAGES))
def test_stage_deps_cover_every_module_its_script_imports(stage_name: str) -> None:
    stage = STAGES[stage_name]
    deps = stage_deps(stage)
    scripts = stage_scripts(stage)
    for script in scripts:
        assert script.relative_to(REPO_ROOT).as_posix() in deps, f"{stage_name}: its script {script} is not a dep"
    missing = sorted(f.relative_to(REPO_ROOT).as_posix() for f in transitive_files(*scripts) if not covered(f, deps))
    assert not missing, f"dvc.yaml stage {stage_name} does not depend on modules it imports: {missing}"


@pytest.mark.parametrize("stage_name", sorted(STAGES))
def test_stage_deps_name_no_module_its_script_does_not_run(stage_name: str) -> None:
    stage = STAGES[stage_name]
    scripts = stage_scripts(stage)
    code = [REPO_ROOT / dep for dep in stage_deps(stage) if is_code(REPO_ROOT / dep)]
    listed = {file for dep in code for file in ([dep] if dep.suffix == ".py" else dep.rglob("*.py"))} - set(scripts)
    runs = transitive_files(*scripts)
    extra = sorted(f.relative_to(REPO_ROOT).as_posix() for f in listed - runs if not only_a_docstring(f))
    assert not extra, f"dvc.yaml stage {stage_name} depends on modules its script never runs: {extra}"


def test_the_import_walk_follows_imports_inside_functions(tmp_path: Path) -> None:
    script = tmp_path / "stage.py"
    script.write_text("def main():\n    from patchunet.evaluation.metrics import PixelCounts\n")
    assert PACKAGE_ROOT / "patchunet/evaluation/metrics.py" in transitive_files(script)


PIPELINE_STAGES = sorted(name for name in STAGES if not name.startswith("benchmarks/"))
"""The stages of `dvc repro` and tuning; the experiments' stages are benchmark scripts."""


@pytest.mark.parametrize("stage_name", PIPELINE_STAGES)
def test_each_stage_script_runs_its_library_stage(stage_name: str) -> None:
    """pipelines/<stage>.py is a thin wrapper: the walk follows it into patchunet.stages.<stage>."""
    stage = stage_name.split(":")[1]
    assert PACKAGE_ROOT / f"patchunet/stages/{stage}.py" in transitive_files(*stage_scripts(STAGES[stage_name]))
