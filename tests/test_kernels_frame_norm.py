"""Compiled per-frame GroupNorms: bit-identical to the eager module (float32, bf16 autocast, several lengths, a whole
frame-norm U-Net), autograd keeps the eager graph, and uncompiling restores the module's own forward."""

from dataclasses import replace

import pytest
import torch
from torch import nn

from accelerando.kernels import compile_frame_norms, frame_norms_compiled, uncompile_frame_norms
from accelerando.models.unet import FrameGroupNorm, MusicUNet, MusicUNetConfig


def _norms():
    torch.manual_seed(0)
    model = nn.Sequential(FrameGroupNorm(4, 16), nn.SiLU(), FrameGroupNorm(4, 16))
    with torch.no_grad():
        for m in model:
            if isinstance(m, FrameGroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return model


def test_compiled_frame_norms_are_bit_identical_and_undo_cleanly():
    model = _norms()
    xs = [torch.randn(2, 16, t) * 3 + 1 for t in (37, 80)]
    with torch.no_grad():
        want32 = [model(x) for x in xs]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            want16 = [model(x.bfloat16()) for x in xs]
        assert compile_frame_norms(model) == 2 and frame_norms_compiled(model)
        for x, w in zip(xs, want32, strict=True):
            assert torch.equal(model(x), w)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            for x, w in zip(xs, want16, strict=True):
                got = model(x.bfloat16())
                assert got.dtype == w.dtype and torch.equal(got, w)
    x = xs[0].clone().requires_grad_(True)  # autograd: the eager graph
    model(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert uncompile_frame_norms(model) == 2 and not frame_norms_compiled(model)
    assert all("forward" not in vars(m) for m in model)


def test_compiled_frame_norms_keep_a_frame_unet_bit_identical():
    from accelerando.testing.models import backbone_inputs

    torch.manual_seed(0)
    cfg = replace(MusicUNetConfig.tiny(), norm="frame")
    unet = MusicUNet(cfg).eval()
    for p in unet.parameters():  # the zero-initialised convs would hide differences
        nn.init.normal_(p, std=0.05)
    x, t, cond = backbone_inputs(cfg, 1.0)
    with torch.no_grad():
        want = unet(x, t, cond)
        assert compile_frame_norms(unet) == sum(isinstance(m, FrameGroupNorm) for m in unet.modules()) > 0
        assert torch.equal(unet(x, t, cond), want)


def test_dispatch_modes_run_the_eager_twin_and_leave_the_compiled_kernel_alone(monkeypatch):
    """Under FlopCounterMode (the bench runner's FLOP count) the compiled kernels are not called: dynamo would fall
    back to eager for the rest of the process after such a call."""
    from torch.utils.flop_counter import FlopCounterMode

    from accelerando.kernels import frame_norm
    from accelerando.quant import fused, int8_conv

    if frame_norm._state["broken"]:
        pytest.skip("torch.compile does not work here")
    model = _norms()
    x = torch.randn(2, 16, 20)
    compile_frame_norms(model)
    with torch.no_grad():
        want = model(x)

        def refuse(*args):
            raise AssertionError("compiled or C++ kernel called under a dispatch mode")

        monkeypatch.setitem(frame_norm._state, "fn", refuse)
        from accelerando.quant import norm_codes

        monkeypatch.setattr(norm_codes, "conv_input_codes", refuse)  # int8_conv's C++ passes: not under a mode
        monkeypatch.setattr(norm_codes, "conv_output", refuse)
        with FlopCounterMode(display=False), fused.use_fused_kernels(True):
            assert not fused.applies(x)  # the fused per-token kernels stand aside too
            assert torch.equal(model(x), want)
            y = torch.randn(2, 5, 7).transpose(1, 2)
            assert torch.equal(int8_conv._run(int8_conv._finish, y, None, y.dtype), y.contiguous())
    assert frame_norm._state["broken"] is None
