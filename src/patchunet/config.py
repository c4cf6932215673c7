"""Typed, validated views of the sections of params.yaml.

params.yaml is the single source of every value: these dataclasses have no defaults, so a
setting cannot silently come from code. Each stage parses only the sections it declares in
dvc.yaml, and a bad value fails here, before any work, with the key that is wrong.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from patchunet.errors import ConfigError, PatchUNetError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the raw MoNuSeg data comes from. `source` may be overridden by MONUSEG_DIR."""

    source: str | None
    train_zip_url: str
    train_zip_sha256: str
    test_zip_url: str
    test_zip_sha256: str


@dataclasses.dataclass(frozen=True)
class MasksConfig:
    """How label maps are made when an image has both an XML and an instance map."""

    prefer: Literal["xml", "instance_map"]


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """Image-level train/val split of the official training images."""

    seed: int
    val_fraction: float
    stratify_by_organ: bool

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError("split.val_fraction", f"must be between 0 and 1, got {self.val_fraction}")


@dataclasses.dataclass(frozen=True)
class PatchConfig:
    """Square patches of `size` pixels, taken every `stride` pixels."""

    size: int
    stride: int

    def __post_init__(self) -> None:
        if self.size <= 0:
            raise ConfigError("patch.size", f"must be positive, got {self.size}")
        if self.stride <= 0:
            raise ConfigError("patch.stride", f"must be positive, got {self.stride}")
        if self.stride > self.size:
            raise ConfigError(
                "patch.stride", f"{self.stride} is larger than patch.size {self.size}: pixels would be skipped"
            )


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Offline augmentation of training images; limits are albumentations' ranges."""

    copies: int
    seed: int
    rotate_limit: float
    scale_limit: float
    shift_limit: float
    stain_jitter: float

    def __post_init__(self) -> None:
        if self.copies < 0:
            raise ConfigError("augment.copies", f"must be 0 or more, got {self.copies}")
        for name in ("rotate_limit", "scale_limit", "shift_limit", "stain_jitter"):
            if getattr(self, name) < 0:
                raise ConfigError(f"augment.{name}", f"must be 0 or more, got {getattr(self, name)}")
        if self.scale_limit >= 1:
            raise ConfigError("augment.scale_limit", f"must be below 1, got {self.scale_limit}")


GROUPS = 8
"""Channel groups for GroupNorm; model.base_channels must be a multiple of it."""

