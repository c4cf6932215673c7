"""The dashboard's tables and figures, from the records `tracking` returns."""

from __future__ import annotations

import math
import re

import pytest

from patchunet.tracking import RunSummary, VersionSummary

import review

UI = "http://127.0.0.1:5000"


def make_run(
    run_id: str, params: dict, metrics: dict | None = None, tags: dict | None = None, name: str = ""
) -> RunSummary:
    return RunSummary(
        run_id=run_id,
        experiment_id="7",
        name=name or run_id,
        status="FINISHED",
        params={k: str(v) for k, v in params.items()},
        metrics=dict(metrics or {}),
        tags={k: str(v) for k, v in (tags or {}).items()},
    )


def make_version(
    number: int, run_id: str, scores: dict[str, float], created_ms: int, aliases: tuple[str, ...] = ()
) -> VersionSummary:
    tags = {f"test_{k}": str(v) for k, v in scores.items()}
    return VersionSummary("patchunet", number, run_id, created_ms, aliases, tags)


@pytest.fixture
def table():
    runs = {
        "a": make_run(
            "a",
            {"train.lr": 1e-3, "patch.size": 256, "model.base_channels": 8, "model.depth": 4},
            {"model/parameters": 486553},
        ),
        "b": make_run(
            "b",
            {
                "train.lr": 5e-4,
                "patch.size": 128,
                "model.base_channels": 16,
                "model.depth": 3,
                "model.instance_head": "boundary",
            },
            {"model/parameters": 900000},
        ),
        "c": make_run("c", {"train.lr": 1e-2, "patch.size": 256, "model.base_channels": 8, "model.depth": 4}),
    }
    versions = [
        make_version(3, "c", {}, 3_000),  # not evaluated yet
        make_version(
            2, "b", {"dice": 0.80, "aji": 0.66, "pq": 0.60, "seconds_per_image": 2.5}, 2_000, ("challenger", "champion")
        ),
        make_version(1, "a", {"dice": 0.82, "aji": 0.64, "pq": 0.61, "seconds_per_image": 1.8}, 1_000),
    ]
    return review.version_table(versions, runs, UI)


def test_version_table_has_one_row_per_version_with_aliases_scores_params_and_link(table) -> None:
    assert table["version"].tolist() == [3, 2, 1]
    assert table["aliases"].tolist() == ["", "challenger, champion", ""]
    row = table.set_index("version").loc[2]
    assert (row["Dice"], row["AJI"], row["lr"], row["patch"], row["width"], row["depth"]) == (
        0.8,
        0.66,
        5e-4,
        128,
        16,
        3,
    )
    assert row["parameters"] == 900000 and row["s/image"] == 2.5
    assert row["created"].value == 2_000 * 1_000_000
    assert row["run"] == f"{UI}/#/experiments/7/runs/b"
    assert table["heads"].tolist() == ["foreground", "foreground + boundary", "foreground"]  # 1, 3: before heads
    unevaluated = table.set_index("version").loc[3]
    assert math.isnan(unevaluated["Dice"]) and math.isnan(unevaluated["parameters"])


def test_highlight_marks_the_best_of_each_column_and_skips_missing_values(table) -> None:
    styled = review.highlight_best(table)
    html = styled.to_html()
    highlighted = {(int(r), int(c)) for r, c in re.findall(r"#T_\w+_row(\d+)_col(\d+)", html)}
    columns = list(table.columns)
    assert {(r, c) for r, c in highlighted if columns[c] in ("Dice", "AJI", "PQ", "parameters", "s/image")} == {
        (2, columns.index("Dice")),
        (1, columns.index("AJI")),
        (2, columns.index("PQ")),
        (2, columns.index("parameters")),
        (2, columns.index("s/image")),
    }


def test_score_comparison_is_long_form_in_the_chosen_order(table) -> None:
    long = review.score_comparison(table, [1, 2])
    assert long["version"].unique().tolist() == ["v1", "v2 (challenger, champion)"]
    assert set(long["score"]) == set(review.SCORE_COLUMNS)
    assert long.set_index(["version", "score"]).loc[("v1", "AJI"), "value"] == 0.64
    figure = review.comparison_figure(long)
    assert [trace.name for trace in figure.data] == ["v1", "v2 (challenger, champion)"]


def test_curves_overlay_every_version_in_one_panel_per_metric() -> None:
    curves = review.curve_table(
        {"v1": {"val/dice": [(0, 0.5), (1, 0.6)], "train/loss": [(0, 1.0)]}, "v2": {"val/dice": [(0, 0.55)]}}
    )
    assert len(curves) == 4 and set(curves["metric"]) == {"val/dice", "train/loss"}
    figure = review.curves_figure(curves)
    assert {trace.name for trace in figure.data} == {"v1", "v2"}
    assert {a.text for a in figure.layout.annotations} == {"val/dice", "train/loss"}


def test_trials_come_from_child_runs_with_best_so_far_over_complete_trials_only() -> None:
    parent = make_run("p", {}, tags={"optuna.study": "s1"}, name="s1")
    children = [
        make_run(
            f"t{n}",
            {"train.lr": lr, "patch.size": size, "trial.number": n, "train.epochs": 2},
            tags={"mlflow.parentRunId": "p", "optuna.trial_number": n, "optuna.state": state},
        )
        for n, lr, size, state in [(0, 1e-3, 256, "COMPLETE"), (1, 1e-2, 128, "PRUNED"), (2, 5e-4, 128, "COMPLETE")]
    ]
    trials = review.trial_table([children[2], parent, children[0], children[1]], {"t0": 0.7, "t1": 0.9, "t2": 0.75})
    assert trials["trial"].tolist() == [0, 1, 2] and set(trials["study"]) == {"s1"}
    assert list(trials.columns) == ["study", "trial", "state", "val dice", "train.lr", "patch.size"]
    history = review.optimisation_history(trials)
    assert history["best_so_far"].tolist() == [0.7, 0.7, 0.75]  # the pruned 0.9 is no objective value
    assert len(review.history_figure(history).data) == 3
    assert review.lr_patch_figure(trials).layout.xaxis.type == "log"
    assert review.trial_table([parent], {}).empty


def test_zoom_region_stays_inside_the_image() -> None:
    assert review.zoom_region((1000, 1000), 1, (0.5, 0.5)) == (slice(0, 1000), slice(0, 1000))
    assert review.zoom_region((1000, 800), 4, (0.5, 0.5)) == (slice(375, 625), slice(300, 500))
    assert review.zoom_region((1000, 1000), 4, (0.0, 1.0)) == (slice(0, 250), slice(750, 1000))


def test_links_point_at_the_server_itself_when_tracking_is_a_server() -> None:
    assert review.ui_url_for("http://mlflow:5000", UI) == "http://mlflow:5000"
    assert review.ui_url_for("sqlite:///mlflow.db", UI) == UI
