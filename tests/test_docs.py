"""The docs: the pages docs/generate.py makes at build time, and the README as a short front door.

`make test` builds the whole site with `mkdocs build --strict` (broken links and anchors fail it);
these tests check what the generated pages say, on files the tests write themselves.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from conftest import REPO_ROOT

from patchunet.cli import build_parser

ISSUE_NUMBER = re.compile(r"\bissues? \d+|(?<![\w&])#\d+\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def generate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_generate", REPO_ROOT / "docs" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_test_metrics(root: Path, aji: float) -> None:
    scores = dict.fromkeys(("dice", "iou", "aji", "aji_plus", "pq", "dq", "sq", "precision", "recall", "f1"), 0.5)
    test = {
        "images": 3,
        "per_image_mean": {**scores, "aji": aji},
        "dataset": scores,
        "window": 128,
        "tta": False,
        "seconds_per_image": 0.1,
        "eval_protocol": "0123456789ab",
    }
    train = {"best_epoch": 1, "epochs_run": 2, "val_dice": 0.7, "val_iou": 0.6, "parameters": 1234}
    (root / "metrics").mkdir(parents=True)
    (root / "metrics" / "test.json").write_text(json.dumps(test))
    (root / "metrics" / "train.json").write_text(json.dumps(train))


def test_results_page_shows_the_numbers_of_the_metrics_files_it_reads(generate, tmp_path):
    write_test_metrics(tmp_path, aji=0.4321)
    page = generate.results_page(tmp_path)
    assert "| per-image mean | 0.5000 | 0.5000 | 0.4321 |" in page
    assert "1,234 parameters" in page


def test_results_page_names_the_command_that_writes_a_missing_file(generate, tmp_path):
    write_test_metrics(tmp_path, aji=0.5)
    page = generate.results_page(tmp_path)
    assert "`reports/seeds.csv` is not in this checkout yet" in page
    assert "`reports/ablation.csv` is not in this checkout yet" in page


def test_results_page_gives_mean_and_sd_over_the_seeds(generate, tmp_path):
    write_test_metrics(tmp_path, aji=0.5)
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "seeds.csv").write_text("seed,source,epochs,aji\n0,dvc repro,2,0.5\n1,this script,2,0.7\n")
    page = generate.results_page(tmp_path)
    assert "| **mean ± sd** |  |  | **0.6000** ± 0.1414 |" in page


def test_params_reference_lists_every_key_of_params_yaml_with_its_value(generate):
    page = generate.params_reference(REPO_ROOT)
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    for section, values in params.items():
        assert f"## `{section}`" in page
        for key, value in values.items():
            assert f"| `{key}` | " in page and f"| `{generate.yaml_value(value)}` |" in page, f"{section}.{key}"


def test_params_reference_says_what_a_key_accepts(generate):
    page = generate.params_reference(REPO_ROOT)
    assert "| `instance_head` | one of `none`, `boundary`, `distance`, `hover` |" in page
    assert "| `max_minutes` | number > 0 or null |" in page


def test_cli_reference_has_a_section_for_every_command(generate):
    page = generate.cli_reference(REPO_ROOT)
    for command in generate.subcommands(build_parser()):
        assert f"## `patchunet {command}`" in page


def test_readme_is_a_short_front_door_without_issue_numbers():
    readme = (REPO_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert not ISSUE_NUMBER.findall(readme)


def test_docs_cite_no_issue_numbers():
    pages = [REPO_ROOT / "CHANGELOG.md", *(REPO_ROOT / "docs").rglob("*.md")]
    cited = {page.name: ISSUE_NUMBER.findall(page.read_text()) for page in pages}
    assert not {name: found for name, found in cited.items() if found}


def test_the_outputs_page_lists_every_column_of_the_nucleus_table_in_order() -> None:
    from patchunet.postprocess.nuclei import NUCLEUS_TABLE

    page = (REPO_ROOT / "docs" / "reference" / "outputs.md").read_text()
    rows = [f"| `{c.name}` | {c.type} | {c.unit} | {c.description} |" for c in NUCLEUS_TABLE]
    assert all(row in page for row in rows), [row for row in rows if row not in page]
    assert [page.index(row) for row in rows] == sorted(page.index(row) for row in rows)
