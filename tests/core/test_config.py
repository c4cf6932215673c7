import dataclasses
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from patchunet.core.config import (
    MAX_NUCLEUS_AREA,
    AugmentConfig,
    DashboardConfig,
    DataConfig,
    EvalConfig,
    MasksConfig,
    MlflowConfig,
    ModelConfig,
    PatchConfig,
    SplitConfig,
    TrainConfig,
    TuneConfig,
    load_params,
    parse_section,
)
from patchunet.core.errors import ConfigError, PatchUNetError

PARAMS = load_params(REPO_ROOT / "params.yaml")


@pytest.mark.parametrize(
    ("cls", "section"),
    [
        (DataConfig, "data"),
        (MasksConfig, "masks"),
        (SplitConfig, "split"),
        (PatchConfig, "patch"),
        (AugmentConfig, "augment"),
        (ModelConfig, "model"),
        (TrainConfig, "train"),
        (MlflowConfig, "mlflow"),
        (EvalConfig, "eval"),
        (TuneConfig, "tune"),
        (DashboardConfig, "dashboard"),
    ],
)
def test_repo_params_parse(cls, section: str) -> None:
    assert isinstance(parse_section(cls, PARAMS, section), cls)


def with_value(section: str, key: str, value) -> dict:
    return {**PARAMS, section: {**PARAMS[section], key: value}}


@pytest.mark.parametrize(
    ("cls", "section", "key", "value", "message"),
    [
        (PatchConfig, "patch", "stride", 0, "patch.stride: Input should be greater than 0"),
        (PatchConfig, "patch", "size", -4, "patch.size: Input should be greater than 0"),
        (PatchConfig, "patch", "stride", 512, "larger than patch.size"),
        (AugmentConfig, "augment", "copies", -1, "augment.copies: Input should be greater than or equal to 0"),
        (AugmentConfig, "augment", "scale_limit", 1.5, "augment.scale_limit: Input should be less than 1"),
        (SplitConfig, "split", "val_fraction", 1.0, "split.val_fraction: Input should be less than 1"),
        (PatchConfig, "patch", "size", "big", "patch.size: Input should be a valid integer, got 'big'"),
        (PatchConfig, "patch", "size", True, "patch.size: Input should be a valid integer, got True"),
        (MasksConfig, "masks", "prefer", "png", "masks.prefer: Input should be 'xml' or 'instance_map', got 'png'"),
        (TrainConfig, "train", "batch_size", 0, "train.batch_size: Input should be greater than 0"),
        (
            TrainConfig,
            "train",
            "early_stopping_patience",
            0,
            "train.early_stopping_patience: Input should be greater than or equal to 1",
        ),
        (TrainConfig, "train", "lr_factor", 1.5, "train.lr_factor"),
        (ModelConfig, "model", "depth", 0, "model.depth: Input should be greater than or equal to 1"),
        (EvalConfig, "eval", "overlap", -1, "eval.overlap: must be at least 0"),
        (EvalConfig, "eval", "threshold", 1.0, "eval.threshold: Input should be less than 1"),
        (EvalConfig, "eval", "blend", "cosine", "eval.blend: Input should be 'gaussian' or 'linear', got 'cosine'"),
        (EvalConfig, "eval", "batch_size", 0, "eval.batch_size: Input should be greater than 0"),
        (ModelConfig, "model", "norm", "layer", "model.norm: Input should be 'batch' or 'group', got 'layer'"),
    ],
)
def test_bad_values_name_their_key(cls, section, key, value, message) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_section(cls, with_value(section, key, value), section)


def test_unknown_and_missing_keys_are_named() -> None:
    with pytest.raises(ConfigError, match=r"patch\.sise: unknown key"):
        parse_section(PatchConfig, with_value("patch", "sise", 3), "patch")
    with pytest.raises(ConfigError, match=r"patch\.stride: is missing"):
        parse_section(PatchConfig, {"patch": {"size": 3}}, "patch")
    with pytest.raises(ConfigError, match="patch: section is missing"):
        parse_section(PatchConfig, {}, "patch")


