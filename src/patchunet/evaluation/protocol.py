"""The evaluation protocol: which settings gave a score, and which test images are shown.

Two models' scores compare only under the same protocol, so `register` compares versions by its
hash; the sample images are the same for every version, so the dashboard can set them side by side.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable

from patchunet.core.config import EvalConfig

RUNTIME_SETTINGS = ("backend", "precision")


def protocol_hash(cfg: EvalConfig, window: int) -> str:
    """12 hex digits naming the eval params and window the scores came from.

    `samples` is left out: which images are drawn changes no score; so are the runtime and its
    precision (`backend`, `precision`), which move scores by far less than any setting does
    (README, "Fast inference"). The hash is stored as a version tag and compared with the
    champion's: changing how it is computed makes every old champion incomparable, so keep it stable.
    """
    settings = {**dataclasses.asdict(cfg), "window": window, "samples": None}
    for runtime_setting in RUNTIME_SETTINGS:
        settings.pop(runtime_setting)
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def sample_ids(image_ids: Iterable[str], count: int) -> set[str]:
    """`count` ids spread evenly over the sorted ids: the same images for every model version."""
    ordered = sorted(image_ids)
    count = min(count, len(ordered))
    return {ordered[i * len(ordered) // count] for i in range(count)}
