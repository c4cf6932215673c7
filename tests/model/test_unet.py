import dataclasses

import pytest
import torch
from conftest import REPO_ROOT, write_code_running_file

from patchunet.core.config import ModelConfig, load_params, parse_section
from patchunet.core.errors import ConfigError, PatchUNetError
from patchunet.model.unet import PatchUNet, parameter_count

DEFAULT = parse_section(ModelConfig, load_params(REPO_ROOT / "params.yaml"), "model")


@pytest.mark.parametrize(("head", "channels"), [("none", 1), ("boundary", 2), ("distance", 2), ("hover", 3)])
def test_output_is_the_foreground_logit_then_the_heads_channels(head: str, channels: int) -> None:
    model = PatchUNet(dataclasses.replace(DEFAULT, instance_head=head)).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 96)).shape == (2, channels, 64, 96)


@pytest.mark.parametrize("head", ["none", "boundary", "distance", "hover"])
def test_default_model_stays_under_one_million_parameters(head: str) -> None:
    assert parameter_count(PatchUNet(dataclasses.replace(DEFAULT, instance_head=head))) < 1_000_000


def test_a_model_file_saved_before_instance_heads_loads_as_a_foreground_model_at_40x(tmp_path) -> None:
    from patchunet.model.unet import load_model, save_model

    model = PatchUNet(dataclasses.replace(DEFAULT, instance_head="none")).eval()
    save_model(model, tmp_path / "m.pt")
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    del saved["model_config"]["instance_head"], saved["model_config"]["microns_per_pixel"]
    torch.save(saved, tmp_path / "old.pt")
    loaded = load_model(tmp_path / "old.pt")
    assert (loaded.cfg.instance_head, loaded.cfg.microns_per_pixel) == ("none", 0.25)


def test_group_norm_variant_works() -> None:
    model = PatchUNet(
        ModelConfig(base_channels=8, depth=2, norm="group", dropout=0.0, instance_head="none", microns_per_pixel=0.25)
    ).eval()
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 1, 32, 32)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_sides_not_divisible_by_two_to_the_depth_are_refused() -> None:
    model = PatchUNet(
        ModelConfig(base_channels=8, depth=4, norm="batch", dropout=0.0, instance_head="none", microns_per_pixel=0.25)
    )
    with pytest.raises(PatchUNetError, match="100x96 pixels: both sides must be divisible by 16"):
        model(torch.rand(1, 3, 100, 96))


def test_saved_model_loads_back_identical(tmp_path) -> None:
    from patchunet.model.unet import load_model, save_model

    model = PatchUNet(
        ModelConfig(base_channels=8, depth=2, norm="group", dropout=0.0, instance_head="none", microns_per_pixel=0.25)
    ).eval()
    save_model(model, tmp_path / "m.pt", patch_size=32)
    loaded = load_model(tmp_path / "m.pt")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(PatchUNetError, match=r"bad\.pt: not a PatchUNet model file"):
        load_model(tmp_path / "bad.pt")


def test_bad_model_params_name_their_key() -> None:
    with pytest.raises(ConfigError, match=r"model\.base_channels: must be a multiple of 8"):
        ModelConfig(base_channels=12, depth=3, norm="group", dropout=0.0, instance_head="none", microns_per_pixel=0.25)
    with pytest.raises(ConfigError, match=r"model\.dropout"):
        ModelConfig(base_channels=8, depth=3, norm="batch", dropout=1.0, instance_head="none", microns_per_pixel=0.25)


def test_a_model_file_that_would_run_code_is_refused_without_running_it(tmp_path) -> None:
    from patchunet.model.unet import load_model

    marker = tmp_path / "code-ran"
    evil = write_code_running_file(tmp_path / "evil.pt", marker)
    with pytest.raises(PatchUNetError, match=r"evil\.pt: not a PatchUNet model file: it holds Python objects") as error:
        load_model(evil)
    assert "\n" not in str(error.value)
    assert not marker.exists()
