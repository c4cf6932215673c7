"""PatchUNet: a lightweight U-Net for nucleus segmentation of H&E patches.

Encoder: `depth` stages of two 3x3 convolutions then 2x2 max-pooling, doubling the width each
time from `base_channels`. A bottleneck, then a decoder of 2x2 transposed convolutions that each
take the matching encoder output as a skip connection. A 1x1 head gives the foreground logit per
pixel, plus the channels of the instance head (`model.instance_head`, see heads.py).
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import torch
from torch import nn

from patchunet.core.config import GROUPS, ModelConfig
from patchunet.core.errors import ConfigError, PatchUNetError, first_line
from patchunet.core.files import atomic_file
from patchunet.model.heads import output_channels


def conv_block(in_channels: int, out_channels: int, norm: str, dropout: float) -> nn.Sequential:
    """Two 3x3 convolutions, each followed by normalisation and ReLU; dropout between them."""

    def normalisation() -> nn.Module:
        return nn.BatchNorm2d(out_channels) if norm == "batch" else nn.GroupNorm(GROUPS, out_channels)

    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        normalisation(),
        nn.ReLU(inplace=True),
        nn.Dropout2d(dropout) if dropout else nn.Identity(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        normalisation(),
        nn.ReLU(inplace=True),
    )


class PatchUNet(nn.Module):
    """(N, 3, H, W) float images in [0, 1] -> (N, C, H, W) logits; H and W divisible by 2**depth.

    C is 1 (the foreground) plus the instance head's channels.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        widths = [cfg.base_channels * 2**i for i in range(cfg.depth)]  # one per encoder stage
        self.encoders = nn.ModuleList(
            conv_block(c_in, c_out, cfg.norm, cfg.dropout)
            for c_in, c_out in zip([3, *widths[:-1]], widths, strict=True)
        )
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = conv_block(widths[-1], 2 * widths[-1], cfg.norm, cfg.dropout)
        # decoder stage for width c: upsample 2c -> c, concatenate the skip (c), convolve 2c -> c
        self.upsamplers = nn.ModuleList(nn.ConvTranspose2d(2 * c, c, 2, stride=2) for c in reversed(widths))
        self.decoders = nn.ModuleList(conv_block(2 * c, c, cfg.norm, cfg.dropout) for c in reversed(widths))
        self.head = nn.Conv2d(widths[0], output_channels(cfg.instance_head), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x.shape, self.cfg.size_multiple)
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for upsample, decoder, skip in zip(self.upsamplers, self.decoders, reversed(skips), strict=True):
            x = decoder(torch.cat([upsample(x), skip], dim=1))
        return self.head(x)


def check_input_size(shape: torch.Size | tuple[int, ...], multiple: int) -> None:
    """Refuse inputs the encoder cannot halve `depth` times, instead of a shape error deep inside."""
    height, width = shape[-2], shape[-1]
    if height % multiple or width % multiple:
        raise PatchUNetError(
            f"input of {height}x{width} pixels: both sides must be divisible by {multiple} (2**model.depth)"
        )


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_model(model: PatchUNet, path: Path, **metadata: object) -> None:
    """Save weights with the config that rebuilds them (and `metadata`, plain values only), atomically."""
    with atomic_file(path) as tmp:
        torch.save({"model_config": dataclasses.asdict(model.cfg), "state_dict": model.state_dict(), **metadata}, tmp)


MODEL_CONFIG_BEFORE_HEADS = {"instance_head": "none", "microns_per_pixel": 0.25}
"""What a model file saved before these keys existed was: a foreground-only model of MoNuSeg at 40x."""


def load_model(path: Path) -> PatchUNet:
    """Rebuild a PatchUNet, on the CPU in eval mode, from a file of `save_model` or a training
    checkpoint (`best.pt`, `last.pt`)."""
    if not path.is_file():
        raise PatchUNetError(f"{path}: model file not found")
    saved = load_tensor_file(path, "not a PatchUNet model file")
    try:
        model = PatchUNet(ModelConfig(**{**MODEL_CONFIG_BEFORE_HEADS, **saved["model_config"]}))
        model.load_state_dict(saved["state_dict"] if "state_dict" in saved else saved["model"])
    except ConfigError as exc:  # the file's own model config, not params.yaml's
        raise PatchUNetError(f"{path}: the model config this file holds is invalid: {exc.key}: {exc.problem}") from None
    except Exception as exc:  # a missing key or weights of another shape
        raise PatchUNetError(f"{path}: not a PatchUNet model file ({type(exc).__name__}: {first_line(exc)})") from None
    check_finite_weights(model, path)
    return model.eval()


def check_finite_weights(model: nn.Module, path: Path) -> None:
    """Refuse weights or statistics that hold NaN or infinity (a diverged training run): the model
    would predict no nucleus anywhere and pass for a model that found none."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise PatchUNetError(
                f"{path}: its weights hold NaN or infinite values (first in {name}): the training that wrote it "
                "diverged; use another checkpoint or train again"
            )


TORCH_SAVE_MAGIC = (b"PK\x03\x04", b"\x80")
"""How a `torch.save` file begins: a zip archive (torch 1.6 on), or a pickle (protocol 2 or later) before."""
KNOWN_FORMATS = {
    b"II*\x00": "a TIFF image",
    b"MM\x00*": "a TIFF image",
    b"II+\x00": "a BigTIFF image",
    b"MM\x00+": "a BigTIFF image",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
}


def is_torch_save_file(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4).startswith(TORCH_SAVE_MAGIC)


def file_kind(path: Path) -> str:
    """What a file that `torch.save` did not write seems to be, from its first bytes, for an error."""
    with path.open("rb") as f:
        head = f.read(8)
    if not head:
        return "it is empty"
    kind = next((kind for magic, kind in KNOWN_FORMATS.items() if head.startswith(magic)), None)
    return f"it is {kind}" if kind else f"it begins with the bytes {head!r}"


def load_tensor_file(path: Path, problem: str) -> dict:
    """The dict a `torch.save` file holds, if it holds only tensors and plain values (dict, list,
    str, numbers, None); anything else is refused unread, as unpickling it could run code.

    `problem` says what the file is not, in the one-line error, e.g. "unreadable checkpoint".
    """
    if not is_torch_save_file(path):
        raise PatchUNetError(f"{path}: {problem}: not a file torch.save writes ({file_kind(path)})")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise PatchUNetError(f"{path}: {problem} (UnpicklingError: {first_line(exc)})") from None
        raise PatchUNetError(
            f"{path}: {problem}: it holds Python objects, not only tensors and plain values, "
            "and loading them could run code; refused"
        ) from None
    except Exception as exc:  # torch.load raises many types for a truncated or foreign file
        raise PatchUNetError(f"{path}: {problem} ({type(exc).__name__}: {first_line(exc)})") from None
    if not isinstance(saved, dict):
        raise PatchUNetError(f"{path}: {problem} (it holds a {type(saved).__name__}, not a dict)")
    return saved
