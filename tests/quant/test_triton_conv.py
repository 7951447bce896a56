"""The Triton implicit-GEMM int8 convolution (per-window A8 scales) against the unfold reference.

On CPU the kernel runs through Triton's interpreter (``TRITON_INTERPRET=1``, set by ``tests/conftest.py``): the
same source the GPU compiles, so the tap / frame indexing, padding, stride, dilation, smoothing, codes and epilogue
are checked here. The reference is ``UnfoldConv1d.forward`` with this path switched off (unfold + per-token
``quantize_per_token`` + int8 GEMM), computed independently of the kernel.
"""

import pytest
import torch
from torch import nn
from triton_device import triton_device

from accelerando.quant import triton_conv as tc
from accelerando.quant import triton_kernels as tk
from accelerando.quant.conv import UnfoldConv1d
from accelerando.quant.linear import QuantLinear
from accelerando.quant.primitives import quantize_per_token
from accelerando.quant.svd import SVDQuantLinear
from accelerando.quant.switches import use_group_folding
from accelerando.testing.sqnr import sqnr

pytestmark = pytest.mark.skipif(not tk.available(), reason="triton not installed")


@pytest.fixture(autouse=True)
def _interpret_on_cpu(monkeypatch):
    """Switch the path on (opt-in) and let CPU tensors take the kernel through Triton's interpreter (both off by
    default outside these tests)."""
    monkeypatch.setitem(tc._state, "interpret_cpu", True)
    monkeypatch.setitem(tc._state, "on", True)


def _model(kind, c_in, c_out, k, stride=1, padding=0, dilation=1, bias=True, batch=2, frames=13, seed=0, dev="cpu"):
    """(UnfoldConv1d with a quantized ``linear`` of ``kind``, float32 input [B, C_in, T] with outlier channels)."""
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv1d(c_in, c_out, k, stride=stride, padding=padding, dilation=dilation, bias=bias)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) / (c_in * k) ** 0.5)
        if bias:
            conv.bias.copy_(torch.randn(c_out, generator=g) * 0.1)
    x = torch.randn(batch, c_in, frames, generator=g) * torch.linspace(0.2, 3.0, frames)
    x[:, 1] *= 20  # an outlier channel
    x[0, :, :2] = 0.0  # all-zero frames: windows over them and the padding take the eps scale
    m = UnfoldConv1d.from_conv(conv)
    lin = m.linear
    if kind == "w8":
        m.linear = QuantLinear.from_float(lin, 8, 8)
    elif kind == "w4":
        m.linear = QuantLinear.from_float(lin, 4, 8)  # 4-bit codes, one scale per output channel
    elif kind == "w8full":
        m.linear = QuantLinear.from_float(lin, 8, 8, full_range=True)
    else:  # SVDQuant / SmoothQuant (rank 0), per-tap smoothing from the windows' absmax (untied taps)
        absmax = m.windows(x).reshape(-1, c_in * k).abs().amax(dim=0)
        m.linear = SVDQuantLinear.from_float(lin, absmax, 0.5, 4, 8, None, rank=0 if kind == "smooth" else 4)
    return m.to(dev), x.to(dev)


def _reference(m, x):
    with torch.no_grad(), tc.use_triton_convs(False):
        assert tc.plan(m, x) is None
        return m(x)


def _ref_codes(m, x):
    """``quantize_per_token`` of the unfolded (smoothed) windows: what the reference GEMM multiplies."""
    w = m.windows(x).reshape(-1, m.in_channels * m.kernel_size)
    if isinstance(m.linear, SVDQuantLinear):
        w = w * m.linear.inv_smooth.to(w.dtype)
        full = m.linear.residual.full_range
    else:
        full = m.linear.full_range
    q, s = quantize_per_token(w, full)
    return q, s[:, 0]


CONFIGS = [  # kind, c_in, c_out, k, stride, padding, dilation, bias, batch, frames
    ("w8", 16, 24, 3, 1, 1, 1, True, 2, 13),
    ("w8", 32, 16, 1, 1, 0, 1, False, 1, 9),
    ("w4", 16, 24, 4, 2, 1, 1, True, 2, 17),
    ("w8full", 32, 16, 3, 1, 2, 2, True, 1, 20),
    ("svd", 16, 24, 3, 1, 1, 1, True, 2, 13),
    ("svd", 32, 16, 5, 2, 2, 2, False, 2, 19),
    ("smooth", 16, 24, 2, 3, 0, 1, True, 2, 14),  # stride > kernel: windows skip frames
]


