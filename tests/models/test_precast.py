"""WeightCastCache: pre-cast bf16 weights give bit-identical pipeline output, restore the float parameters and follow
in-place weight updates."""

import pytest
import torch
from torch import nn

from accelerando.modules.precast import WeightCastCache
from accelerando.testing.models import tiny_pipeline


def _generate(pipe):
    out = pipe("a test", bpm=100, key="C major", duration=1.0, steps=3, generator=torch.Generator().manual_seed(0))
    return out.audio


@pytest.mark.parametrize("backbone", ["dit", "unet"])
def test_precast_weights_are_bit_identical_to_autocast_casts(backbone, monkeypatch):
    pipe = tiny_pipeline(backbone=backbone)
    with_cache = _generate(pipe)
    params = {n: p for n, p in pipe.model.dit.named_parameters()}
    assert all(type(p) is nn.Parameter and p.dtype == torch.float32 for p in params.values())  # restored
    assert params == dict(pipe.model.dit.named_parameters())
    swap = WeightCastCache.swap
    monkeypatch.setattr(WeightCastCache, "swap", lambda self, module, enabled=True: swap(self, module, False))
    assert torch.equal(_generate(pipe), with_cache)


def test_cache_follows_in_place_updates_and_restores_on_error():
    lin = nn.Linear(8, 4)
    cache = WeightCastCache()
    x = torch.randn(2, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        with cache.swap(lin):
            assert lin.weight.dtype == torch.bfloat16
            a = lin(x)
        lin.weight.mul_(2)
        with cache.swap(lin):
            b = lin(x)
        assert torch.equal(b, lin(x)) and not torch.equal(a, b)  # recopied after the update, same as autocast
    with pytest.raises(RuntimeError, match="boom"):
        with cache.swap(lin):
            raise RuntimeError("boom")
    assert type(lin.weight) is nn.Parameter and lin.weight.dtype == torch.float32
