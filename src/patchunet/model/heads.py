"""Instance heads: what PatchUNet predicts besides the foreground, to tell touching nuclei apart.

Channel 0 is always the foreground logit. The head adds:

- `none`: nothing (the plain baseline: touching nuclei are split by the distance transform alone);
- `boundary`: one logit per pixel for "on the inner boundary of a nucleus" (BCE + Dice);
- `distance`: each nucleus pixel's distance to its nucleus's border, divided by that nucleus's
  largest distance, so every nucleus peaks at 1 whatever its size (regressed, MSE on a sigmoid);
- `hover`: HoVer-Net's horizontal and vertical offsets of each pixel from its nucleus's centre of
  mass, scaled to [-1, 1] per nucleus (MSE plus MSE of their Sobel gradients inside nuclei).

Targets are made from the instance label map after augmentation, so they always agree with it.
Optionally a last target channel marks the contacts between nuclei (`contact_map`), where
`head_loss` weights the foreground BCE more (U-Net's weight map, Ronneberger et al. 2015).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.segmentation import find_boundaries

from patchunet.core.config import InstanceHead
from patchunet.model.losses import bce_dice_loss

HEAD_CHANNELS: dict[str, int] = {"none": 0, "boundary": 1, "distance": 1, "hover": 2}
"""Output channels each head adds to the foreground's one."""


def output_channels(head: InstanceHead) -> int:
    return 1 + HEAD_CHANNELS[head]


CONTACT_RADIUS = 2
"""A pixel is a contact when nuclei of two different ids lie within this many pixels (Chebyshev)."""


def make_targets(labels: np.ndarray, head: InstanceHead, contact: bool = False) -> np.ndarray:
    """(H, W) instance ids -> (C, H, W) float32 targets: the foreground, then the head's maps, then
    with `contact` the `contact_map` as the last channel."""
    targets = head_targets(labels, head)
    if contact:
        return np.concatenate([targets, contact_map(labels)[None]])
    return targets


def head_targets(labels: np.ndarray, head: InstanceHead) -> np.ndarray:
    """(H, W) instance ids -> (1 + HEAD_CHANNELS[head], H, W) float32: the foreground, then the head's maps."""
    foreground = (labels > 0).astype(np.float32)
    if head == "none":
        return foreground[None]
    if head == "boundary":
        return np.stack([foreground, find_boundaries(labels, mode="inner").astype(np.float32)])
    if head == "distance":
        return np.stack([foreground, normalised_distance(labels)])
    if head == "hover":
        return np.concatenate([foreground[None], centre_offsets(labels)])
    raise ValueError(f"unknown instance head {head!r}")


def contact_map(labels: np.ndarray) -> np.ndarray:
    """(H, W) instance ids -> (H, W) float32, 1 where the (2 * CONTACT_RADIUS + 1)-square around a
    pixel holds two different nuclei: the gaps between touching nuclei and their shared borders."""
    size = 2 * CONTACT_RADIUS + 1
    ids = labels.astype(np.int64)
    largest = ndimage.maximum_filter(ids, size=size, mode="nearest")
    # background set above every id, so the minimum filter finds the smallest nucleus id near the pixel
    smallest = ndimage.minimum_filter(np.where(ids > 0, ids, ids.max() + 1), size=size, mode="nearest")
    return (smallest < largest).astype(np.float32)


def normalised_distance(labels: np.ndarray) -> np.ndarray:
    """(H, W) float32: each nucleus pixel's distance to the nearest pixel outside its nucleus,
    divided by the largest such distance in the nucleus (so 1 at every nucleus's centre)."""
    distance = np.zeros(labels.shape, np.float32)
    for nucleus, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
        inside = labels[box] == nucleus
        local = ndimage.distance_transform_edt(inside)
        distance[box][inside] = (local[inside] / local.max()).astype(np.float32)
    return distance


def centre_offsets(labels: np.ndarray) -> np.ndarray:
    """(2, H, W) float32 HoVer-Net maps: x then y offset of each nucleus pixel from its nucleus's
    centre of mass, divided per nucleus and per side by the largest offset (so in [-1, 1])."""
    offsets = np.zeros((2, *labels.shape), np.float32)
    for nucleus, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        ys, xs = np.nonzero(labels[box] == nucleus)
        for channel, coords in ((0, xs), (1, ys)):
            shifted = coords - coords.mean()
            for side in (shifted < 0, shifted > 0):
                if side.any():
                    shifted[side] /= np.abs(shifted[side]).max()
            offsets[channel][box][ys, xs] = shifted
    return offsets


def activate(logits: torch.Tensor, head: InstanceHead) -> torch.Tensor:
    """(N, C, H, W) logits -> the maps post-processing reads: probabilities for the foreground,
    boundary and distance channels, the raw (linear) offsets for HoVer-Net's."""
    if head == "hover":
        return torch.cat([torch.sigmoid(logits[:, :1]), logits[:, 1:]], dim=1)
    return torch.sigmoid(logits)


def head_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    head: InstanceHead,
    *,
    bce_weight: float,
    dice_weight: float,
    head_weight: float,
    contact_weight: float = 0.0,
) -> torch.Tensor:
    """BCE + Dice on the foreground, plus `head_weight` times the head's own loss.

    With `contact_weight` > 0 the targets' last channel is `contact_map` (`make_targets(...,
    contact=True)`); it is no target of the head but weights each pixel's foreground BCE by
    1 + contact_weight * map, normalised by the mean weight (a weighted mean). The Dice is unweighted.
    """
    weights = None
    if contact_weight > 0:
        if targets.shape[1] != output_channels(head) + 1:
            raise ValueError(f"contact_weight needs the contact map after the {head!r} targets")
        weights = 1 + contact_weight * targets[:, -1:]
        targets = targets[:, :-1]
    loss = bce_dice_loss(logits[:, :1], targets[:, :1], bce_weight=bce_weight, dice_weight=dice_weight, weights=weights)
    if head == "none" or head_weight == 0:
        return loss
    extra_logits, extra_targets = logits[:, 1:], targets[:, 1:]
    if head == "boundary":
        extra = bce_dice_loss(extra_logits, extra_targets, bce_weight=bce_weight, dice_weight=dice_weight)
    elif head == "distance":
        extra = F.mse_loss(torch.sigmoid(extra_logits), extra_targets)
    elif head == "hover":
        inside = targets[:, :1].expand_as(extra_targets)
        gradient_error = (sobel(extra_logits) - sobel(extra_targets)) ** 2
        extra = F.mse_loss(extra_logits, extra_targets) + (gradient_error * inside).sum() / inside.sum().clamp(min=1)
    else:
        raise ValueError(f"unknown instance head {head!r}")
    return loss + head_weight * extra


SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4


def sobel(maps: torch.Tensor) -> torch.Tensor:
    """(N, 2, H, W) x and y offset maps -> d/dx of the first and d/dy of the second (HoVer-Net's MSGE)."""
    kernels = torch.stack([SOBEL_X, SOBEL_X.T])[:, None].to(maps)
    return F.conv2d(F.pad(maps, (1, 1, 1, 1), mode="replicate"), kernels, groups=2)
