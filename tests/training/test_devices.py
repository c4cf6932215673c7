import logging

import pytest
import torch

import patchunet.training.devices
from patchunet.training.devices import native_bf16, training_precision

CPU = torch.device("cpu")


def test_fp32_is_kept_as_requested(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    for native in (True, False):
        monkeypatch.setattr(patchunet.training.devices, "native_bf16", lambda device, native=native: native)
        with caplog.at_level(logging.INFO, logger="patchunet"):
            assert training_precision("fp32", CPU) == "fp32"
    assert caplog.messages == []


def test_bf16_is_kept_where_it_is_native(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(patchunet.training.devices, "native_bf16", lambda device: True)
    with caplog.at_level(logging.INFO, logger="patchunet"):
        assert training_precision("bf16", CPU) == "bf16"
    assert caplog.messages == []


@pytest.mark.skipif(not native_bf16(CPU), reason="this CPU has neither AMX nor AVX512-BF16")
def test_bf16_is_kept_on_this_cpu_with_native_bf16() -> None:
    assert training_precision("bf16", CPU) == "bf16"


def test_bf16_falls_back_to_fp32_in_one_line_where_it_is_not_native(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(patchunet.training.devices, "native_bf16", lambda device: False)
    with caplog.at_level(logging.INFO, logger="patchunet"):
        assert training_precision("bf16", CPU) == "fp32"
    assert caplog.messages == [
        "train: train.precision bf16 is not native on this cpu (no AMX or AVX512-BF16): using fp32"
    ]


def test_a_meta_device_is_never_native_bf16() -> None:
    assert not native_bf16(torch.device("meta"))