@pytest.mark.parametrize("gpu", [False, pytest.param(True, marks=pytest.mark.gpu)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(map(str, c)))
def test_codes_scales_and_output_match_the_unfold_reference(gpu, dtype, cfg):
    dev = triton_device(gpu)
    kind, c_in, c_out, k, s, p, d, bias, batch, frames = cfg
    m, x = _model(kind, c_in, c_out, k, s, p, d, bias, batch, frames, dev=dev)
    x = x.to(dtype)
    with torch.no_grad():
        how = tc.plan(m, x)
        assert how is not None
        codes, scales = tc.window_codes(m, x, how)
        y = tc.conv1d(m, x, how)
    q_ref, s_ref = _ref_codes(m, x)
    assert torch.equal(scales, s_ref)
    assert torch.equal(codes, q_ref)
    ref = _reference(m, x)
    assert y.shape == ref.shape and y.dtype == ref.dtype == dtype and y.stride() == ref.stride()
    # float32: the same codes and int32 sums, only the epilogue's rounding (and the SVD branch's) may differ;
    # bf16 outputs: at most one bf16 rounding apart
    assert sqnr(ref.float(), y.float()) > (60 if dtype == torch.float32 else 40)
    if kind in ("w8", "w4g16", "w8full") and dtype == torch.float32 and not gpu:
        assert torch.equal(y, ref)  # no FMA in the interpreter: the epilogue's float ops are the reference's


def test_bf16_autocast_returns_the_autocast_dtype_like_the_reference():
    triton_device(False)
    m, x = _model("svd", 16, 24, 3, padding=1)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        how = tc.plan(m, x)
        y = tc.conv1d(m, x, how)
        ref = _reference(m, x)
    assert y.dtype == ref.dtype == torch.bfloat16
    assert sqnr(ref.float(), y.float()) > 35  # bf16 low-rank convs vs bf16 Linears, bf16 outputs


def test_float16_and_non_contiguous_inputs_are_read_in_place():
    triton_device(False)
    m, x = _model("w8", 16, 24, 3, padding=1)
    xt = x.half().transpose(1, 2).contiguous().transpose(1, 2)  # channels-last strides
    with torch.no_grad():
        y = tc.conv1d(m, xt, tc.plan(m, xt))
    assert y.dtype == torch.float16 and sqnr(_reference(m, xt).float(), y.float()) > 55


def test_plan_refuses_what_the_kernel_does_not_compute():
    triton_device(False)
    m, x = _model("w8", 16, 24, 3, padding=1)
    assert tc.applies(m, x)
    assert not tc.applies(m, x.clone().requires_grad_(True))
    with torch.no_grad():
        assert tc.applies(m, x.clone().requires_grad_(True))  # no autograd recorded: fine
    assert not tc.applies(m, x[0])  # not [B, C, T]
    assert not tc.applies(m, x.double())
    assert not tc.applies(m, x[:, :8])  # wrong channel count
    lin = nn.Linear(48, 24)
    for layer in (
        QuantLinear.from_float(lin, 8, 8, act_scale="tensor"),  # per-tensor scales: oneDNN / unfold
        QuantLinear.from_float(lin, 8, 16),  # weight-only
        QuantLinear.from_float(lin, 8, 8, 16),  # 8-bit groups: one GEMM per group
        lin,  # float
    ):
        m.linear = layer
        assert not tc.applies(m, x), layer
    for folded in (True, False):  # 4-bit groups: the default CUDA path applies them exactly, folding would not
        with use_group_folding(folded):
            m.linear = QuantLinear.from_float(lin, 4, 8, 16)
            assert not tc.applies(m, x)
    m.linear = QuantLinear.from_float(lin, 4, 8)
    assert tc.applies(m, x)
    m.linear.forward = lambda h: h  # replaced forward (low-rank recovery)
    assert not tc.applies(m, x)
    del m.linear.forward
    with tk.use_triton_kernels(False):  # the Triton switch of the quantized linears covers this path too
        assert not tc.applies(m, x)
    assert tc.applies(m, x)


def test_switch_is_a_call_and_a_context_manager():
    triton_device(False)
    m, x = _model("w8", 16, 24, 1)
    assert tc.triton_convs_enabled()
    with tc.use_triton_convs(False):
        assert not tc.triton_convs_enabled() and tc.plan(m, x) is None
        with tc.use_triton_convs(True):
            assert tc.applies(m, x)
        assert not tc.applies(m, x)
    assert tc.applies(m, x)
    try:
        tc.use_triton_convs(False)
        assert not tc.triton_convs_enabled()
    finally:
        tc.use_triton_convs(True)
    assert tc.triton_convs_enabled()


@pytest.mark.gpu
def test_larger_conv_on_cuda_matches_the_reference():
    """Autotuned tiles, several channel blocks and row tiles, bf16 activations as the backbone runs them."""
    dev = triton_device(True)
    for kind in ("w8", "w4g16", "svd"):
        m, x = _model(kind, 256, 384, 3, padding=1, batch=2, frames=700, dev=dev)
        x = x.bfloat16()
        with torch.no_grad():
            how = tc.plan(m, x)
            codes, scales = tc.window_codes(m, x, how)
            y = tc.conv1d(m, x, how)
        q_ref, s_ref = _ref_codes(m, x)
        assert torch.equal(scales, s_ref) and torch.equal(codes, q_ref)
        assert sqnr(_reference(m, x).float(), y.float()) > 40
