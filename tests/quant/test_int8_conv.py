"""Per-tensor uint8 activations and the oneDNN int8 convolution path: codes, the int32 reference, the oneDNN path
against the unfold reference, SVD smoothing shared by a conv's taps, cache invalidation, and save / load."""

import os
import platform
from unittest import mock

import pytest
import torch
from torch import nn

from accelerando.quant import RTNConfig, SVDQuantConfig, calibrate_, int8_conv, quantize_
from accelerando.quant.conv import UnfoldConv1d
from accelerando.quant.linear import QuantLinear
from accelerando.quant.primitives import INT_MM_ENV, quantize_per_tensor_u8
from accelerando.quant.switches import use_group_folding, use_int8_convs
from accelerando.testing.sqnr import sqnr

needs_onednn = pytest.mark.skipif(not int8_conv.available(), reason="PyTorch build without oneDNN int8 convolutions")
LINEAR = {"filter_fn": lambda m, n: n.endswith("linear")}


@pytest.fixture(params=["onednn", "float"])
def conv_mode(request, monkeypatch):
    """Each per-tensor conv test runs on oneDNN's int8 convolution (VNNI CPUs only) and on the float32 convolution of
    the codes that CPUs without VNNI use (``ACCELERANDO_QUANT_INT_MM=float`` forces it anywhere)."""
    if request.param == "onednn":
        if not int8_conv.available():
            pytest.skip("no oneDNN int8 convolutions (VNNI) here")
        monkeypatch.setenv(INT_MM_ENV, "native")
    else:
        monkeypatch.setenv(INT_MM_ENV, "float")
    return request.param


def test_per_tensor_u8_codes_cover_the_range_and_keep_zero_exact():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 40, generator=g) * 2 + 0.5
    q, scale, zp = quantize_per_tensor_u8(x)
    assert q.dtype == torch.uint8 and q.shape == x.shape and scale.shape == () and zp.dtype == torch.int64
    assert int(q.min()) == 0 and int(q.max()) == 255  # the extremes land on the ends of the range
    err = ((q.float() - zp) * scale - x).abs().max()
    assert err <= scale / 2 + 1e-6
    zq, zs, zz = quantize_per_tensor_u8(torch.tensor([0.0, 1.0, 2.0]))  # non-negative: zero point 0, 0 exact
    assert int(zz) == 0 and int(zq[0]) == 0
    nq, _, nz = quantize_per_tensor_u8(torch.zeros(5))  # all zero: a tiny scale, no division by zero
    assert torch.equal(nq.long(), nz.expand(5))


def test_u8_params_from_floats_equal_the_tensor_ops():
    """The Python-float scale and zero point (what the C++ passes' min/max feed) equal ``u8_params`` bit for bit,
    across magnitudes, at exact halves, and where the tensor ops take over (NaN, inf, ranges beyond float32)."""
    from accelerando.quant.primitives import u8_params, u8_params_of

    g = torch.Generator().manual_seed(11)
    pairs = [torch.randn(400, 2, generator=g) * 2.0**e for e in range(-40, 41, 4)]
    halves = torch.tensor([[-127.5, 127.5], [-0.5, 0.0], [-2.5 * 0.1, 252.5 * 0.1]])
    edge = torch.tensor([[0.0, 0.0], [-0.0, 0.0], [1e-45, 2e-45], [-1e-38, 1e-38], [-3e38, 3e38], [5.0, 7.0]])
    special = torch.tensor([[float("nan"), 1.0], [-1.0, float("inf")], [float("-inf"), 0.0]])
    for lo, hi in torch.cat([*pairs, halves, edge, special]).tolist():
        got, want = u8_params_of(lo, hi), u8_params(torch.tensor(lo), torch.tensor(hi))
        assert got[0].dtype == torch.float32 and got[1].dtype == torch.int64 and got[0].shape == got[1].shape == ()
        assert torch.equal(got[0], want[0]) or (got[0].isnan() and want[0].isnan()), (lo, hi)
        assert want[0].isnan() or torch.equal(got[1], want[1]), (lo, hi)


