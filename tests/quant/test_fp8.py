"""FP8 (e4m3) layers: ``torch._scaled_mm`` against the float32 reference, SQNR floors, save and load."""

import pytest
import torch
from torch import nn

from accelerando.quant import (
    Float8DynamicConfig,
    Float8Linear,
    config_from_dict,
    load_quantized,
    quantize_,
    save_quantized,
)
from accelerando.quant.fp8 import FP8_MAX, fp8_rows
from accelerando.testing.sqnr import sqnr


def _layer_and_input(seed: int = 0, k: int = 256, n: int = 192, m: int = 48):
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(k, n)
    x = torch.randn(2, m // 2, k, generator=g)
    x[..., 5] *= 20  # an outlier channel: per-token scales must keep the rest usable
    return lin, x


def test_fp8_rows_scale_and_range():
    x = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]])
    q, s = fp8_rows(x)
    assert q.dtype == torch.float8_e4m3fn and s.shape == (2, 1)
    assert torch.isclose(s[0, 0], torch.tensor(2.0 / FP8_MAX))
    assert q[0].float().abs().max() == FP8_MAX  # the row's absmax maps to e4m3's largest value
    assert torch.equal(q[1].float(), torch.zeros(3))  # an all-zero row stays zero (eps scale, no NaN)


def test_scaled_mm_matches_reference_and_meets_floor():
    lin, x = _layer_and_input()
    q = Float8Linear.from_float(lin)
    with torch.no_grad():
        y, ref, full = q(x), q.reference_forward(x), lin(x)
    assert y.shape == full.shape == (2, 24, 192) and y.dtype == torch.float32
    assert sqnr(ref, y) > 40.0  # same codes; only _scaled_mm's bf16 output rounding differs
    assert sqnr(full, y) > 25.0  # e4m3 keeps 3 mantissa bits: measured 30 dB here


def test_strided_input_reaches_the_gemm_row_major(monkeypatch):
    # a channels-first activation seen as [1, T, K] (one batch row, as in the sampler's unguided steps) reshapes to a
    # column-major [T, K] view; cuBLASLt's FP8 GEMM refuses it ("Only multiplication of row-major and column-major
    # matrices"), seen on an H100 in generation
    lin, _ = _layer_and_input(4)
    q = Float8Linear.from_float(lin)
    x = torch.randn(1, 256, 24).transpose(1, 2)  # [1, 24, 256], strides (., 1, 24)
    seen = []
    real = torch._scaled_mm

    def spy(a, b, **kw):
        seen.append(a.is_contiguous())
        return real(a, b, **kw)

    monkeypatch.setattr(torch, "_scaled_mm", spy)
    with torch.no_grad():
        y = q(x)
    assert seen == [True]
    assert torch.equal(y, q(x.contiguous()))


def test_autocast_output_dtype_and_empty_input():
    lin, x = _layer_and_input(1)
    q = Float8Linear.from_float(lin)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert q(x).dtype == torch.bfloat16
        assert q(x[:, :0]).shape == (2, 0, 192)


def test_quantize_save_load_roundtrip(tmp_path):
    lin, x = _layer_and_input(2)
    model = nn.Sequential(lin)
    quantize_(model, Float8DynamicConfig())
    assert isinstance(model[0], Float8Linear)
    path = save_quantized(model, tmp_path / "fp8.safetensors")
    fresh = load_quantized(nn.Sequential(nn.Linear(256, 192)), path)
    assert torch.equal(fresh[0].qweight.view(torch.uint8), model[0].qweight.view(torch.uint8))
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    assert isinstance(config_from_dict(Float8DynamicConfig().to_dict()), Float8DynamicConfig)


@pytest.mark.gpu
def test_cuda_scaled_mm_matches_cpu_reference():
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("needs a CUDA device with FP8 tensor cores (sm_89+)")
    lin, x = _layer_and_input(3)
    q = Float8Linear.from_float(lin)
    with torch.no_grad():
        ref = q.reference_forward(x)
        y = q.cuda()(x.cuda()).cpu()
    assert sqnr(ref, y) > 40.0


@pytest.mark.gpu
def test_cuda_widths_fp8_gemms_cannot_take_fall_back_to_the_reference():
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("needs a CUDA device with FP8 tensor cores (sm_89+)")
    lin = nn.Linear(100, 24)  # neither width a multiple of 16
    q = Float8Linear.from_float(lin)
    x = torch.randn(5, 100)
    with torch.no_grad():
        assert sqnr(q.reference_forward(x), q.cuda()(x.cuda()).cpu()) > 60.0


@pytest.mark.gpu
@pytest.mark.parametrize("triton_on", [False, True])
def test_cuda_column_major_one_row_batch(triton_on):
    # the layout that made cuBLASLt refuse the eager path in generation on an H100 (one-row batch, channels first)
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("needs a CUDA device with FP8 tensor cores (sm_89+)")
    from accelerando.quant.triton_kernels import use_triton_kernels

    lin, _ = _layer_and_input(5)
    q = Float8Linear.from_float(lin)
    x = torch.randn(1, 256, 24).transpose(1, 2)  # [1, 24, 256], column-major rows
    with torch.no_grad(), use_triton_kernels(triton_on):
        ref = q.reference_forward(x)
        y = q.cuda()(x.cuda()).cpu()
    assert sqnr(ref, y) > 40.0
