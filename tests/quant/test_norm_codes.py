"""The fused frame norm + SiLU + per-tensor uint8 codes kernel (quant/norm_codes.py): its codes against the eager
chain it replaces, the fused U-Net block forward against the block's own, the fallbacks, and a failed build."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from accelerando.models.unet import FrameGroupNorm, MusicUNet, MusicUNetConfig
from accelerando.quant import RTNConfig, SVDQuantConfig, calibrate_, int8_conv, norm_codes, quantize_
from accelerando.quant.presets import prepare_backbone
from accelerando.quant.primitives import INT_MM_ENV, quantize_per_tensor_u8


@pytest.fixture
def kernel():
    """Skip without the kernel. A fixture, not a skipif mark: checking builds the kernel, which must happen inside the
    test's isolated cache directory, not in the user's while pytest collects."""
    if not norm_codes.available():
        pytest.skip(f"no fused kernel: {norm_codes.status()}")


def _norm(c: int, groups: int, seed: int) -> FrameGroupNorm:
    g = torch.Generator().manual_seed(seed)
    norm = FrameGroupNorm(groups, c)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.3 * torch.randn(c, generator=g))
        norm.bias.copy_(0.3 * torch.randn(c, generator=g))
    return norm


def _reference(x, norm, mul, add, smooth):
    """The eager chain: codes, scale, zero point of ``silu(norm(x) * mul + add) * smooth``."""
    with torch.no_grad():
        h = norm(x)
        if mul is not None:
            h = h * mul + add
        h = F.silu(h)
        if smooth is not None:
            h = h * smooth.to(h.dtype)[:, None]
        return quantize_per_tensor_u8(h)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("c,groups,t,mod,smooth", [(32, 4, 301, False, False), (48, 8, 130, True, True)])
def test_codes_equal_the_eager_chain(kernel, dtype, c, groups, t, mod, smooth):
    g = torch.Generator().manual_seed(c + t)
    norm = _norm(c, groups, seed=t)
    x = (torch.randn(2, c, t, generator=g) * 3 + torch.randn(2, 1, t, generator=g)).to(dtype)
    mul = (1 + 0.2 * torch.randn(2, c, 1, generator=g)).to(dtype) if mod else None
    add = (0.3 * torch.randn(2, c, 1, generator=g)).to(dtype) if mod else None
    sm = (0.5 + torch.rand(c, generator=g)) if smooth else None
    q, scale, zp = norm_codes.frame_norm_silu_codes(x, norm, mul, add, sm)
    rq, rscale, rzp = _reference(x, norm, mul, add, sm)
    assert q.shape == (2, c, t) and q.dtype == torch.uint8 and q.stride() == (t * c, 1, c)  # channels-last
    assert torch.equal(scale, rscale) and torch.equal(zp, rzp)
    diff = (q.int() - rq.int()).abs()
    # the kernel's exp may differ from PyTorch's by an ulp before a bf16 rounding: a rare code moves by one
    assert int(diff.max()) <= 1 and int((diff > 0).sum()) <= max(1, diff.numel() // 10_000)
    fq, fscale, fzp = norm_codes.frame_norm_silu_float_codes(x, norm, mul, add, sm)  # the same codes, minus zp
    assert fq.dtype == torch.float32 and fq.is_contiguous() and torch.equal(fscale, scale) and torch.equal(fzp, zp)
    assert torch.equal(fq, q.float() - zp)


def _unet(seed: int = 0) -> MusicUNet:
    torch.manual_seed(seed)
    cfg = MusicUNetConfig(
        latent_dim=8, channels=[16, 32], blocks=1, kernel=3, groups=4, width=32, text_dim=16, norm="frame"
    )
    model = MusicUNet(cfg).eval()
    with torch.no_grad():  # trained-looking blocks: not the identity the zero init starts from
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _features(model: MusicUNet, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    cin = model.in_conv.in_channels
    return torch.randn(2, cin, 64, generator=g), torch.randn(2, model.config.width, generator=g)


def _quantized(cfg, seed: int = 0) -> MusicUNet:
    model = _unet(seed)
    layers = prepare_backbone(model)
    if isinstance(cfg, SVDQuantConfig):
        h, c = _features(model)
        with torch.no_grad():
            calibrate_(model, cfg, [lambda m: m.features(h, c)], filter_fn=layers)
    else:
        quantize_(model, cfg, filter_fn=layers)
    return model


@pytest.mark.parametrize("method", ["rtn", "svd"])
@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("mode", ["onednn", "float", "auto"])
def test_fused_blocks_give_the_blocks_own_output(kernel, mode, autocast, method, monkeypatch, request):
    """Every consumer of the codes: oneDNN's int8 convolution (VNNI CPUs), the float32 convolution of the codes
    (CPUs without VNNI, forced here with ACCELERANDO_QUANT_INT_MM=float), and oneDNN again for reduced-range layers
    on a CPU without VNNI ("auto", VNNI hidden here). SVDQuant layers also read the float input (their low-rank
    branch) and smooth the codes' input."""
    if mode == "onednn" and not int8_conv.available():
        pytest.skip("no oneDNN int8 convolutions (VNNI) here")
    if mode == "auto" and not int8_conv.op_available():
        pytest.skip("PyTorch build without oneDNN int8 convolutions")
    if mode == "auto":
        request.getfixturevalue("no_vnni")
    else:
        monkeypatch.setenv(INT_MM_ENV, "native" if mode == "onednn" else "float")
    small = mode == "auto"
    if method == "svd":
        cfg = SVDQuantConfig(4, 8, rank=4, group_size=None, calibration=None, act_scale="tensor", reduce_range=small)
    else:
        cfg = RTNConfig(8, 8, act_scale="tensor", reduce_range=small)
    model = _quantized(cfg)
    h, c = _features(model)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        ref = model.features(h, c)
        assert norm_codes.fuse_block_norms(model) == 8 and norm_codes.blocks_fused(model)  # 2 down, 2 mid, 4 up
        how = norm_codes._fused_plan(model.down[0][0].conv1, model.down[0][0].norm1, model.in_conv(h), None)
        assert how is not None and how[1].mode == ("float" if mode == "float" else "onednn")
        assert (how[1].low is not None) == (method == "svd") and (how[1].inv is not None) == (method == "svd")
        out = model.features(h, c)
        assert norm_codes.unfuse_block_norms(model) == 8 and not norm_codes.blocks_fused(model)
        again = model.features(h, c)
    torch.testing.assert_close(again, ref, rtol=0, atol=0)
    # the same codes reach the same oneDNN convolutions; a rare code one off would show as a tiny difference, and
    # an SVD layer's branch passes on the kernel's exp where it is an ulp off PyTorch's (float32 rounding)
    torch.testing.assert_close(out, ref, rtol=1e-2, atol=1e-2)
    assert float((out.float() - ref.float()).abs().median()) < 1e-6