@pytest.mark.parametrize(
    ("cls", "section", "values", "message"),
    [
        (
            TrainConfig,
            "train",
            {"online_augment": "yes"},
            "train.online_augment: Input should be a valid boolean, got 'yes'",
        ),
        (TrainConfig, "train", {"lr": "1e-3"}, "train.lr: Input should be a valid number, got '1e-3'"),
        (TrainConfig, "train", {"lr_factor": 0}, "train.lr_factor: Input should be greater than 0, got 0"),
        (TrainConfig, "train", {"max_minutes": 0}, "train.max_minutes: Input should be greater than 0, got 0"),
        (ModelConfig, "model", {"dropout": 1.0}, "model.dropout: Input should be less than 1, got 1.0"),
        (TuneConfig, "tune", {"n_trials": 0}, "tune.n_trials: Input should be greater than or equal to 1, got 0"),
        (
            DashboardConfig,
            "dashboard",
            {"max_upload_mb": 0.5},
            "dashboard.max_upload_mb: Input should be a valid integer, got 0.5",
        ),
        (PatchConfig, "patch", {"sise": 256}, "patch.sise: unknown key (expected one of ['size', 'stride'])"),
        (
            TrainConfig,
            "train",
            {"bce_weight": 0, "dice_weight": 0},
            "train.bce_weight: bce_weight and dice_weight cannot",
        ),
    ],
)
def test_each_problem_is_one_line_naming_the_file_and_key(cls, section: str, values: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_section(cls, {**PARAMS, section: {**PARAMS[section], **values}}, section)
    assert str(caught.value).startswith(f"params.yaml {message}") and "\n" not in str(caught.value)


def test_a_missing_key_is_named_even_beside_others() -> None:
    without_lr = {k: v for k, v in PARAMS["train"].items() if k != "lr"}
    with pytest.raises(ConfigError, match=r"^params\.yaml train\.lr: is missing$"):
        parse_section(TrainConfig, {"train": without_lr}, "train")


def test_a_misspelt_key_is_named_before_the_key_it_replaced() -> None:
    with pytest.raises(ConfigError, match=r"^params\.yaml patch\.sise: unknown key"):
        parse_section(PatchConfig, {"patch": {"sise": 256, "stride": 256}}, "patch")


def test_configs_built_in_code_are_checked_as_params_yaml_is() -> None:
    train = parse_section(TrainConfig, PARAMS, "train")
    assert dataclasses.replace(train, epochs=1).epochs == 1
    with pytest.raises(ConfigError, match=r"^params\.yaml train\.epochs: Input should be greater than 0, got 0$"):
        dataclasses.replace(train, epochs=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        train.epochs = 1  # type: ignore[misc]


def test_ints_are_accepted_where_floats_are_expected() -> None:
    assert parse_section(AugmentConfig, with_value("augment", "rotate_limit", 15), "augment").rotate_limit == 15.0


def test_broken_yaml_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("patch: [unclosed\n")
    with pytest.raises(PatchUNetError, match=r"params\.yaml: not valid YAML"):
        load_params(tmp_path / "params.yaml")


def test_eval_window_defaults_to_the_patch_size_and_must_suit_the_model() -> None:
    cfg = parse_section(EvalConfig, PARAMS, "eval")
    assert cfg.window is None and cfg.window_for(256, 16) == 256
    with pytest.raises(ConfigError, match=r"eval.window: 200 must be divisible by 16"):
        cfg.window_for(200, 16)
    with pytest.raises(ConfigError, match=r"eval.overlap: 64 must be smaller than the window 48"):
        cfg.window_for(48, 16)  # a patch size of 48 as the window
    with pytest.raises(ConfigError, match=r"eval.overlap: must be at least 0 and smaller than eval.window"):
        parse_section(EvalConfig, with_value("eval", "window", 48), "eval")


@pytest.mark.parametrize(
    ("cls", "section", "key", "value"),
    [
        (TrainConfig, "train", "lr", float("nan")),
        (TrainConfig, "train", "min_lr", float("inf")),
        (AugmentConfig, "augment", "rotate_limit", float("nan")),
        (EvalConfig, "eval", "distance_sigma", float("inf")),
        (SplitConfig, "split", "val_fraction", float("nan")),
        (ModelConfig, "model", "dropout", float("-inf")),
    ],
)
def test_non_finite_floats_are_refused(cls, section: str, key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=rf"{section}\.{key}: Input should be a finite number, got {value}"):
        parse_section(cls, with_value(section, key, value), section)


def test_yaml_nan_is_refused_as_written(tmp_path: Path) -> None:
    text = (REPO_ROOT / "params.yaml").read_text().replace("lr: 0.001", "lr: .nan")
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"train\.lr: Input should be a finite number, got nan"):
        parse_section(TrainConfig, load_params(tmp_path / "params.yaml"), "train")


def test_non_finite_search_range_is_refused() -> None:
    space = {"train.lr": {"low": float("nan"), "high": 0.1}}
    with pytest.raises(ConfigError, match=r"tune\.space\.train\.lr: low and high must be finite numbers"):
        parse_section(TuneConfig, with_value("tune", "space", space), "tune")


@pytest.mark.parametrize(
    ("cls", "section", "key"),
    [
        (MlflowConfig, "mlflow", "experiment"),
        (MlflowConfig, "mlflow", "registered_model"),
        (MlflowConfig, "mlflow", "tracking_uri"),  # null, not "", says none
        (TuneConfig, "tune", "study_name"),
        (DataConfig, "data", "source"),
    ],
)
def test_empty_strings_are_refused(cls, section: str, key: str) -> None:
    for blank in ("", "  "):
        message = rf"^params\.yaml {section}\.{key}: String should have at least 1 character, got '{blank}'$"
        with pytest.raises(ConfigError, match=message):
            parse_section(cls, with_value(section, key, blank), section)


def test_params_path_that_is_a_folder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PatchUNetError, match=r": cannot read the params file \(Is a directory\)$"):
        load_params(tmp_path)


