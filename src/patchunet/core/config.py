"""Typed, validated views of the sections of params.yaml.

params.yaml is the single source of every value: these dataclasses have no defaults, so a
setting cannot silently come from code. Each stage parses only the sections it declares in
dvc.yaml, and a bad value fails here, before any work, with the key that is wrong.

The dataclasses are pydantic's, so a constraint is the field's type; `_section` turns pydantic's
report into the project's one-line `ConfigError` (in pydantic's words), whether the values come
from params.yaml or code.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, dataclass_transform

import yaml
from pydantic import (
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)
from pydantic.dataclasses import dataclass

from patchunet.core.errors import ConfigError, PatchUNetError

T = TypeVar("T")

AtLeastOne = Annotated[int, Field(ge=1)]
Fraction = Annotated[float, Field(gt=0, lt=1)]

MAX_AUGMENT_COPIES = 100
"""augment.copies at most: 100 copies of MoNuSeg's 30 training images at 256 px is ~50 GB of patches.
The patches stage also checks its estimate against the free memory and disk before it starts."""
MAX_LOADER_WORKERS = 64
"""train.num_workers at most; the loaders also use no more workers than this process has CPUs."""
PLAUSIBLE_MPP = (0.05, 5.0)
"""The µm per pixel a microscope image can have: the scales data.microns_per_pixel may declare, and
what tells a TIFF's real resolution from a screen default (72 dpi is 353 µm/px; `io.scale`)."""
MAX_NUCLEUS_AREA_UM2 = 1_200
"""µm²; MoNuSeg's largest nucleus is about this big (19,100 px at its 0.25 µm/px)."""
MAX_NUCLEUS_AREA = math.ceil(MAX_NUCLEUS_AREA_UM2 / PLAUSIBLE_MPP[0] ** 2)
"""Pixels (480,000); the largest area eval.min_nucleus_area, max_hole_area and min_marker_area may
have. Those are pixels at data.microns_per_pixel, so the bound is the largest nucleus at the finest
scale that key accepts: a fixed pixel count would refuse valid values at a fine scale (0.1 µm/px
puts MoNuSeg's largest nucleus at ~120,000 px). It still refuses a value no nucleus at any scale can
reach (1e12), whose evaluation would drop or fill every nucleus and find none without saying why; a
bound above the largest nucleus at the data's own scale is left to that scale's user."""
ObjectArea = Annotated[int, Field(ge=0, le=MAX_NUCLEUS_AREA)]

_STRICT = ConfigDict(
    extra="forbid",
    strict=True,  # no coercion: "4" is not 4 and true is not 1 (an int still counts as a float)
    allow_inf_nan=False,  # .nan and .inf are no setting
    str_strip_whitespace=True,
    str_min_length=1,  # nor is "" or "  ": null says none
)


@dataclass_transform(frozen_default=True)
def _section(name: str) -> Callable[[type[T]], type[T]]:
    """A frozen pydantic dataclass for the params.yaml section `name`. Building it with a bad value
    raises ConfigError naming `name.key`, so `dataclasses.replace` fails the way params.yaml does."""

    def build(cls: type[T]) -> type[T]:
        def one_line_error(config_cls: type, values: Any, handler: ModelWrapValidatorHandler) -> Any:
            try:
                return handler(values)
            except ValidationError as exc:
                raise _config_error(config_cls, name, exc) from None

        cls._one_line_error = model_validator(mode="wrap")(classmethod(one_line_error))  # type: ignore[attr-defined]
        return dataclass(frozen=True, config=_STRICT)(cls)

    return build


def _config_error(cls: type, section: str, exc: ValidationError) -> ConfigError:
    """Pydantic's first problem as one line; a misspelt key comes before the missing one it replaced."""
    error = min(exc.errors(), key=lambda e: e["type"] != "unexpected_keyword_argument")
    key = ".".join([section, *map(str, error["loc"])])
    match error["type"]:
        case "missing":
            problem = "is missing"
        case "unexpected_keyword_argument":
            problem = f"unknown key (expected one of {sorted(f.name for f in dataclasses.fields(cls))})"
        case _:  # "Input should be less than 1", "... a valid integer", "... a finite number"
            problem = f"{error['msg']}, got {error['input']!r}"
    return ConfigError(key, problem)


