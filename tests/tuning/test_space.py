import pytest
from conftest import REPO_ROOT

from patchunet.core.config import TuneConfig, load_params, parse_section
from patchunet.core.errors import ConfigError
from patchunet.tuning.space import apply_overrides, validate_space


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"train.lr": {"low": 1e-2, "high": 1e-2, "log": True}}, "tune.space.train.lr: empty range"),
        ({"patch.size": {"choices": [2048]}}, "tune.space.patch.size: 2048 is larger than the images (1000 px)"),
        ({"patch.size": {"choices": [128, 200]}}, "tune.space.patch.size: 200 is not divisible by 16"),
        ({"train.nope": {"low": 1, "high": 2}}, "tune.space.train.nope: params.yaml has no key train.nope"),
        ({}, "tune.space: is empty"),
        ({"patch.size": {"low": 128, "high": 256}}, "tune.space.patch.size: must be {choices"),
    ],
)
def test_bad_search_spaces_are_refused_with_the_key(space: dict, message: str) -> None:
    params = load_params(REPO_ROOT / "params.yaml")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cfg = parse_section(TuneConfig, {**params, "tune": {**params["tune"], "space": space}}, "tune")
        validate_space(cfg, params, image_side=1000)


def test_overrides_set_the_stride_with_the_size() -> None:
    params = {"patch": {"size": 256, "stride": 256}, "train": {"lr": 1e-3}}
    merged = apply_overrides(params, {"patch.size": 128, "train.lr": 0.005})
    assert merged == {"patch": {"size": 128, "stride": 128}, "train": {"lr": 0.005}}
    assert params["patch"]["size"] == 256  # the input is left alone
