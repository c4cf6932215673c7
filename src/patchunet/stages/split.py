"""Stage `split`: data/interim/split.json, an image-level train/val split of the training set.

Val comes from the official training images only, stratified by organ (from the TCGA site code)
where the groups allow; test is the official test set, used for final evaluation alone.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

from patchunet.core.config import SplitConfig, parse_section
from patchunet.core.files import write_json
from patchunet.core.paths import RAW_DIR, SPLIT_FILE
from patchunet.data.monuseg import organ_of, pair_files, raw_dirs
from patchunet.data.split import split_train_val


@dataclasses.dataclass(frozen=True)
class SplitSummary:
    split_file: Path
    split: dict
    """{"train": ids, "val": ids, "test": ids, "seed": split.seed}, as written."""


def run(params: dict, root: Path) -> SplitSummary:
    """Split the fetched training images into train and val; test is the official test set."""
    cfg = parse_section(SplitConfig, params, "split")

    dirs = raw_dirs(root / RAW_DIR)
    train_ids = [r.image_id for r in pair_files(dirs, "train")]
    test_ids = [r.image_id for r in pair_files(dirs, "test")]
    organs = {i: organ_of(i) for i in train_ids} if cfg.stratify_by_organ else None
    train, val = split_train_val(train_ids, organs, cfg.val_fraction, cfg.seed)
    split = {"train": train, "val": val, "test": sorted(test_ids), "seed": cfg.seed}
    write_json(root / SPLIT_FILE, split)

    for name in ("train", "val", "test"):
        by_organ = Counter(organ_of(i) for i in split[name])
        print(
            f"split: {name}: {len(split[name])} images ({', '.join(f'{o} {n}' for o, n in sorted(by_organ.items()))})"
        )
    print(f"split: wrote {root / SPLIT_FILE}")
    return SplitSummary(root / SPLIT_FILE, split)
