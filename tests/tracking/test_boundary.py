"""Only `patchunet.tracking` and `patchunet.serving` (the models MLflow serves) talk to MLflow: every other module
of the project goes through them."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO_ROOT

PROJECT_CODE = ("src", "pipelines", "dashboard", "benchmarks")
TRACKING = REPO_ROOT / "src" / "patchunet" / "tracking"
SERVING = REPO_ROOT / "src" / "patchunet" / "serving"


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of its code (lazy imports in functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def project_modules() -> list[Path]:
    return [path for folder in PROJECT_CODE for path in sorted((REPO_ROOT / folder).rglob("*.py"))]


def test_no_module_outside_tracking_and_serving_imports_mlflow() -> None:
    modules = project_modules()
    assert any(path.is_relative_to(TRACKING) for path in modules)  # the scan does see the tracking package
    offenders = [
        str(path.relative_to(REPO_ROOT))
        for path in modules
        if not (path.is_relative_to(TRACKING) or path.is_relative_to(SERVING))
        and any(name == "mlflow" or name.startswith("mlflow.") for name in imported_modules(path))
    ]
    assert offenders == []


def test_the_core_package_imports_neither_streamlit_nor_pandas() -> None:
    """They are the `dashboard` extra's: `pip install patchunet` must train, evaluate and predict without them."""
    heavy = {"streamlit", "pandas"}
    offenders = [
        str(path.relative_to(REPO_ROOT))
        for path in sorted((REPO_ROOT / "src").rglob("*.py"))
        if {name.split(".")[0] for name in imported_modules(path)} & heavy
    ]
    assert offenders == []