@_section("data")
class DataConfig:
    """Where the raw data comes from (`source` may be overridden by MONUSEG_DIR), and its scale:
    the one place it is declared, which the model trains at (`ModelConfig.microns_per_pixel`)."""

    source: str | None
    microns_per_pixel: Annotated[float, Field(ge=PLAUSIBLE_MPP[0], le=PLAUSIBLE_MPP[1])]
    train_zip_url: str
    train_zip_sha256: str
    test_zip_url: str
    test_zip_sha256: str


@_section("masks")
class MasksConfig:
    """How label maps are made when an image has both an XML and an instance map."""

    prefer: Literal["xml", "instance_map"]


@_section("split")
class SplitConfig:
    """Image-level train/val split of the official training images."""

    seed: int
    val_fraction: Fraction
    stratify_by_organ: bool


@_section("patch")
class PatchConfig:
    """Square patches of `size` pixels, taken every `stride` pixels."""

    size: PositiveInt
    stride: PositiveInt

    @model_validator(mode="after")
    def _stride_covers_every_pixel(self) -> PatchConfig:
        if self.stride > self.size:
            raise ConfigError(
                "patch.stride", f"{self.stride} is larger than patch.size {self.size}: pixels would be skipped"
            )
        return self


@_section("augment")
class AugmentConfig:
    """Offline augmentation of training images; limits are albumentations' ranges."""

    copies: Annotated[int, Field(ge=0, le=MAX_AUGMENT_COPIES)]
    seed: int
    rotate_limit: NonNegativeFloat
    scale_limit: Annotated[float, Field(ge=0, lt=1)]
    shift_limit: NonNegativeFloat
    stain_jitter: NonNegativeFloat
    stain_space: Literal["hestain", "hed"]


GROUPS = 8
"""Channel groups for GroupNorm; model.base_channels must be a multiple of it."""

InstanceHead = Literal["none", "boundary", "distance", "hover"]
"""What the network predicts besides the foreground, to separate touching nuclei: nothing (the
plain baseline), each nucleus's boundary, its distance to the boundary, or HoVer-Net's
horizontal and vertical distances to its centre."""


@_section("model")
class ModelConfig:
    """PatchUNet's shape: width of the first stage, number of pooling stages, regularisation,
    what it predicts besides the foreground, and the scale of the images it learns from.

    `microns_per_pixel` is not a key of params.yaml's `model` section: `parse_section` takes it from
    `data.microns_per_pixel`, the scale of the fetched images."""

    base_channels: PositiveInt
    depth: Annotated[int, Field(ge=1, le=6)]
    norm: Literal["batch", "group"]
    dropout: Annotated[float, Field(ge=0, lt=1)]
    instance_head: InstanceHead
    microns_per_pixel: PositiveFloat

    @model_validator(mode="after")
    def _groups_divide_the_channels(self) -> ModelConfig:
        if self.norm == "group" and self.base_channels % GROUPS:
            raise ConfigError("model.base_channels", f"must be a multiple of {GROUPS} for group norm")
        return self

    @property
    def size_multiple(self) -> int:
        """Input sides must be divisible by this: each encoder stage halves them."""
        return 2**self.depth


