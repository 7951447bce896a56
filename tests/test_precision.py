"""The compute precision per device (modules/precision.py): bf16 autocast only where the hardware has bf16
arithmetic, the ACCELERANDO_BF16 override, and the pipeline following it."""

import pytest
import torch

from accelerando.errors import UserError
from accelerando.modules import precision
from accelerando.testing.models import tiny_pipeline


@pytest.mark.parametrize("value,expected", [("1", True), ("on", True), ("0", False), ("off", False)])
def test_the_override_forces_the_choice(monkeypatch, value, expected):
    monkeypatch.setenv(precision.BF16_ENV, value)
    assert precision.use_bf16("cpu") is expected
    assert precision.autocast("cpu")._enabled is expected


def test_auto_follows_the_cpu(monkeypatch):
    monkeypatch.delenv(precision.BF16_ENV, raising=False)
    monkeypatch.setattr(precision, "_cpu_has_bf16", lambda: False)
    assert not precision.use_bf16("cpu")
    monkeypatch.setattr(precision, "_cpu_has_bf16", lambda: True)
    assert precision.use_bf16("cpu") and precision.use_bf16(torch.device("cpu"))
    monkeypatch.setenv(precision.BF16_ENV, "auto")
    assert precision.use_bf16("cpu")
    assert not precision.use_bf16("meta")


def test_a_bad_value_names_itself(monkeypatch):
    monkeypatch.setenv(precision.BF16_ENV, "maybe")
    with pytest.raises(UserError, match="ACCELERANDO_BF16='maybe'; use 1"):
        precision.use_bf16()


@pytest.mark.parametrize("value", ["0", "1"])
def test_the_pipeline_runs_its_backbone_in_the_chosen_precision(monkeypatch, value):
    monkeypatch.setenv(precision.BF16_ENV, value)
    pipe = tiny_pipeline()
    seen = []
    hook = pipe.model.dit.register_forward_hook(
        lambda m, args, out: seen.append((torch.is_autocast_enabled("cpu"), out.dtype))
    )
    try:
        audio = pipe("a calm piano", duration=0.5, steps=2, generator=torch.Generator().manual_seed(0))
    finally:
        hook.remove()
    assert seen and torch.isfinite(audio.audio).all()
    dtype = torch.bfloat16 if value == "1" else torch.float32
    assert all(s == (value == "1", dtype) for s in seen), seen
