"""Whole-image prediction: overlapping sliding windows, blended into one probability map.

The image is reflect-padded, so border pixels see context and sit away from window edges, and
so an image smaller than one window still works. Windows every `window - overlap` pixels run in
batches; each prediction is weighted by a Gaussian (or linear) bump that falls towards the
window's edges, where a convolutional net sees the least context, and the weighted sum is
normalised by the summed weights. A model that is exact everywhere is reproduced exactly.

Memory: only the uint8 image is padded, each batch of windows becomes float in turn, and the
weighted sum is divided in place, so the peak is C + 1 float32 maps of the padded image (sum and
weights) plus one uint8 padded copy and a batch of windows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Literal

import numpy as np
import torch

from patchunet.core.config import EvalConfig, InstanceHead
from patchunet.core.errors import ConfigError
from patchunet.data.dataset import as_model_input
from patchunet.inference.runtimes import Network, network_device
from patchunet.model.heads import activate
from patchunet.postprocess.instances import instances_from_maps
from patchunet.postprocess.tiling import tile_grid

Blend = Literal["gaussian", "linear"]
MIN_WEIGHT = 1e-3
"""Floor of the blending weights, so every pixel has weight even at a window's corner."""
GAUSSIAN_SIGMA = 1 / 8
"""Standard deviation of the Gaussian weights as a fraction of the window, as in nnU-Net."""


def blending_weights(window: int, blend: Blend) -> np.ndarray:
    """(window, window) float32 weights, 1 at the centre and falling towards the edges."""
    centre = (window - 1) / 2
    distance = np.arange(window) - centre
    if blend == "gaussian":
        profile = np.exp(-0.5 * (distance / (GAUSSIAN_SIGMA * window)) ** 2)
    elif blend == "linear":
        profile = 1 - np.abs(distance) / (centre + 1)
    else:
        raise ValueError(f"unknown blend {blend!r}: expected 'gaussian' or 'linear'")
    weights = np.outer(profile, profile)
    return np.maximum(weights / weights.max(), MIN_WEIGHT).astype(np.float32)


TensorMap = Callable[[torch.Tensor], torch.Tensor]


def dihedral_transforms() -> list[tuple[TensorMap, TensorMap]]:
    """The 8 flips and right-angle rotations, each with its inverse, acting on (N, C, H, W)."""
    transforms = []
    for flip in (False, True):
        for turns in range(4):

            def forward(x: torch.Tensor, flip: bool = flip, turns: int = turns) -> torch.Tensor:
                x = x.flip(-1) if flip else x
                return torch.rot90(x, turns, dims=(-2, -1)) if turns else x  # rot90 by 0 still copies

            def inverse(x: torch.Tensor, flip: bool = flip, turns: int = turns) -> torch.Tensor:
                x = torch.rot90(x, -turns, dims=(-2, -1)) if turns else x
                return x.flip(-1) if flip else x

            transforms.append((forward, inverse))
    return transforms


def predict_probabilities(model: Network, image: np.ndarray, **options: object) -> np.ndarray:
    """(H, W) float32 nucleus probabilities of an (H, W, 3) uint8 image: channel 0 of `predict_maps`."""
    return predict_maps(model, image, **options)[0]