@_section("train")
class TrainConfig:
    """The training loop: optimiser, loss weights, callbacks and data loading."""

    seed: int
    epochs: PositiveInt
    batch_size: PositiveInt
    lr: PositiveFloat
    bce_weight: NonNegativeFloat
    dice_weight: NonNegativeFloat
    head_weight: NonNegativeFloat
    max_minutes: Annotated[float | None, Field(gt=0)]
    online_augment: bool
    early_stopping_patience: AtLeastOne
    early_stopping_min_delta: float
    lr_patience: NonNegativeInt
    lr_factor: Fraction
    min_lr: float
    num_workers: Annotated[int, Field(ge=0, le=MAX_LOADER_WORKERS)]
    precision: Literal["fp32", "bf16"]
    channels_last: bool
    schedule: Literal["plateau", "cosine"]
    warmup_epochs: NonNegativeInt
    select_by: Literal["val_dice", "val_aji", "last"]
    contact_weight: NonNegativeFloat
    refit: bool

    @model_validator(mode="after")
    def _some_loss(self) -> TrainConfig:
        if self.bce_weight + self.dice_weight == 0:
            raise ConfigError("train.bce_weight", "bce_weight and dice_weight cannot both be 0")
        return self

    @model_validator(mode="after")
    def _refit_keeps_its_last_epoch(self) -> TrainConfig:
        # the val images train too, so no val score may choose an epoch or stop the run
        if self.refit and self.select_by != "last":
            raise ConfigError("train.select_by", f"must be last with train.refit: true, got {self.select_by}")
        if self.refit and self.schedule != "cosine":  # a plateau schedule would follow the val loss
            raise ConfigError("train.schedule", f"must be cosine with train.refit: true, got {self.schedule}")
        return self


@_section("eval")
class EvalConfig:
    """Whole-image inference and post-processing, for evaluation and `patchunet predict`."""

    window: Annotated[int | None, Field(gt=0)]  # None: patch.size
    overlap: int
    blend: Literal["gaussian", "linear"]
    batch_size: PositiveInt
    tta: bool
    threshold: Fraction
    min_nucleus_area: ObjectArea
    max_hole_area: ObjectArea
    distance_sigma: NonNegativeFloat
    watershed_h: PositiveFloat
    marker_threshold: Fraction
    min_marker_area: ObjectArea
    samples: NonNegativeInt
    backend: Literal["torch", "onnxruntime", "openvino"]
    precision: Literal["fp32", "bf16"]

    @model_validator(mode="after")
    def _overlap_fits_the_window(self) -> EvalConfig:
        if self.overlap < 0 or (self.window is not None and self.overlap >= self.window):
            raise ConfigError("eval.overlap", f"must be at least 0 and smaller than eval.window, got {self.overlap}")
        return self

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


@_section("tune")
class TuneConfig:
    """The Optuna study: storage, budget, pruning and the search space over params.yaml keys."""

    study_name: str
    storage: str
    experiment: str
    n_trials: AtLeastOne
    epochs_per_trial: AtLeastOne
    workers: AtLeastOne
    heartbeat_seconds: AtLeastOne
    seed: int
    pruner: Literal["median", "successive_halving", "none"]
    pruner_warmup_epochs: NonNegativeInt
    space: dict

    @model_validator(mode="after")
    def _space_is_searchable(self) -> TuneConfig:
        if not self.space:
            raise ConfigError("tune.space", "is empty: name at least one params.yaml key to search")
        self.dimensions  # noqa: B018 - validates every entry now
        return self

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


@_section("mlflow")
class MlflowConfig:
    """Where runs go; MLFLOW_TRACKING_URI overrides `tracking_uri`."""

    tracking_uri: str | None
    experiment: str
    registered_model: str


@_section("serve")
class ServeConfig:
    """The registered model as MLflow serves it (`register` writes these into it)."""

    max_image_side: AtLeastOne  # at the model's scale: after resampling from the request's mpp
    max_images: AtLeastOne  # per request


@_section("slide")
class SlideConfig:
    """`patchunet predict-slide`: how a whole slide is tiled, and what counts as tissue."""

    tile_size: Annotated[int, Field(ge=256)]  # core side, in pixels of the level read
    tile_margin: Annotated[int, Field(ge=32)]  # context on each side; more than a nucleus reaches from its centroid
    tissue_saturation: Fraction  # HSV saturation from which a thumbnail pixel is tissue
    thumbnail_max_side: Annotated[int, Field(ge=64)]  # for the tissue mask and the overview PNG
    skip_glass: bool = True  # the network skips a tissue tile's windows on glass (false: runs them all)


