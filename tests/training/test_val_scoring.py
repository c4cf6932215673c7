import dataclasses
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from skimage.draw import disk
from torch import nn

from patchunet.core.config import EvalConfig, ModelConfig, TrainConfig, load_params, parse_section
from patchunet.data.dataset import PatchDataset
from patchunet.data.patches import PatchSet
from patchunet.model.unet import PatchUNet
from patchunet.training.builder import make_loaders
from patchunet.training.loop import fit
from patchunet.training.val_scoring import WholeImageAJI

PARAMS = load_params(REPO_ROOT / "params.yaml")
EVAL = dataclasses.replace(parse_section(EvalConfig, PARAMS, "eval"), overlap=8, backend="torch", precision="fp32")
WINDOW = 32
NUCLEUS, BACKGROUND = (70, 40, 120), (220, 220, 220)


def dark_nuclei_image(seed: int, shape: tuple[int, int] = (64, 80)) -> tuple[np.ndarray, np.ndarray]:
    """(image, labels): light background and well-separated dark discs of radius 7 (about 150 px,
    above eval.min_nucleus_area), none touching the border."""
    image = np.full((*shape, 3), BACKGROUND, np.uint8)
    labels = np.zeros(shape, np.uint16)
    rng = np.random.default_rng(seed)
    centres = [(16, 16), (16, 56), (46, 34), (46, 66)]
    for nucleus, (y, x) in enumerate(centres, start=1):
        rows, cols = disk((y + rng.integers(-2, 3), x + rng.integers(-2, 3)), 7, shape=shape)
        image[rows, cols] = NUCLEUS
        labels[rows, cols] = nucleus
    return image, labels


def val_patches(count: int = 2) -> PatchSet:
    return PatchSet.from_images([(f"val-{n}", 0, *dark_nuclei_image(n)) for n in range(count)], WINDOW, 24)


class DarkIsNucleus(nn.Module):
    """Logits of +20 where a pixel is dark (a nucleus of `dark_nuclei_image`), -20 elsewhere."""

    def __init__(self, sign: float = 1.0) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))  # where the sliding window sends its windows
        self.cfg = types.SimpleNamespace(instance_head="none")
        self.sign = sign

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dark = x.mean(dim=1, keepdim=True) < 0.5
        return self.sign * torch.where(dark, 20.0, -20.0)


def tiny_model() -> PatchUNet:
    torch.manual_seed(0)
    return PatchUNet(
        ModelConfig(base_channels=8, depth=2, norm="batch", dropout=0.0, instance_head="none", microns_per_pixel=0.25)
    )


def test_a_tiny_model_scores_a_whole_image_aji_between_0_and_1() -> None:
    score = WholeImageAJI(val_patches(), EVAL, WINDOW)(tiny_model())
    assert isinstance(score, float) and 0.0 <= score <= 1.0


@pytest.mark.parametrize(("sign", "aji"), [(1.0, 1.0), (-1.0, 0.0)])  # exact, and inverted: every nucleus missed
def test_a_model_exact_on_every_nucleus_scores_aji_1_and_its_inverse_0(sign: float, aji: float) -> None:
    assert WholeImageAJI(val_patches(), EVAL, WINDOW)(DarkIsNucleus(sign)) == pytest.approx(aji, abs=1e-12)


def test_the_score_is_the_mean_over_the_val_images() -> None:
    """One image scored alone against the same image beside a blank one (AJI 0 on it: a false
    nucleus there and no true one) halves the mean."""
    scorer = WholeImageAJI(val_patches(1), EVAL, WINDOW)
    assert len(scorer.images) == 1 and scorer(DarkIsNucleus()) == pytest.approx(1.0)
    image, labels = dark_nuclei_image(0)
    blank = np.full_like(image, 220)
    blank[20:35, 20:35] = NUCLEUS  # a nucleus the truth does not have
    patches = PatchSet.from_images([("val-0", 0, image, labels), ("blank", 0, blank, np.zeros_like(labels))], 32, 32)
    assert WholeImageAJI(patches, EVAL, WINDOW)(DarkIsNucleus()) == pytest.approx(0.5)


def test_a_val_patch_set_without_images_is_refused() -> None:
    empty = PatchSet.from_images([], WINDOW, WINDOW)
    with pytest.raises(ValueError, match="holds no image"):
        WholeImageAJI(empty, EVAL, WINDOW)


def test_fit_records_the_whole_image_aji_of_each_epoch(tmp_path: Path) -> None:
    patches = val_patches()
    train_cfg = dataclasses.replace(
        parse_section(TrainConfig, PARAMS, "train"), epochs=2, batch_size=4, lr=0.01, num_workers=0, select_by="val_aji"
    )
    train_set, val_set = PatchDataset(patches), PatchDataset(patches)
    loaders = make_loaders(train_set, val_set, train_cfg)
    result = fit(
        tiny_model(),
        *loaders,
        train_cfg,
        torch.device("cpu"),
        tmp_path,
        val_scorer=WholeImageAJI(patches, EVAL, WINDOW),
    )
    assert all(isinstance(r.val_aji, float) and 0.0 <= r.val_aji <= 1.0 for r in result.history)
    assert result.best.val_aji == max(r.val_aji for r in result.history)