def test_blocks_without_a_fused_plan_run_their_own_ops():
    float_model = _unet()
    h, c = _features(float_model)
    token = _quantized(RTNConfig(8, 8))  # per-token scales: no oneDNN plan
    for model in (float_model, token):
        with torch.no_grad():
            ref = model.features(h, c)
            norm_codes.fuse_block_norms(model)
            block = model.down[0][0]
            assert norm_codes._fused_plan(block.conv1, block.norm1, model.in_conv(h), None) is None
            torch.testing.assert_close(model.features(h, c), ref, rtol=0, atol=0)


def test_a_failed_build_warns_once_and_leaves_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(norm_codes, "_state", {"lib": None, "broken": None})
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler 'no-such-compiler-here'"):
        assert not norm_codes.available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        assert not norm_codes.available()
    assert "no-such-compiler-here" in norm_codes.status()["broken"]
    with pytest.raises(RuntimeError, match="unavailable"):
        norm_codes.frame_norm_silu_codes(torch.zeros(1, 4, 3), FrameGroupNorm(2, 4))
    # int8_conv's passes fall back to the eager ops, with the same values
    x, y = torch.randn(2, 4, 9), torch.randn(2, 9, 4).transpose(1, 2)
    assert norm_codes.conv_input_codes(x, None) is None and norm_codes.conv_output(y, None, torch.float32) is None
    want = int8_conv._quantize(x, None)
    assert all(torch.equal(a, b) for a, b in zip(int8_conv._run(int8_conv._quantize, x, None), want, strict=True))
    assert torch.equal(int8_conv._run(int8_conv._finish, y, None, torch.float32), y.contiguous())
    monkeypatch.setattr(norm_codes, "_SOURCE", tmp_path / "broken.cpp")
    (tmp_path / "broken.cpp").write_text("this is not C++\n")
    out = tmp_path / "k" / "x.so"
    if norm_codes.shutil.which("g++"):
        with pytest.raises(RuntimeError, match="g\\+\\+ failed"):
            norm_codes._build(out, "g++")
        assert not out.exists() and list(out.parent.iterdir()) == []  # no half-written library left behind


