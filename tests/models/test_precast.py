"""WeightCastCache: pre-cast bf16 weights give bit-identical pipeline output, restore the float parameters and follow
in-place weight updates."""

import pytest
import torch
from torch import nn

from accelerando.modules.precast import WeightCastCache
from accelerando.modules.precision import BF16_ENV
from accelerando.testing.models import tiny_pipeline


@pytest.fixture(autouse=True)
def _bf16(monkeypatch):
    """The pipeline keeps bf16 copies only for bf16 calls: run it in bf16 on any CPU (float32 is the default where
    the CPU has no bf16 arithmetic)."""
    monkeypatch.setenv(BF16_ENV, "1")


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


def test_copies_follow_the_parameter_objects_not_their_ids():
    """A new model in the same pipeline (old one freed, ids and addresses reused) never gets the old copies, and
    copies of freed parameters are dropped."""
    import gc

    from accelerando.testing.models import tiny_generator

    pipe = tiny_pipeline(backbone="unet")
    kw = {"latent_dim": pipe.codec.latent_dim, "frame_rate": pipe.codec.frame_rate, "backbone": "unet"}
    _generate(pipe)
    for seed in (1, 2, 3):
        pipe.model = None
        gc.collect()
        pipe.model = tiny_generator(seed, **kw)
        fresh = tiny_pipeline(backbone="unet")
        fresh.model = tiny_generator(seed, **kw)
        assert torch.equal(_generate(pipe), _generate(fresh))
    live = sum(len(list(m.parameters())) for m in pipe.model.dit.modules() if type(m) in (nn.Conv1d, nn.Linear))
    assert len(pipe._weight_casts) == live
    del pipe.model.dit.out_conv  # a freed parameter's copy goes with it
    gc.collect()
    assert len(pipe._weight_casts) == live - 2


def test_data_writes_need_clear_and_inference_tensors_work():
    pipe = tiny_pipeline(backbone="unet")
    before = _generate(pipe)
    with torch.no_grad():
        for p in pipe.model.dit.parameters():
            p.data.mul_(1.5)  # does not bump the version counter
    pipe._weight_casts.clear()
    fresh = tiny_pipeline(backbone="unet")
    with torch.no_grad():
        for p in fresh.model.dit.parameters():
            p.mul_(1.5)
    assert torch.equal(_generate(pipe), _generate(fresh)) and not torch.equal(before, _generate(pipe))
    with torch.inference_mode():  # a model built under inference mode has inference-tensor parameters
        inf = tiny_pipeline(backbone="unet")
    assert next(inf.model.dit.parameters()).is_inference()
    assert torch.equal(_generate(inf), _generate(tiny_pipeline(backbone="unet")))