def test_the_model_trains_at_the_scale_of_the_data() -> None:
    params = {**PARAMS, "data": {**PARAMS["data"], "microns_per_pixel": 0.5}}
    assert parse_section(ModelConfig, params, "model").microns_per_pixel == 0.5


def test_model_microns_per_pixel_is_refused_with_where_it_moved() -> None:
    params = {**PARAMS, "model": {**PARAMS["model"], "microns_per_pixel": 0.25}}
    with pytest.raises(ConfigError, match=r"model\.microns_per_pixel: has moved to data\.microns_per_pixel"):
        parse_section(ModelConfig, params, "model")


def test_a_bad_data_scale_is_named_as_data_microns_per_pixel() -> None:
    params = {**PARAMS, "data": {**PARAMS["data"], "microns_per_pixel": 0}}
    with pytest.raises(ConfigError, match=r"data\.microns_per_pixel: Input should be greater than or equal to 0.05"):
        parse_section(ModelConfig, params, "model")


@pytest.mark.parametrize("size", [8, 100])
def test_a_patch_size_the_network_cannot_take_is_refused_with_the_patch_section(size: int) -> None:
    """Every stage parses `patch` first: `patches` refuses it before `dvc repro` reaches `train`."""
    message = rf"^params\.yaml patch\.size: {size} must be a multiple of 16 \(2\*\*model\.depth\)"
    with pytest.raises(ConfigError, match=message):
        parse_section(PatchConfig, {**PARAMS, "patch": {"size": size, "stride": 8}}, "patch")


def test_a_patch_size_is_checked_against_the_depth_params_yaml_gives() -> None:
    params = {**PARAMS, "patch": {"size": 96, "stride": 96}}
    assert parse_section(PatchConfig, params, "patch").size == 96  # 96 = 6 * 16
    with pytest.raises(ConfigError, match=r"patch\.size: 96 must be a multiple of 64"):
        parse_section(PatchConfig, {**params, "model": {**PARAMS["model"], "depth": 6}}, "patch")