def test_another_kernel_source_loads_bound_or_names_the_problem(kernel, tmp_path):
    """What the benchmarks' --kernel-source takes: the package's own source loads bound; a missing file, a source of
    another ABI and one that does not build are named."""
    lib = norm_codes.load_source(norm_codes._SOURCE)
    assert lib.accel_norm_codes_abi() == norm_codes._ABI and lib.accel_finish_f32.argtypes is not None
    with pytest.raises(RuntimeError, match="no such file"):
        norm_codes.load_source(tmp_path / "missing.cpp")
    other = tmp_path / "other.cpp"
    other.write_text('extern "C" int accel_norm_codes_abi() { return 99; }\n')
    with pytest.raises(RuntimeError, match="ABI 99"):
        norm_codes.load_source(other)
    other.write_text("not C++\n")
    with pytest.raises(RuntimeError, match="failed"):
        norm_codes.load_source(other)


def test_bad_inputs_are_named_and_hooks_keep_the_modules_own_calls(monkeypatch):
    norm = FrameGroupNorm(4, 8)
    with pytest.raises(ValueError, match="8 channels for a norm over 12"):
        norm_codes.frame_norm_silu_codes(torch.zeros(1, 8, 5), FrameGroupNorm(4, 12))
    with pytest.raises(ValueError, match="mul and add"):
        norm_codes.frame_norm_silu_codes(torch.zeros(1, 8, 5), norm, add=torch.zeros(1, 8, 1))
    with pytest.raises(ValueError, match="float16"):
        norm_codes.frame_norm_silu_codes(torch.zeros(1, 8, 5, dtype=torch.float16), norm)
    monkeypatch.setenv(INT_MM_ENV, "float")  # a plan exists on any CPU
    model = _quantized(RTNConfig(8, 8, act_scale="tensor"))
    block = model.down[0][0]
    with torch.no_grad():
        x = model.in_conv(_features(model)[0])
        if norm_codes.available():
            assert norm_codes._fused_plan(block.conv1, block.norm1, x, None) is not None
        block.conv1.register_forward_hook(lambda *a: None)
        assert norm_codes._fused_plan(block.conv1, block.norm1, x, None) is None


def test_the_kernels_exp_is_within_one_ulp(kernel):
    """The SiLU's exp (a polynomial with fused multiply-adds) against float64 exp rounded to float32, over the range
    the kernel clamps to; 40 million points in benchmarks/norm_codes_exactness.py."""
    x = torch.linspace(-87.0, 88.0, 1_000_003)
    got = norm_codes.kernel_exp(x)
    want = torch.exp(x.double()).float()
    ulps = (got.view(torch.int32).long() - want.view(torch.int32).long()).abs()
    assert int(ulps.max()) <= 1
    assert float(norm_codes.kernel_exp(torch.zeros(1))) == 1.0
