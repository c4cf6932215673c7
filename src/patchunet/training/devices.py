"""Where and at what precision training and inference run: chosen once by the caller, never inside the loop."""

from __future__ import annotations

import contextlib
import logging
from typing import Literal

import torch

from patchunet.core.resources import worker_count

log = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16"]


def pick_device() -> torch.device:
    """CUDA where present, else the CPU with one thread per available core."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    torch.set_num_threads(worker_count())
    return torch.device("cpu")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes in bf16 natively: CUDA with bf16 support, or a CPU with AMX tiles or
    AVX512-BF16. Elsewhere oneDNN emulates bf16, slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and (torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def training_precision(requested: Precision, device: torch.device) -> Precision:
    """`requested` (train.precision), or fp32 where bf16 is not native on `device`, said in one line."""
    if requested == "bf16" and not native_bf16(device):
        log.info(f"train: train.precision bf16 is not native on this {device.type} (no AMX or AVX512-BF16): using fp32")
        return "fp32"
    return requested


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` for `precision` bf16 (matrix products and convolutions in bf16,
    reductions and losses left to fp32 by autocast's own lists); nothing for fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