def predict_maps(
    model: Network,
    image: np.ndarray,
    *,
    window: int,
    overlap: int,
    batch_size: int,
    blend: Blend = "gaussian",
    tta: bool = False,
    head: InstanceHead = "none",
    device: torch.device | str = "cpu",
    progress: Callable[[Iterable, int], Iterable] | None = None,
    needed: np.ndarray | None = None,
) -> np.ndarray:
    """(C, H, W) float32 maps of an (H, W, 3) uint8 image of any size: nucleus probabilities, then
    the instance `head`'s maps (heads.activate).

    `needed`, an (H, W) bool mask (a slide tile's tissue), skips the windows that hold none of its
    pixels: the maps are 0 where no window ran, and elsewhere blend only the windows that ran.

    `model` (a torch module or a `runtimes.Network`) maps (N, 3, window, window) images in [0, 1]
    to (N, C, window, window) logits. With
    `tta`, each window is also predicted under the 8 flips and rotations and the results averaged.
    `progress` wraps the iterable of window batches (and gets their count), for a progress bar.
    """
    if tta and head == "hover":
        raise ConfigError("eval.tta", "cannot average flipped HoVer-Net offset maps: set it to false for this model")
    if not 0 <= overlap < window:
        raise ValueError(f"overlap {overlap} must be at least 0 and smaller than the window {window}")
    height, width = image.shape[:2]
    margin = overlap // 2
    pad_y, pad_x = max(0, window - height - 2 * margin), max(0, window - width - 2 * margin)
    padding = ((margin, margin + pad_y), (margin, margin + pad_x), (0, 0))
    padded = np.pad(image, padding, mode="reflect")
    corners = [(tile.y, tile.x) for tile in tile_grid(padded.shape[:2], window, window - overlap)]
    if needed is not None:
        if needed.shape != image.shape[:2]:
            raise ValueError(f"the needed pixels' mask is {needed.shape}, the image {image.shape[:2]}")
        corners = needed_windows(corners, needed, window, margin)
    weights = blending_weights(window, blend)
    total: np.ndarray | None = None  # (C, H, W), once the model's channel count is known
    weight_sum = np.zeros(padded.shape[:2], np.float32)
    transforms = dihedral_transforms() if tta else dihedral_transforms()[:1]

    if isinstance(model, torch.nn.Module):
        model.eval()
    batches = list(_batched(corners, batch_size))
    with torch.inference_mode():
        for batch in progress(batches, len(batches)) if progress else batches:
            crops = np.stack([padded[y : y + window, x : x + window] for y, x in batch])
            # one conversion for the batch: per-window torch ops cost more than the network here
            windows = as_model_input(torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2))).to(device))
            maps = [inverse(activate(model(forward(windows)), head)) for forward, inverse in transforms]
            maps = maps[0] if len(maps) == 1 else sum(maps) / len(maps)
            maps = maps.float().cpu().numpy()  # float: a bf16 autocast's maps too
            if total is None:
                total = np.zeros((maps.shape[1], *padded.shape[:2]), np.float32)
            for (y, x), window_maps in zip(batch, maps, strict=True):
                total[:, y : y + window, x : x + window] += window_maps * weights
                weight_sum[y : y + window, x : x + window] += weights
    del padded
    np.divide(total, weight_sum, out=total, where=weight_sum > 0)  # 0 where no window ran (total's 0)
    del weight_sum
    return total[:, margin : margin + height, margin : margin + width]


def needed_windows(
    corners: list[tuple[int, int]], needed: np.ndarray, window: int, margin: int
) -> list[tuple[int, int]]:
    """Those of the windows (top-left `corners` in the image padded by `margin`) that hold a pixel
    of (H, W) bool `needed`; the first one if none does, so the maps still have their channels."""
    kept = [
        (y, x)
        for y, x in corners
        if needed[max(y - margin, 0) : y - margin + window, max(x - margin, 0) : x - margin + window].any()
    ]
    return kept or corners[:1]


def segment_image(
    model: Network,
    image: np.ndarray,
    cfg: EvalConfig,
    window: int,
    progress: Callable[[Iterable, int], Iterable] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """((C, H, W) maps, (H, W) instance labels) of an (H, W, 3) uint8 image, with the `eval` params.

    Maps and post-processing follow the model's instance head (`model.cfg.instance_head`).
    """
    maps = image_maps(model, image, cfg, window, progress)
    return maps, instances_from_maps(maps, model.cfg.instance_head, cfg)


def image_maps(
    model: Network,
    image: np.ndarray,
    cfg: EvalConfig,
    window: int,
    progress: Callable[[Iterable, int], Iterable] | None = None,
    needed: np.ndarray | None = None,
) -> np.ndarray:
    """`predict_maps` with the sliding-window `eval` params and the model's own head and device,
    for callers that post-process the same maps several ways (segment_image, the val search), or
    only where `needed` (a slide tile's tissue)."""
    return predict_maps(
        model,
        image,
        window=window,
        overlap=cfg.overlap,
        batch_size=cfg.batch_size,
        blend=cfg.blend,
        tta=cfg.tta,
        head=model.cfg.instance_head,
        device=network_device(model),
        progress=progress,
        needed=needed,
    )


def _batched(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