@_section("dashboard")
class DashboardConfig:
    """The Streamlit review app: what it accepts for live inference, and where its run links point."""

    mlflow_ui_url: str  # where `mlflow ui` serves; ignored when the tracking URI is already a server
    max_upload_mb: AtLeastOne
    max_image_side: AtLeastOne


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "masks": MasksConfig,
    "split": SplitConfig,
    "patch": PatchConfig,
    "augment": AugmentConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "mlflow": MlflowConfig,
    "eval": EvalConfig,
    "tune": TuneConfig,
    "serve": ServeConfig,
    "slide": SlideConfig,
    "dashboard": DashboardConfig,
}
"""Every section params.yaml may hold, and its dataclass: `load_params` refuses any other."""


def parse_section(cls: type[T], params: dict[str, Any], section: str) -> T:
    """Build `cls` from `params[section]`; a missing, unknown or bad key raises ConfigError naming it.

    The patch section is also checked against `model.depth` when `params` has a model section, so
    that every stage refuses a patch size the network cannot take before any work (`patches`
    included, though its output does not depend on the depth)."""
    raw = params.get(section)
    if not isinstance(raw, dict):
        raise ConfigError(section, "section is missing or not a mapping")
    values = {str(k): v for k, v in raw.items()}  # YAML keys need not be strings
    if cls is ModelConfig:
        values = _with_training_scale(values, section, params)
    parsed = cls(**values)
    if isinstance(parsed, PatchConfig) and isinstance(params.get("model"), dict):
        _check_patch_fits_the_model(parsed, section, parse_section(ModelConfig, params, "model"))
    return parsed


def _check_patch_fits_the_model(patch: PatchConfig, section: str, model: ModelConfig) -> None:
    if patch.size % model.size_multiple:
        raise ConfigError(
            f"{section}.size",
            f"{patch.size} must be a multiple of {model.size_multiple} (2**model.depth): "
            f"the network halves its input model.depth times",
        )


def _with_training_scale(model: dict[str, Any], section: str, params: dict[str, Any]) -> dict[str, Any]:
    """The model section's values and the scale the model trains at: that of the data it is fetched from."""
    if "microns_per_pixel" in model:
        raise ConfigError(
            f"{section}.microns_per_pixel", "has moved to data.microns_per_pixel (the scale of the fetched images)"
        )
    return {**model, "microns_per_pixel": parse_section(DataConfig, params, "data").microns_per_pixel}


class _DuplicateKey(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last,
    so a second `eval:` section would silently replace the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        lines: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in lines:
                raise _DuplicateKey(f"key {key!r} is given twice (lines {lines[key]} and {line}); YAML keeps the last")
            lines[key] = line
        return super().construct_mapping(node, deep)


def load_params(path: Path) -> dict[str, Any]:
    """Read a params.yaml given explicitly by an entry point; the library never looks for one.

    Refuses a key given twice and a top-level section no stage reads (a misspelt `trian:`)."""
    try:
        params = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise PatchUNetError(f"{path}: params file not found") from None
    except OSError as exc:  # a folder, or no permission
        raise PatchUNetError(f"{path}: cannot read the params file ({exc.strerror})") from None
    except _DuplicateKey as exc:
        raise PatchUNetError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        problem = str(exc).replace("\n", " ")
        raise PatchUNetError(f"{path}: not valid YAML ({problem})") from None
    if not isinstance(params, dict):
        raise PatchUNetError(f"{path}: must be a mapping of sections")
    unknown = sorted(str(name) for name in params if name not in SECTIONS)
    if unknown:
        raise PatchUNetError(f"{path}: unknown section {unknown[0]!r} (expected one of {sorted(SECTIONS)})")
    return params
