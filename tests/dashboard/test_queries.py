"""The dashboard's live segmentation uses the eval settings each version was registered and scored
with, not today's params.yaml: two versions registered with different settings in a real SQLite
store, and a third, from before `register` recorded any, that falls back to params.yaml's."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
from conftest import REPO_ROOT, connect_to_new_store, tiny_network

from patchunet import tracking
from patchunet.core.config import EvalConfig, load_params, parse_section
from patchunet.inference.nuclei import segment_nuclei
from patchunet.inference.runtimes import runtime_network

import queries

WINDOWS = {1: 32, 2: 64}
"""The windows versions 1 and 2 are registered with; params.yaml's own is patch.size."""


def eval_settings(**changes: object) -> EvalConfig:
    params_eval = parse_section(EvalConfig, load_params(REPO_ROOT / "params.yaml"), "eval")
    return dataclasses.replace(params_eval, backend="torch", precision="fp32", overlap=8, **changes)


REGISTERED = {1: eval_settings(threshold=0.3, min_nucleus_area=4), 2: eval_settings(threshold=0.52, tta=True)}
TODAY = eval_settings(threshold=0.7, min_nucleus_area=30)
"""params.yaml's `eval` as it stands now, unlike either version's."""


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):
    """(settings, version table): "m" v1 and v2, the nuclei model of one network registered with the
    REGISTERED settings and WINDOWS, and v3, the raw network, as versions were before `register`."""
    from patchunet.serving.nuclei_model import log_nuclei_model

    folder = tmp_path_factory.mktemp("registry")
    network = disc_network()
    serve = {"max_image_side": 256, "max_images": 1}
    with pytest.MonkeyPatch.context() as patch:
        uri = connect_to_new_store(folder, patch)
        for version, cfg in REGISTERED.items():
            with tracking.run("exp") as active:
                pass
            model_uri = log_nuclei_model(active.run_id, network, dataclasses.asdict(cfg), WINDOWS[version], serve)
            assert tracking.register_model(model_uri, "m", {}).version == version
        with tracking.run("exp"):
            raw_uri = tracking.log_model(network, np.zeros((1, 3, 8, 8), np.float32))
        assert tracking.register_model(raw_uri, "m", {}).version == 3
        patch.setattr(queries, "PARAMS_FILE", REPO_ROOT / "params.yaml")
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        settings = dataclasses.replace(queries.settings(), registered_model="m", eval=TODAY, patch_size=32)
    return settings, queries.version_table(uri, "m", settings.ui_url)


DISC_CENTRES = [(20, 20), (30, 60), (70, 40), (75, 80)]


def an_image() -> np.ndarray:
    """(96, 96, 3) uint8: dark discs on a light background."""
    image = np.full((96, 96, 3), 210, np.uint8)
    image[disc_mask()] = (90, 40, 120)
    return image


def disc_mask() -> np.ndarray:
    from skimage.draw import disk

    mask = np.zeros((96, 96), bool)
    for centre in DISC_CENTRES:
        mask[disk(centre, 9, shape=mask.shape)] = True
    return mask


@functools.cache
def disc_network():
    """The tiny network fitted for a moment to the image's discs, so that its probabilities follow
    the image and each threshold gives other nuclei (an untrained one answers about 0.55 everywhere)."""
    import torch

    network = tiny_network().train()
    x = torch.from_numpy(an_image().transpose(2, 0, 1)[None].astype(np.float32) / 255)
    y = torch.from_numpy(disc_mask()[None, None].astype(np.float32))
    optimizer = torch.optim.Adam(network.parameters(), lr=0.01)
    for _ in range(40):
        optimizer.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(network(x)[:, :1], y).backward()
        optimizer.step()
    return network.eval()


def expected_labels(cfg: EvalConfig, window: int) -> np.ndarray:
    return segment_nuclei(runtime_network(disc_network(), cfg), an_image(), cfg, window, 0.25)[0]


def test_each_version_segments_with_the_eval_settings_it_was_registered_with(registry) -> None:
    settings, table = registry
    for version, cfg in REGISTERED.items():
        live = queries.segment_upload(settings, table, version, an_image())
        assert live.settings == queries.VersionEval(cfg, WINDOWS[version], recorded=True)
        assert np.array_equal(live.labels, expected_labels(cfg, WINDOWS[version])), version


def test_the_registered_settings_give_other_labels_than_params_yaml(registry) -> None:
    """Else the test above could not tell the versions' settings from today's."""
    today = expected_labels(TODAY, 32)
    outcomes = [expected_labels(cfg, WINDOWS[version]) for version, cfg in REGISTERED.items()]
    assert not np.array_equal(outcomes[0], outcomes[1])
    assert not any(np.array_equal(outcome, today) for outcome in outcomes)


def test_a_version_that_recorded_no_settings_falls_back_to_params_yaml_and_says_so(registry) -> None:
    settings, table = registry
    live = queries.segment_upload(settings, table, 3, an_image())
    assert live.settings == queries.VersionEval(TODAY, 32, recorded=False)
    assert "params.yaml" in live.settings.source
    assert np.array_equal(live.labels, expected_labels(TODAY, 32))