@pytest.mark.parametrize("w_bits,group", [(8, None), (4, 16)])
def test_per_tensor_linear_int_mm_equals_the_int32_reference(w_bits, group):
    g = torch.Generator().manual_seed(1)
    lin = nn.Linear(64, 24)
    x = torch.randn(30, 64, generator=g).relu() - 0.2  # asymmetric, like a SiLU output
    q = QuantLinear.from_float(lin, w_bits, 8, group, act_scale="tensor")
    with use_group_folding(False):  # one GEMM per group: the offset correction per group
        torch.testing.assert_close(q(x), q.reference_forward(x), rtol=0, atol=0)
    torch.testing.assert_close(q(x), q.reference_forward(x), rtol=0, atol=0)
    assert sqnr(lin(x), q(x)) > (38 if w_bits == 8 else 18)
    assert "act_scale=tensor" in repr(q)


def test_act_scale_is_validated_naming_the_value():
    with pytest.raises(ValueError, match="act_scale='tensor' needs a_bits=8"):
        RTNConfig(8, 16, act_scale="tensor")
    with pytest.raises(ValueError, match="act_scale='row'"):
        SVDQuantConfig(act_scale="row")


def _conv(c_in, c_out, k, stride=1, padding=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv1d(c_in, c_out, k, stride=stride, padding=padding)
    with torch.no_grad():
        conv.weight.copy_((torch.rand(conv.weight.shape, generator=g) * 2 - 1) / (c_in * k) ** 0.5)
        conv.bias.copy_(torch.randn(c_out, generator=g) * 0.1)
    x = torch.nn.functional.silu(torch.randn(2, c_in, 50, generator=g) * 2)
    return conv, x


def _both_paths(model, x):
    """(oneDNN or float-codes output, unfold reference output) of ``model`` on ``x``, with the path checked. The
    reference multiplies with ``torch._int_mm`` (``ACCELERANDO_QUANT_INT_MM=native``): the int32 sums themselves,
    not their float32 emulation."""
    with torch.no_grad():
        assert int8_conv.applies(model[0], x)
        fast = model(x)
        with mock.patch.dict(os.environ, {INT_MM_ENV: "native"}), use_int8_convs(False):
            assert not int8_conv.applies(model[0], x)
            ref = model(x)
    return fast, ref


# the unfold reference runs the same integer codes and int32 sums; only the fp32 epilogue's rounding differs
@pytest.mark.parametrize(
    "k,stride,padding,cfg",
    [
        (3, 1, 1, RTNConfig(8, 8, act_scale="tensor")),
        (4, 2, 1, RTNConfig(8, 8, act_scale="tensor")),  # the U-Net's downsampling
        (1, 1, 0, RTNConfig(8, 8, act_scale="tensor")),  # skip
        (3, 1, 1, RTNConfig(4, 8, 32, act_scale="tensor")),  # W4A8, group scales folded
    ],
)
def test_onednn_conv_matches_the_unfold_reference(conv_mode, k, stride, padding, cfg):
    conv, x = _conv(32, 48, k, stride, padding)
    model = nn.Sequential(UnfoldConv1d.from_conv(conv))
    quantize_(model, cfg, **LINEAR)
    fast, ref = _both_paths(model, x)
    assert fast.shape == conv(x).shape and fast.is_contiguous()
    assert sqnr(ref, fast) > 100
    if conv_mode == "float":  # the same integer sums and the reference's epilogue in its order
        assert torch.equal(fast, ref)
    assert sqnr(conv(x), fast) > (33 if cfg.w_bits == 8 else 18)


def test_onednn_conv_under_bf16_autocast_returns_bf16(conv_mode):
    conv, x = _conv(32, 48, 3, padding=1)
    model = nn.Sequential(UnfoldConv1d.from_conv(conv))
    quantize_(model, RTNConfig(8, 8, act_scale="tensor"), **LINEAR)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast, ref = _both_paths(model, x)
    assert fast.dtype == ref.dtype == torch.bfloat16
    assert sqnr(ref.float(), fast.float()) > 40  # bf16 outputs: one rounding apart
    if conv_mode == "float":  # the codes' float32 sums stay outside autocast: still the reference, bit for bit
        assert torch.equal(fast, ref)


def _cpp_kernels():
    from accelerando.quant import norm_codes

    if not norm_codes.available():
        pytest.skip(f"no C++ kernels here: {norm_codes.status()['broken']}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("smooth", [False, True])
@pytest.mark.parametrize("frames", [1, 50, 129, 300])  # the codes pass works in tiles of 128 frames
@pytest.mark.parametrize("channels", [32, 44])  # and writes 8 channels x 8 frames at a time (44: 4 channels left)
def test_cpp_quantize_kernel_gives_the_eager_codes(dtype, smooth, frames, channels):
    _cpp_kernels()
    g = torch.Generator().manual_seed(frames)
    x = torch.nn.functional.silu(torch.randn(2, channels, frames, generator=g) * 2).to(dtype)
    inv = torch.rand(channels, generator=g) + 0.5 if smooth else None
    want = int8_conv._quantize(x, inv)
    from accelerando.quant.norm_codes import conv_input_codes

    got = conv_input_codes(x, inv)
    assert all(torch.equal(a, b) for a, b in zip(want, got, strict=True))
    if frames > 1:  # (one frame: either layout is both)
        assert got[0].stride() == want[0].stride() == (x.shape[1] * x.shape[2], 1, x.shape[1])
        assert conv_input_codes(x.transpose(1, 2).contiguous().transpose(1, 2), inv) is None  # not contiguous
    assert all(torch.equal(a, b) for a, b in zip(int8_conv._run(int8_conv._quantize, x, inv), want, strict=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpp_finish_adds_low_rank_and_residual_as_eager(dtype):
    """oneDNN's channels-last float32 output, the low-rank branch and a block's skip connection: the C++ pass rounds
    where ``residual + conv(x)`` does in eager mode. Shapes that are not multiples of its 64 x 64 tiles, nor of the
    8 x 8 register transposes inside them."""
    _cpp_kernels()
    from accelerando.quant.norm_codes import conv_output

    g = torch.Generator().manual_seed(2)
    y = torch.randn(2, 137, 70, generator=g).transpose(1, 2)  # [B, C, T] channels-last
    low = torch.randn(2, 70, 137, generator=g).to(dtype)
    res = torch.randn(2, 70, 137, generator=g).to(dtype)
    for lo, r in ((None, None), (low, None), (None, res), (low, res)):
        want = int8_conv._finish(y, lo, dtype, r)
        got = conv_output(y, lo, dtype, r)
        assert got.dtype == dtype and got.is_contiguous() and torch.equal(got, want)
        assert torch.equal(int8_conv._run(int8_conv._finish, y, lo, dtype, r), want)
    assert conv_output(y.contiguous(), None, dtype) is None  # channels-first input: the eager pass
    assert conv_output(y, low.float() if dtype == torch.bfloat16 else low.bfloat16(), dtype) is None


def test_cpp_passes_built_without_avx2_give_the_eager_values(monkeypatch):
    """The scalar transposes that CPUs without AVX2 (and other architectures) compile: the codes and output passes
    built with ``-mno-avx2`` give the eager values too."""
    _cpp_kernels()
    from accelerando.quant import norm_codes

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the AVX2 paths are x86 only: the package's own build is the scalar one here")
    try:
        lib = norm_codes._bind(norm_codes.build_source(extra_flags=("-mno-avx2",)))
    except RuntimeError as err:
        pytest.skip(f"no build without AVX2: {err}")
    monkeypatch.setitem(norm_codes._state, "lib", lib)
    g = torch.Generator().manual_seed(5)
    for dtype in (torch.float32, torch.bfloat16):
        for c, t in ((44, 137), (7, 9), (65, 8), (9, 1)):
            x = torch.nn.functional.silu(torch.randn(2, c, t, generator=g) * 2).to(dtype)
            inv = torch.rand(c, generator=g) + 0.5
            got, want = norm_codes.conv_input_codes(x, inv), int8_conv._quantize(x, inv)
            assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
            y = torch.randn(2, t, c, generator=g).transpose(1, 2)
            low, res = torch.randn(2, c, t, generator=g).to(dtype), torch.randn(2, c, t, generator=g).to(dtype)
            assert torch.equal(norm_codes.conv_output(y, low, dtype, res), int8_conv._finish(y, low, dtype, res))


def test_svd_per_tensor_conv_shares_smoothing_across_taps_and_runs_through_onednn(conv_mode):
    conv, x = _conv(32, 48, 3, padding=1)
    x[:, [3, 20]] *= 15  # outlier channels
    model = nn.Sequential(UnfoldConv1d.from_conv(conv))
    calibrate_(model, SVDQuantConfig(4, 8, rank=8, group_size=32, act_scale="tensor"), [x], **LINEAR)
    inv = model[0].linear.inv_smooth.reshape(32, 3)
    assert torch.equal(inv, inv[:, :1].expand(-1, 3)) and not torch.equal(inv[:, 0], inv[0, 0].expand(32))
    fast, ref = _both_paths(model, x)
    assert sqnr(ref, fast) > 60  # the low-rank branch runs as convs here, as a Linear there
    rtn = nn.Sequential(UnfoldConv1d.from_conv(conv))
    quantize_(rtn, RTNConfig(4, 8, 32, act_scale="tensor"), **LINEAR)
    with torch.no_grad():
        assert sqnr(conv(x), fast) > sqnr(conv(x), rtn(x)) + 3  # the outliers cost SVD less than RTN


def test_per_tap_smoothing_falls_back_to_unfold(conv_mode):
    """A per-token SVD layer switched to per-tensor scales keeps per-tap smoothing: no native conv exists for it."""
    conv, x = _conv(32, 48, 3, padding=1)
    model = nn.Sequential(UnfoldConv1d.from_conv(conv))
    calibrate_(model, SVDQuantConfig(8, 8, rank=4), [x * torch.linspace(0.1, 3, 50)], **LINEAR)
    model[0].linear.residual.act_scale = "tensor"
    assert not int8_conv.applies(model[0], x)
    with torch.no_grad():
        assert sqnr(conv(x), model(x)) > 25


def test_packed_weight_is_rebuilt_when_scales_change_and_autograd_takes_unfold(conv_mode):
    conv, x = _conv(32, 48, 3, padding=1)
    model = nn.Sequential(UnfoldConv1d.from_conv(conv))
    quantize_(model, RTNConfig(8, 8, act_scale="tensor"), **LINEAR)
    lin = model[0].linear
    with torch.no_grad():
        before = model(x)
        lin.weight_scale = lin.weight_scale * 2  # a new tensor (as recovery assigns)
        fast, ref = _both_paths(model, x)
        assert sqnr(ref, fast) > 100 and sqnr(2 * (before - lin.bias[:, None]), fast - lin.bias[:, None]) > 100
        lin.weight_scale.mul_(0.5)  # in place
        torch.testing.assert_close(model(x), before)
    xg = x.clone().requires_grad_(True)
    assert not int8_conv.applies(model[0], xg)
    model(xg).sum().backward()  # the unfold path: the input gets its gradient
    assert xg.grad is not None


def test_per_tensor_unet_round_trips_and_runs_its_convs_through_onednn(conv_mode, tmp_path, monkeypatch):
    from accelerando.pretrained import load_generator
    from accelerando.quant.presets import quantize_pipeline, save_quantized_generator
    from accelerando.testing.models import backbone_inputs, tiny_pipeline

    pipe = tiny_pipeline(backbone="unet")
    quantize_pipeline(pipe, "w8a8-rtn", calib_prompts=1, act_scale="tensor", seconds=1.0, steps=2)
    path = save_quantized_generator(pipe.model, tmp_path / "t.safetensors", {"preset": "w8a8-rtn"})
    loaded = load_generator(path)
    layers = [m for m in loaded.dit.modules() if isinstance(m, UnfoldConv1d)]
    assert layers and all(m.linear.act_scale == "tensor" for m in layers)
    calls = []
    real = int8_conv.int8_conv1d
    monkeypatch.setattr(int8_conv, "int8_conv1d", lambda *a: calls.append(1) or real(*a))
    x, t, cond = backbone_inputs(loaded.config, 1.0)
    with torch.no_grad():
        fast = loaded.dit(x, t, cond)
        assert len(calls) == len(layers)
        with use_int8_convs(False):
            ref = loaded.dit(x, t, cond)
    assert sqnr(ref, fast) > 60


def test_edit_backend_treats_per_tensor_windows_as_approximate():
    """Per-tensor scales come from what a call sees, so a frame-norm U-Net's windowed calls stop being exact: the
    sparse-edit backend then recomputes a halo around the edit, as for clip-statistics U-Nets."""
    from dataclasses import replace

    from accelerando.cache.edit_backends import backend_for
    from accelerando.models.unet import MusicUNet, MusicUNetConfig
    from accelerando.quant.presets import prepare_backbone

    for act, exact, halo in (("token", True, 0.0), ("tensor", False, 0.5)):
        unet = MusicUNet(replace(MusicUNetConfig.tiny(), norm="frame"))
        quantize_(unet, RTNConfig(8, 8, act_scale=act), filter_fn=prepare_backbone(unet))
        backend = backend_for(unet)
        assert backend.exact is exact and backend.default_halo_s == halo


def test_dilated_and_biasless_convs_match_and_bf16_input_without_autocast(conv_mode):
    conv, x = _conv(32, 48, 3, padding=2)
    conv.dilation = (2,)
    conv.bias = None
    model = nn.Sequential(UnfoldConv1d.from_conv(conv))
    quantize_(model, RTNConfig(8, 8, act_scale="tensor"), **LINEAR)
    fast, ref = _both_paths(model, x)
    assert sqnr(ref, fast) > 100 and sqnr(conv(x), fast) > 33
    fast16, ref16 = _both_paths(model, x.bfloat16())
    assert fast16.dtype == torch.bfloat16 and sqnr(ref16.float(), fast16.float()) > 40


def test_unsupported_dtypes_and_uncovered_frames_take_the_unfold_path(conv_mode):
    conv, x = _conv(32, 48, 2, stride=2)  # odd length: the last frame is in no window
    model = nn.Sequential(UnfoldConv1d.from_conv(conv))
    quantize_(model, RTNConfig(8, 8, act_scale="tensor"), **LINEAR)
    x_odd = x[..., :49].clone()
    x_odd[..., -1] = 50.0  # a peak no window reads: it must not set the scale
    assert int8_conv.applies(model[0], x) and not int8_conv.applies(model[0], x_odd)
    assert not int8_conv.applies(model[0], x.half()) and not int8_conv.applies(model[0], x.double())
    with torch.autocast("cpu", dtype=torch.float16):
        assert not int8_conv.applies(model[0], x)
    with torch.no_grad():
        assert sqnr(conv(x_odd), model(x_odd)) > 33 and model(x.double()).dtype == torch.float64


def test_inference_mode_buffers_run_through_onednn_and_reloads_repack(conv_mode):
    conv, x = _conv(32, 48, 3, padding=1)
    other, _ = _conv(32, 48, 3, padding=1, seed=5)
    with torch.inference_mode():  # a model quantized (or loaded) inside inference mode has inference buffers
        model = nn.Sequential(UnfoldConv1d.from_conv(conv))
        quantize_(model, RTNConfig(8, 8, act_scale="tensor"), **LINEAR)
        assert model[0].linear.qweight.is_inference() and int8_conv.applies(model[0], x)
        fast = model(x)
        donor = nn.Sequential(UnfoldConv1d.from_conv(other))
        quantize_(donor, RTNConfig(8, 8, act_scale="tensor"), **LINEAR)
        model.load_state_dict(donor.state_dict())  # in place, no version counter: the load hook drops the cache
        reloaded = model(x)
    assert sqnr(conv(x), fast) > 33 and sqnr(other(x), reloaded) > 33


def test_recovery_runs_per_call_with_per_tensor_scales(monkeypatch):
    """Recovery trains a per-tensor U-Net one backbone call per sampler call (each call its own activation scale, as
    in generation), and its exact objective runs the oneDNN path."""
    from accelerando.quant import recovery
    from accelerando.quant.presets import quantize_pipeline
    from accelerando.testing.models import tiny_pipeline

    pipe = tiny_pipeline(backbone="unet")
    sizes = []
    real = recovery._rows
    monkeypatch.setattr(recovery, "_rows", lambda cond, a, b: sizes.append(b - a) or real(cond, a, b))
    opts = {"seconds": 1.0, "steps": 2, "recover_seconds": 1.0, "recover_prompts": 1, "rank": 4}
    quantize_pipeline(pipe, "w4a8-svd", calib_prompts=1, act_scale="tensor", recover_steps=2, **opts)
    rep = pipe.model.quant_report["recovery"]
    # every backbone call holds one sampler call's two guidance branches (2 sampler steps per loss, 4 or more losses)
    assert rep["steps"] == 2 and len(sizes) >= 8 and set(sizes) == {2}


def test_no_vnni_means_no_onednn_path_for_every_layer(no_vnni):
    """Without VNNI oneDNN's uint8 x int8 kernels sum pairs in saturating int16: not every layer can run there, so
    the mode is chosen per layer ("auto"), or the unfold path runs where the op is missing."""
    assert not int8_conv.available()
    assert int8_conv.status()["mode"] == ("auto" if int8_conv.op_available() else "float")


needs_op = pytest.mark.skipif(not int8_conv.op_available(), reason="PyTorch build without oneDNN int8 convolutions")


@needs_op
def test_onednn_int8_sums_are_exact_for_weight_codes_within_64():
    """The premise of the no-VNNI path, on whatever CPU runs the tests: uint8 codes over the whole [0, 255] range
    (all 255 as well) with weight codes within [-64, 64] give the exact integer sums."""
    g = torch.Generator().manual_seed(0)
    c, t = 96, 40
    for case in range(3):
        q = torch.randint(0, 256, (2, t, c), generator=g, dtype=torch.uint8)
        w = torch.randint(-64, 65, (c, c, 3), generator=g, dtype=torch.int8)
        if case:  # the worst case for a pair of products: both at the extremes, of one sign
            q.fill_(255)
            w = torch.where(torch.rand(c, c, 3, generator=g) < 0.5, 64, -64).to(torch.int8)
            if case == 2:
                w.fill_(64)
        q = q.transpose(1, 2)  # channels-last codes [B, C, T]
        ones = torch.ones(c)
        packed = torch.ops.onednn.qconv_prepack(w, ones, 1.0, 0, [1], [1], [1], 1, None)
        zeros = torch.zeros(c, dtype=torch.int64)
        one, zero = torch.tensor(1.0), torch.tensor(0)
        args = (packed, ones, zeros, None, [1], [1], [1], 1, 1.0, 0, torch.float64, "none", [], "")
        try:
            y = torch.ops.onednn.qconv_pointwise.tensor(q, one, zero, *args)
        except RuntimeError:  # no float64 output: float32 holds these sums (below 2^24) exactly
            args = args[:10] + (torch.float32,) + args[11:]
            y = torch.ops.onednn.qconv_pointwise.tensor(q, one, zero, *args)
        ref = torch.nn.functional.conv1d(q.double(), w.double(), None, 1, 1)
        assert torch.equal(y.double(), ref), case


@needs_op
@pytest.mark.parametrize(
    "cfg,runs",
    [
        (RTNConfig(8, 8, act_scale="tensor", reduce_range=True), "onednn"),
        (RTNConfig(4, 8, 16, act_scale="tensor", reduce_range=True), "onednn"),  # groups folded in eighths
        (RTNConfig(4, 8, None, act_scale="tensor"), "onednn"),  # 4-bit per channel: codes within [-8, 7]
        (RTNConfig(8, 8, act_scale="tensor"), "float"),  # 8-bit codes reach 127: float32 conv of the codes
        (RTNConfig(4, 8, 16, act_scale="tensor"), "float"),  # folded in sixteenths: up to 128
    ],
)
def test_without_vnni_layers_with_small_weight_codes_run_through_onednn(cfg, runs, no_vnni, monkeypatch):
    assert int8_conv.status()["mode"] == "auto"
    conv, x = _conv(32, 48, 3, padding=1)
    model = nn.Sequential(UnfoldConv1d.from_conv(conv))
    quantize_(model, cfg, **LINEAR)
    assert int8_conv.plan(model[0], x)[1].mode == runs
    fast, ref = _both_paths(model, x)
    assert sqnr(ref, fast) > 100  # the same integer sums; only the float epilogue's rounding differs
    if runs == "float":
        assert torch.equal(fast, ref)
    assert sqnr(conv(x), fast) > (30 if cfg.w_bits == 8 else 18)
    monkeypatch.setenv(INT_MM_ENV, "float")  # forced: every layer takes the float32 conv of the codes
    assert int8_conv.status()["mode"] == "float" and int8_conv.plan(model[0], x)[1].mode == "float"


def test_reduce_range_keeps_weight_codes_within_64_and_round_trips(tmp_path):
    from accelerando.quant.io import load_quantized, save_quantized

    g = torch.Generator().manual_seed(4)
    lin = nn.Linear(64, 24)
    x = torch.randn(30, 64, generator=g)
    q8 = QuantLinear.from_float(lin, 8, 8, None, act_scale="tensor", reduce_range=True)
    assert int(q8.qweight.short().abs().max()) == 63 and q8.code_bits() == 7 and "reduce_range=True" in repr(q8)
    full = QuantLinear.from_float(lin, 8, 8, None, act_scale="tensor")
    assert sqnr(lin(x), q8(x)) > 30 and sqnr(lin(x), full(x)) > sqnr(lin(x), q8(x))  # a bit coarser, not broken
    q4 = QuantLinear.from_float(lin, 4, 8, 16, act_scale="tensor", reduce_range=True)
    codes, _, _ = q4.gemm_weight()
    assert int(codes.short().abs().max()) <= 64
    torch.testing.assert_close(q4(x), q4.reference_forward(x), rtol=0, atol=0)
    with use_group_folding(False):
        exact = q4(x)
    assert sqnr(exact, q4(x)) > 25  # folding in eighths of a step stays close to the exact grouped product
    model = nn.Sequential(nn.Linear(64, 24))
    quantize_(model, RTNConfig(4, 8, 16, act_scale="tensor", reduce_range=True))
    save_quantized(model, tmp_path / "r.safetensors")
    again = load_quantized(nn.Sequential(nn.Linear(64, 24)), tmp_path / "r.safetensors")
    assert again[0].reduce_range and again[0].quant_config.reduce_range
    torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="reduce_range='yes'"):
        RTNConfig(8, 8, reduce_range="yes")
    with pytest.raises(ValueError, match="reduce_range=True with full_range=True"):
        QuantLinear(64, 24, full_range=True, reduce_range=True)


@needs_op
@pytest.mark.parametrize("w_bits,group", [(8, None), (4, 16)])
def test_svd_reduce_range_conv_runs_through_onednn_without_vnni(w_bits, group, no_vnni):
    """The residual's codes stay within [-64, 64] and the layer (low-rank branch included) matches the reference."""
    conv, x = _conv(32, 48, 3, padding=1)
    x[:, 3] *= 20  # an outlier channel
    model = nn.Sequential(UnfoldConv1d.from_conv(conv))
    cfg = SVDQuantConfig(w_bits, 8, rank=4, group_size=group, act_scale="tensor", reduce_range=True)
    calibrate_(model, cfg, [lambda m: m(x)], **LINEAR)
    res = model[0].linear.residual
    assert res.reduce_range and int(res.gemm_weight()[0].short().abs().max()) <= 64
    how = int8_conv.plan(model[0], x)
    assert how[1].mode == "onednn" and how[1].low is not None
    fast, ref = _both_paths(model, x)
    assert sqnr(ref, fast) > 60  # the low-rank branch's float convs round differently from the unfold GEMMs
    assert sqnr(conv(x), fast) > (25 if w_bits == 8 else 18)


def test_float_codes_conv_is_exact_at_the_builtins_widths(monkeypatch):
    """K = 3 x 768 (the built-in's widest conv input): beyond the width where float32 sums of codes are exact for
    any codes, still bit-identical to the int32 reference for realistic weights and activations."""
    monkeypatch.setenv(INT_MM_ENV, "float")
    conv, _ = _conv(768, 64, 3, padding=1)
    x = torch.nn.functional.silu(torch.randn(2, 768, 40, generator=torch.Generator().manual_seed(3)) * 2)
    model = nn.Sequential(UnfoldConv1d.from_conv(conv))
    quantize_(model, RTNConfig(8, 8, act_scale="tensor"), **LINEAR)
    fast, ref = _both_paths(model, x)
    assert torch.equal(fast, ref)


@needs_op
@pytest.mark.parametrize(
    "k,stride,padding,dilation,frames,bias",
    [
        (3, 1, 1, 1, 50, True),
        (4, 2, 1, 1, 50, True),  # the U-Net's downsampling
        (3, 1, 2, 2, 50, False),
        (5, 1, 3, 1, 4, True),  # a short input: every output frame reads padding
        (3, 1, 1, 1, 1, False),
    ],
)
def test_zero_point_folded_into_the_bias_and_the_edge_frames(k, stride, padding, dilation, frames, bias, no_vnni):
    """oneDNN runs without the activation zero point (its offset folded into the bias, the padded taps put back on
    the edge frames): the same output as the unfold reference and as oneDNN given the zero point."""
    conv, x = _conv(32, 48, k, stride, padding, seed=5)
    conv.dilation = (dilation,)
    if not bias:
        conv.bias = None
    x = x[..., :frames].contiguous() - 0.5  # negative values: a zero point well above 0
    model = nn.Sequential(UnfoldConv1d.from_conv(conv))
    quantize_(model, RTNConfig(8, 8, act_scale="tensor", reduce_range=True), **LINEAR)
    how = int8_conv.plan(model[0], x)
    assert how is not None and how[1].mode == "onednn"
    fast, ref = _both_paths(model, x)
    assert fast.shape == conv(x).shape and sqnr(ref, fast) > 100
    q, scale, zp = int8_conv._quantize(x, None)
    assert int(zp) > 20
    res, entry = how[0], how[1]
    given = torch.ops.onednn.qconv_pointwise.tensor(
        q,
        scale,
        zp,
        entry.weight,
        entry.w_scale,
        entry.zeros,
        res.bias,
        [stride],
        [padding],
        [dilation],
        1,
        1.0,
        0,
        torch.float32,
        "none",
        [],
        "",
    )
    torch.testing.assert_close(fast, given.contiguous(), rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        fast16 = model(x)
    assert fast16.dtype == torch.bfloat16 and sqnr(ref, fast16.float()) > 40  # one bf16 rounding of the output


def test_a_nan_input_gives_nan_outputs_on_every_path(no_vnni):
    """The C++ min/max reports a NaN (std::min would skip it): the layer's output is all NaN, as the eager and
    unfold paths give it, not finite values that hide a diverging activation."""
    conv, x = _conv(16, 24, 3, padding=1)
    x[1, 3, 7] = float("nan")
    model = nn.Sequential(UnfoldConv1d.from_conv(conv))
    quantize_(model, RTNConfig(8, 8, act_scale="tensor", reduce_range=True), **LINEAR)
    with torch.no_grad():
        fast = model(x)
        with mock.patch.dict(int8_conv._state, {"cpp": False}):
            eager = model(x)
        with use_int8_convs(False):
            ref = model(x)
    assert fast.isnan().all() and eager.isnan().all() and ref.isnan().all()


@needs_op
def test_residual_added_in_the_output_pass_equals_adding_it_after(no_vnni):
    conv, x = _conv(32, 48, 3, padding=1, seed=7)
    model = nn.Sequential(UnfoldConv1d.from_conv(conv))
    quantize_(model, RTNConfig(8, 8, act_scale="tensor", reduce_range=True), **LINEAR)
    how = int8_conv.plan(model[0], x)
    assert how is not None and how[1].mode == "onednn"
    res = torch.randn(2, 48, 50)
    q, scale, zp = int8_conv._run(int8_conv._quantize, x, None)
    with torch.no_grad():
        alone = int8_conv.conv_codes(model[0], q, scale, zp, how)
        fused = int8_conv.conv_codes(model[0], q, scale, zp, how, residual=res)
    assert torch.equal(fused, res + alone)
