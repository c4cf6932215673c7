import dataclasses

from patchunet.core.config import EvalConfig
from patchunet.evaluation.protocol import protocol_hash, sample_ids

CHECKOUT_EVAL = EvalConfig(
    window=None,
    overlap=64,
    blend="gaussian",
    batch_size=8,
    tta=False,
    threshold=0.6,
    min_nucleus_area=64,
    max_hole_area=64,
    distance_sigma=1.0,
    watershed_h=0.5,
    marker_threshold=0.5,
    min_marker_area=10,
    samples=4,
    backend="torch",
    precision="fp32",
)


def test_protocol_hash_is_the_one_registered_versions_carry() -> None:
    """The checkout's registry tags its champion with this hash: a change would make it incomparable."""
    assert protocol_hash(CHECKOUT_EVAL, 256) == "8a5959bd22f4"


def test_protocol_hash_ignores_the_samples_and_runtime_and_follows_every_setting_that_changes_a_score() -> None:
    reference = protocol_hash(CHECKOUT_EVAL, 256)
    assert protocol_hash(dataclasses.replace(CHECKOUT_EVAL, samples=1), 256) == reference
    faster = dataclasses.replace(CHECKOUT_EVAL, backend="openvino", precision="bf16")
    assert protocol_hash(faster, 256) == reference  # a hash from before the runtimes existed still compares
    assert protocol_hash(CHECKOUT_EVAL, 128) != reference
    assert protocol_hash(dataclasses.replace(CHECKOUT_EVAL, threshold=0.5), 256) != reference
    assert protocol_hash(dataclasses.replace(CHECKOUT_EVAL, tta=True), 256) != reference


def test_sample_ids_spread_evenly_over_the_sorted_ids_whatever_their_order() -> None:
    ids = [f"image-{n}" for n in range(10)]
    assert sample_ids(ids, 2) == {"image-0", "image-5"}
    assert sample_ids(list(reversed(ids)), 2) == {"image-0", "image-5"}
    assert sample_ids(ids, 4) == {"image-0", "image-2", "image-5", "image-7"}


def test_sample_ids_never_ask_for_more_images_than_there_are() -> None:
    assert sample_ids(["b", "a"], 5) == {"a", "b"}
    assert sample_ids(["a"], 0) == set()