def write_params(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_an_unknown_section_is_refused_naming_the_file_and_the_section(tmp_path: Path) -> None:
    text = (REPO_ROOT / "params.yaml").read_text() + "\ntrian:\n  epochs: 3\n"
    with pytest.raises(PatchUNetError, match=r"params\.yaml: unknown section 'trian' \(expected one of \[") as raised:
        load_params(write_params(tmp_path, text))
    assert "\n" not in str(raised.value)


def test_a_section_given_twice_is_refused_not_replaced(tmp_path: Path) -> None:
    text = (REPO_ROOT / "params.yaml").read_text() + "\neval:\n  threshold: 0.9\n"
    message = r"params\.yaml: key 'eval' is given twice \(lines \d+ and \d+\)"
    with pytest.raises(PatchUNetError, match=message) as raised:
        load_params(write_params(tmp_path, text))
    assert "\n" not in str(raised.value)


def test_a_key_given_twice_inside_a_section_is_refused(tmp_path: Path) -> None:
    text = (REPO_ROOT / "params.yaml").read_text().replace("  seed: 42\n", "  seed: 42\n  seed: 43\n")
    with pytest.raises(PatchUNetError, match=r"key 'seed' is given twice"):
        load_params(write_params(tmp_path, text))


@pytest.mark.parametrize("key", ["min_nucleus_area", "max_hole_area", "min_marker_area"])
def test_an_object_area_no_nucleus_can_reach_is_refused(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"eval\.{key}: Input should be less than or equal to {MAX_NUCLEUS_AREA}"):
        parse_section(EvalConfig, with_value("eval", key, 10**12), "eval")


@pytest.mark.parametrize("key", ["min_nucleus_area", "max_hole_area", "min_marker_area"])
def test_an_object_area_of_a_large_nucleus_at_a_fine_scale_is_accepted(key: str) -> None:
    assert parse_section(DataConfig, with_value("data", "microns_per_pixel", 0.1), "data")
    largest_at_a_tenth_of_a_micron = 119_000  # MoNuSeg's largest nucleus, ~1,190 µm², at 0.1 µm/px
    config = parse_section(EvalConfig, with_value("eval", key, largest_at_a_tenth_of_a_micron), "eval")
    assert getattr(config, key) == largest_at_a_tenth_of_a_micron


@pytest.mark.parametrize("mpp", [0.01, 50.0])
def test_a_data_scale_no_microscope_gives_is_refused(mpp: float) -> None:
    with pytest.raises(ConfigError, match=r"data\.microns_per_pixel: Input should be (greater|less) than or equal"):
        parse_section(DataConfig, with_value("data", "microns_per_pixel", mpp), "data")


@pytest.mark.parametrize(
    ("cls", "section", "key", "value"),
    [(AugmentConfig, "augment", "copies", 1_000_000_000), (TrainConfig, "train", "num_workers", 10_000)],
)
def test_sizes_the_machine_cannot_hold_are_refused(cls, section: str, key: str, value: int) -> None:
    with pytest.raises(ConfigError, match=rf"^params\.yaml {section}\.{key}: Input should be less than or equal to"):
        parse_section(cls, with_value(section, key, value), section)


def test_a_refit_must_keep_its_last_epoch_on_a_cosine_schedule() -> None:
    params = {**PARAMS, "train": {**PARAMS["train"], "refit": True, "select_by": "val_aji", "schedule": "cosine"}}
    with pytest.raises(ConfigError, match=r"train\.select_by: must be last with train\.refit: true, got val_aji"):
        parse_section(TrainConfig, params, "train")
    params["train"] |= {"select_by": "last", "schedule": "plateau"}
    with pytest.raises(ConfigError, match=r"train\.schedule: must be cosine with train\.refit: true, got plateau"):
        parse_section(TrainConfig, params, "train")
    params["train"]["schedule"] = "cosine"
    assert parse_section(TrainConfig, params, "train").refit
