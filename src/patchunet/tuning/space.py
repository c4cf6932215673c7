"""The search space: checked before any training, sampled per trial, put into a copy of the params."""

from __future__ import annotations

import copy
from typing import Any

import optuna

from patchunet.core.config import Dimension, ModelConfig, TuneConfig, parse_section
from patchunet.core.errors import ConfigError


def validate_space(cfg: TuneConfig, params: dict[str, Any], image_side: int) -> None:
    """Refuse a search space the trials could not run, naming the key, before any training."""
    size_multiple = parse_section(ModelConfig, params, "model").size_multiple
    for dimension in cfg.dimensions:
        section, name = dimension.key.split(".")
        if name not in params.get(section, {}):
            raise ConfigError(f"tune.space.{dimension.key}", f"params.yaml has no key {dimension.key} to override")
        if dimension.key == "patch.size":
            validate_patch_sizes(dimension, image_side, size_multiple)


def validate_patch_sizes(dimension: Dimension, image_side: int, size_multiple: int) -> None:
    if dimension.choices is None:
        raise ConfigError("tune.space.patch.size", "must be {choices: [...]}: most sizes in a range fit no model")
    for size in dimension.choices:
        if not isinstance(size, int) or size <= 0:
            raise ConfigError("tune.space.patch.size", f"patch sizes must be positive integers, got {size!r}")
        if size > image_side:
            raise ConfigError("tune.space.patch.size", f"{size} is larger than the images ({image_side} px)")
        if size % size_multiple:
            raise ConfigError("tune.space.patch.size", f"{size} is not divisible by {size_multiple} (2**model.depth)")


def suggest(trial: optuna.Trial, dimensions: list[Dimension]) -> dict[str, Any]:
    """The trial's value for each searched key."""
    values: dict[str, Any] = {}
    for d in dimensions:
        if d.choices is not None:
            values[d.key] = trial.suggest_categorical(d.key, list(d.choices))
        elif isinstance(d.low, int) and isinstance(d.high, int):
            values[d.key] = trial.suggest_int(d.key, d.low, d.high, log=d.log)
        else:
            values[d.key] = trial.suggest_float(d.key, d.low, d.high, log=d.log)
    return values


def apply_overrides(params: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of params.yaml with `values` ({"section.name": value}) put in.

    A searched patch size also sets the stride to match, unless the stride is searched too:
    patches then tile without overlap, as the defaults do.
    """
    merged = copy.deepcopy(params)
    for key, value in values.items():
        section, name = key.split(".")
        merged[section][name] = value
    if "patch.size" in values and "patch.stride" not in values:
        merged["patch"]["stride"] = values["patch.size"]
    return merged
