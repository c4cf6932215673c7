"""Instance heads: what PatchUNet predicts besides the foreground, to tell touching nuclei apart.

Channel 0 is always the foreground logit. The head adds:

- `none`: nothing (the plain baseline: touching nuclei are split by the distance transform alone);
- `boundary`: one logit per pixel for "on the inner boundary of a nucleus" (BCE + Dice);
- `distance`: each nucleus pixel's distance to its nucleus's border, divided by that nucleus's
  largest distance, so every nucleus peaks at 1 whatever its size (regressed, MSE on a sigmoid);
- `hover`: HoVer-Net's horizontal and vertical offsets of each pixel from its nucleus's centre of
  mass, scaled to [-1, 1] per nucleus (MSE plus MSE of their Sobel gradients inside nuclei).

Their targets are made from the instance labels (data/targets.py). Optionally a last target
channel marks the contacts between nuclei (`data.targets.contact_map`), where
`head_loss` weights the foreground BCE more (U-Net's weight map, Ronneberger et al. 2015).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from patchunet.core.config import InstanceHead
from patchunet.model.losses import bce_dice_loss

HEAD_CHANNELS: dict[str, int] = {"none": 0, "boundary": 1, "distance": 1, "hover": 2}
"""Output channels each head adds to the foreground's one."""


def output_channels(head: InstanceHead) -> int:
    return 1 + HEAD_CHANNELS[head]


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
