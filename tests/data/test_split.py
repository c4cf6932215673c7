import pytest

from patchunet.core.errors import ConfigError
from patchunet.data.monuseg import organ_of
from patchunet.data.split import split_train_val

# The 30 MoNuSeg 2018 training ids' site codes: 6 breast, 6 kidney, 6 lung, 6 prostate, 2 bladder,
# 2 colon, 2 stomach.
SITES = (
    ["A7"] * 3 + ["AR"] * 3 + ["B0"] * 3 + ["HE"] * 3 + ["21"] * 6 + ["G9"] * 6 + ["DK", "G2", "AY", "NH", "KB", "RD"]
)
IDS = [f"TCGA-{site}-{n:04d}" for n, site in enumerate(SITES)]
ORGANS = {i: organ_of(i) for i in IDS}


def test_split_is_disjoint_complete_and_sized_by_fraction() -> None:
    train, val = split_train_val(IDS, ORGANS, 0.2, seed=1)
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(IDS)
    assert len(val) == 6


def test_same_seed_same_split_other_seed_other_split() -> None:
    assert split_train_val(IDS, ORGANS, 0.2, seed=1) == split_train_val(IDS, ORGANS, 0.2, seed=1)
    assert split_train_val(IDS, ORGANS, 0.2, seed=1) != split_train_val(IDS, ORGANS, 0.2, seed=2)


def test_every_large_organ_gets_a_val_image() -> None:
    _, val = split_train_val(IDS, ORGANS, 0.2, seed=3)
    val_organs = [ORGANS[i] for i in val]
    for organ in ("breast", "kidney", "lung", "prostate"):
        assert val_organs.count(organ) == 1


def test_an_organ_is_never_moved_wholly_into_val() -> None:
    for seed in range(20):
        train, _ = split_train_val(IDS, ORGANS, 0.5, seed=seed)
        assert {ORGANS[i] for i in train} == set(ORGANS.values())


def test_unstratified_split_also_works() -> None:
    train, val = split_train_val(IDS, None, 0.25, seed=0)
    assert len(val) == 8 and len(train) == 22


def test_one_image_cannot_be_split() -> None:
    with pytest.raises(ConfigError, match="at least 2 training images"):
        split_train_val(IDS[:1], None, 0.2, seed=0)