InstanceHead = Literal["none", "boundary", "distance", "hover"]
"""What the network predicts besides the foreground, to separate touching nuclei: nothing (the
plain baseline), each nucleus's boundary, its distance to the boundary, or HoVer-Net's
horizontal and vertical distances to its centre."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """PatchUNet's shape: width of the first stage, number of pooling stages, regularisation,
    what it predicts besides the foreground, and the scale of the images it learns from."""

    base_channels: int
    depth: int
    norm: Literal["batch", "group"]
    dropout: float
    instance_head: InstanceHead
    microns_per_pixel: float

    def __post_init__(self) -> None:
        if self.base_channels < 1:
            raise ConfigError("model.base_channels", f"must be positive, got {self.base_channels}")
        if self.norm == "group" and self.base_channels % GROUPS:
            raise ConfigError("model.base_channels", f"must be a multiple of {GROUPS} for group norm")
        if not 1 <= self.depth <= 6:
            raise ConfigError("model.depth", f"must be between 1 and 6, got {self.depth}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("model.dropout", f"must be in [0, 1), got {self.dropout}")
        if self.microns_per_pixel <= 0:
            raise ConfigError("model.microns_per_pixel", f"must be above 0, got {self.microns_per_pixel}")

    @property
    def size_multiple(self) -> int:
        """Input sides must be divisible by this: each encoder stage halves them."""
        return 2**self.depth


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The training loop: optimiser, loss weights, callbacks and data loading."""

    seed: int
    epochs: int
    batch_size: int
    lr: float
    bce_weight: float
    dice_weight: float
    head_weight: float
    max_minutes: float | None
    online_augment: bool
    early_stopping_patience: int
    early_stopping_min_delta: float
    lr_patience: int
    lr_factor: float
    min_lr: float
    num_workers: int

    def __post_init__(self) -> None:
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr}
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"train.{name}", f"must be positive, got {value}")
        if self.bce_weight < 0 or self.dice_weight < 0 or self.bce_weight + self.dice_weight == 0:
            raise ConfigError("train.bce_weight", "bce_weight and dice_weight must be >= 0 and not both 0")
        if self.head_weight < 0:
            raise ConfigError("train.head_weight", f"must be 0 or more, got {self.head_weight}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigError("train.max_minutes", f"must be above 0 or null, got {self.max_minutes}")
        if not 0 < self.lr_factor < 1:
            raise ConfigError("train.lr_factor", f"must be between 0 and 1, got {self.lr_factor}")
        if self.early_stopping_patience < 1:
            raise ConfigError("train.early_stopping_patience", f"must be 1 or more, got {self.early_stopping_patience}")
        for name in ("lr_patience", "num_workers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name}", f"must be 0 or more, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Whole-image inference and post-processing, for evaluation and `patchunet predict`."""

    window: int | None  # None: patch.size
    overlap: int
    blend: Literal["gaussian", "linear"]
    batch_size: int
    tta: bool
    threshold: float
    min_nucleus_area: int
    max_hole_area: int
    distance_sigma: float
    watershed_h: float
    marker_threshold: float
    min_marker_area: int
    samples: int

    def __post_init__(self) -> None:
        if self.window is not None and self.window <= 0:
            raise ConfigError("eval.window", f"must be positive, got {self.window}")
        if self.overlap < 0 or (self.window is not None and self.overlap >= self.window):
            raise ConfigError("eval.overlap", f"must be at least 0 and smaller than eval.window, got {self.overlap}")
        if self.batch_size < 1:
            raise ConfigError("eval.batch_size", f"must be positive, got {self.batch_size}")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError("eval.threshold", f"must be between 0 and 1, got {self.threshold}")
        if not 0.0 < self.marker_threshold < 1.0:
            raise ConfigError("eval.marker_threshold", f"must be between 0 and 1, got {self.marker_threshold}")
        for name in ("min_nucleus_area", "max_hole_area", "distance_sigma", "min_marker_area", "samples"):
            if getattr(self, name) < 0:
                raise ConfigError(f"eval.{name}", f"must be 0 or more, got {getattr(self, name)}")
        if self.watershed_h <= 0:
            raise ConfigError("eval.watershed_h", f"must be above 0, got {self.watershed_h}")

    def window_for(self, patch_size: int, size_multiple: int) -> int:
        """The sliding window: `window`, or else `patch.size`; the model must accept it."""
        window = self.window or patch_size
        if window % size_multiple:
            raise ConfigError("eval.window", f"{window} must be divisible by {size_multiple} (2**model.depth)")
        if self.overlap >= window:
            raise ConfigError("eval.overlap", f"{self.overlap} must be smaller than the window {window}")
        return window


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One searched parameter: a float or int range (`low`..`high`, `log` scale) or `choices`."""

    key: str  # the params.yaml key it overrides, e.g. "train.lr"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """The Optuna study: storage, budget, pruning and the search space over params.yaml keys."""

    study_name: str
    storage: str
    experiment: str
    n_trials: int
    epochs_per_trial: int
    workers: int
    seed: int
    pruner: Literal["median", "successive_halving", "none"]
    pruner_warmup_epochs: int
    space: dict

    def __post_init__(self) -> None:
        for name in ("n_trials", "epochs_per_trial", "workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"tune.{name}", f"must be 1 or more, got {getattr(self, name)}")
        if self.pruner_warmup_epochs < 0:
            raise ConfigError("tune.pruner_warmup_epochs", f"must be 0 or more, got {self.pruner_warmup_epochs}")
        if not self.space:
            raise ConfigError("tune.space", "is empty: name at least one params.yaml key to search")
        self.dimensions  # noqa: B018 - validates every entry now

    @property
    def dimensions(self) -> list[Dimension]:
        return [_dimension(key, spec) for key, spec in self.space.items()]


def _dimension(key: str, spec: Any) -> Dimension:
    where = f"tune.space.{key}"
    if not isinstance(key, str) or key.count(".") != 1:
        raise ConfigError(where, "must be a params.yaml key as section.name, e.g. train.lr")
    if isinstance(spec, dict) and set(spec) == {"choices"}:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(where, f"choices must be a non-empty list, got {choices!r}")
        return Dimension(key, choices=tuple(choices))
    if not isinstance(spec, dict) or not {"low", "high"} <= set(spec) <= {"low", "high", "log"}:
        raise ConfigError(where, f"must be {{low, high[, log]}} or {{choices: [...]}}, got {spec!r}")
    low, high, log = spec["low"], spec["high"], spec.get("log", False)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high)):
        raise ConfigError(where, f"low and high must be finite numbers, got {low!r} and {high!r}")
    if low >= high:
        raise ConfigError(where, f"empty range: low {low} is not below high {high}")
    if log and low <= 0:
        raise ConfigError(where, f"a log range must start above 0, got low {low}")
    return Dimension(key, low=low, high=high, log=bool(log))


@dataclasses.dataclass(frozen=True)
class MlflowConfig:
    """Where runs go; MLFLOW_TRACKING_URI overrides `tracking_uri`."""

    tracking_uri: str | None
    experiment: str
    registered_model: str


@dataclasses.dataclass(frozen=True)
class DashboardConfig:
    """The Streamlit review app: what it accepts for live inference, and where its run links point."""

    mlflow_ui_url: str  # where `mlflow ui` serves; ignored when the tracking URI is already a server
    max_upload_mb: int
    max_image_side: int

    def __post_init__(self) -> None:
        for name in ("max_upload_mb", "max_image_side"):
            if getattr(self, name) < 1:
                raise ConfigError(f"dashboard.{name}", f"must be 1 or more, got {getattr(self, name)}")


def parse_section(cls: type[T], params: dict[str, Any], section: str) -> T:
    """Build `cls` from `params[section]`, naming the exact key that is missing or wrong."""
    raw = params.get(section)
    if not isinstance(raw, dict):
        raise ConfigError(section, "section is missing or not a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ConfigError(f"{section}.{unknown[0]}", f"unknown key (expected one of {sorted(fields)})")
    values = {}
    for name in fields:
        key = f"{section}.{name}"
        if name not in raw:
            raise ConfigError(key, "is missing")
        values[name] = _checked(raw[name], hints[name], key)
    return cls(**values)


def _checked(value: Any, hint: Any, key: str) -> Any:
    """Check one YAML value against a type hint; ints are accepted where floats are expected.

    Empty strings and non-finite numbers (.nan, .inf) are refused for every key: no setting means either.
    """
    if isinstance(value, str) and not value.strip():
        optional = type(None) in get_args(hint)
        raise ConfigError(key, "is an empty string" + ("; write null for none" if optional else ""))
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(key, f"must be a finite number, got {value}")
    origin = get_origin(hint)
    if origin is Literal:
        if value not in get_args(hint):
            raise ConfigError(key, f"must be one of {list(get_args(hint))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        for option in get_args(hint):
            try:
                return _checked(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(key, f"has the wrong type: {value!r}")
    if hint is type(None):
        if value is not None:
            raise ConfigError(key, f"must be empty, got {value!r}")
        return None
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (hint is int and isinstance(value, bool)) or not isinstance(value, hint):
        raise ConfigError(key, f"must be a {hint.__name__}, got {value!r}")
    return value


def load_params(path: Path) -> dict[str, Any]:
    """Read a params.yaml given explicitly by an entry point; the library never looks for one."""
    try:
        params = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PatchUNetError(f"{path}: params file not found") from None
    except OSError as exc:  # a folder, or no permission
        raise PatchUNetError(f"{path}: cannot read the params file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        problem = str(exc).replace("\n", " ")
        raise PatchUNetError(f"{path}: not valid YAML ({problem})") from None
    if not isinstance(params, dict):
        raise PatchUNetError(f"{path}: must be a mapping of sections")
    return params
