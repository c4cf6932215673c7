"""Image-level train/val split, stratified by organ where the group sizes allow it.

Splitting by image (never by patch) is what keeps overlapping or augmented patches of one
image from landing on both sides.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from patchunet.core.errors import ConfigError, DataError


def split_train_val(
    image_ids: list[str], groups: dict[str, str] | None, val_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Return sorted (train_ids, val_ids) with round(n * val_fraction) images in val.

    With `groups` (image id -> organ), each organ gets its proportional share of val images;
    the seats left after the whole shares go to the organs with the largest remainders (ties
    broken by the seeded generator). An organ is never emptied into val entirely, so a single
    image of a rare organ stays in train: that is where stratification cannot be honoured.
    """
    ids = sorted(image_ids)
    if len(ids) < 2:
        raise ConfigError("split.val_fraction", f"needs at least 2 training images to split, got {len(ids)}")
    n_val = min(max(1, round(len(ids) * val_fraction)), len(ids) - 1)
    rng = np.random.default_rng(seed)
    by_group: dict[str, list[str]] = defaultdict(list)
    for image_id in ids:
        by_group[groups[image_id] if groups else "all"].append(image_id)
    names = sorted(by_group)
    quotas = _allocate(np.array([len(by_group[g]) for g in names]), n_val, rng)
    val: list[str] = []
    for name, quota in zip(names, quotas, strict=True):
        members = by_group[name]
        val += [members[i] for i in rng.permutation(len(members))[:quota]]
    return sorted(set(ids) - set(val)), sorted(val)


def _allocate(sizes: np.ndarray, n_val: int, rng: np.random.Generator) -> np.ndarray:
    """Largest-remainder allocation of `n_val` seats, at most size-1 per group where possible."""
    exact = sizes * n_val / sizes.sum()
    capacity = np.where(sizes > 1, sizes - 1, 0)
    if capacity.sum() < n_val:  # too many tiny groups: allow emptying groups
        capacity = sizes.copy()
    quotas = np.minimum(np.floor(exact).astype(int), capacity)
    order = np.lexsort((rng.random(len(sizes)), -(exact - quotas)))
    while quotas.sum() < n_val:
        for i in order:
            if quotas.sum() == n_val:
                break
            if quotas[i] < capacity[i]:
                quotas[i] += 1
    return quotas


def read_split(path: Path) -> dict[str, list[str]]:
    """The split stage's output, refusing one where an image is on both sides."""
    try:
        split = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(path, f"cannot read the split ({exc}); run `dvc repro split`") from None
    overlap = set(split["train"]) & set(split["val"])
    if overlap:
        raise DataError(path, f"train and val share images: {sorted(overlap)}")
    return split
