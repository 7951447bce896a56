"""Triton kernels of the quantized linears against the pure-torch reference.

On CPU these run through Triton's interpreter (``TRITON_INTERPRET=1``, set by ``tests/conftest.py``): the same kernel
source the GPU compiles, so indexing, masking, 4-bit unpacking, group scales and the fused low-rank branch are all
checked here. The ``gpu`` tests repeat the comparisons with the compiled kernels on CUDA.
"""

import copy

import pytest
import torch
from triton_device import triton_device

from accelerando.quant import QuantLinear, SVDQuantLinear, use_group_folding
from accelerando.quant import triton_kernels as tk
from accelerando.quant.primitives import quantize_per_token
from accelerando.testing.sqnr import sqnr

pytestmark = pytest.mark.skipif(not tk.available(), reason="triton not installed")


def _cpu_reference(layer, x: torch.Tensor) -> torch.Tensor:
    """The layer's pure-torch reference on CPU (int32 matmuls have no CUDA kernel), with exact grouped math: the
    Triton GEMM applies each group's scale in its loop rather than folding them."""
    with use_group_folding(False):
        return copy.deepcopy(layer).cpu().reference_forward(x.cpu())


@pytest.mark.parametrize("gpu", [False, pytest.param(True, marks=pytest.mark.gpu)])
@pytest.mark.parametrize("bits,full_range", [(8, False), (8, True), (4, False)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quantize_rows_equals_reference(gpu, bits, full_range, dtype):
    dev = triton_device(gpu)
    g = torch.Generator().manual_seed(bits + full_range)
    x = (torch.randn(300, 80, generator=g) * 4).to(dtype)  # neither dim a multiple of the tile
    x[3] = 0.0  # an all-zero row takes the eps scale
    q, scale, lx = tk.quantize_rows(x.to(dev), bits, full_range)
    q_ref, s_ref = quantize_per_token(x, full_range, bits)
    assert lx is None
    assert torch.equal(scale.cpu(), s_ref)
    assert torch.equal(q.cpu(), q_ref)


def test_transposed_activations_are_accepted():
    triton_device(False)
    layer = QuantLinear.from_float(torch.nn.Linear(64, 32), 8, 8)
    x = torch.randn(1, 64, 10).transpose(1, 2)  # [1, 10, 64], not row-major
    torch.testing.assert_close(tk.a8_linear(layer, x.reshape(-1, 64), torch.float32), layer.reference_forward(x)[0])


@pytest.mark.parametrize("gpu", [False, pytest.param(True, marks=pytest.mark.gpu)])
def test_fp8_quantize_rows_equals_reference(gpu):
    from accelerando.quant.fp8 import fp8_rows

    dev = triton_device(gpu)
    g = torch.Generator().manual_seed(8)
    x = torch.randn(37, 80, generator=g) * torch.logspace(-6, 3, 80)  # wide range: e4m3 subnormals, ties, -0
    x[2] = 0.0
    q, scale, _ = tk.quantize_rows(x.to(dev), fp8=True)
    q_ref, s_ref = fp8_rows(x)
    assert q.dtype == torch.float8_e4m3fn
    assert torch.equal(scale.cpu(), s_ref)
    assert torch.equal(q.cpu().view(torch.uint8), q_ref.view(torch.uint8))


@pytest.mark.parametrize("gpu", [False, pytest.param(True, marks=pytest.mark.gpu)])
@pytest.mark.parametrize(
    "w_bits,group_size,bias,k",
    [(8, None, True, 128), (4, None, False, 128), (4, 32, True, 128), (8, 64, True, 128), (4, None, True, 96)],
)
def test_a8_linear_matches_reference(gpu, w_bits, group_size, bias, k):
    dev = triton_device(gpu)
    torch.manual_seed(w_bits + (group_size or 0))
    lin = torch.nn.Linear(k, 72, bias=bias)
    layer = QuantLinear.from_float(lin, w_bits, 8, group_size).to(dev)
    x = torch.randn(45, k, device=dev) * 2
    y = tk.a8_linear(layer, x, torch.float32).cpu()
    ref = _cpu_reference(layer, x)
    assert y.shape == ref.shape == (45, 72)
    # the integer work is exact; only the float epilogue's order differs (per-channel: none at all)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gpu", [False, pytest.param(True, marks=pytest.mark.gpu)])
@pytest.mark.parametrize("rank,group_size", [(32, None), (20, 32), (0, None)])
def test_svd_linear_meets_sqnr_floor(gpu, rank, group_size):
    dev = triton_device(gpu)
    torch.manual_seed(rank)
    x = torch.randn(64, 96) * 2
    x[:, 7] *= 40  # an outlier channel, the case SVDQuant exists for
    lin = torch.nn.Linear(96, 80)
    layer = SVDQuantLinear.from_float(lin, x.abs().amax(0), 0.5, 4, 8, group_size, rank).to(dev)
    x = x.to(dev)
    y = tk.svd_linear(layer, x, torch.float32).cpu()
    ref = _cpu_reference(layer, x)
    with torch.no_grad():
        full = lin(x.cpu())
    # bf16 operands in the low-rank branch (as nunchaku's kernels, and the eager path under bf16 autocast)
    assert sqnr(ref, y) > 38.0
    # and the kernel's error against the float layer is within 1 dB of the reference's
    assert sqnr(full, y) > sqnr(full, ref) - 1.0


def test_bf16_output_and_rank_padding():
    triton_device(False)
    torch.manual_seed(1)
    x = torch.randn(33, 64).bfloat16()
    layer = SVDQuantLinear.from_float(torch.nn.Linear(64, 48), x.float().abs().amax(0), 0.5, 4, 8, None, 12)
    y = tk.svd_linear(layer, x, torch.bfloat16)
    assert y.dtype == torch.bfloat16
    assert sqnr(layer.reference_forward(x), y) > 35.0


def test_cpu_forward_never_dispatches_to_triton(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("Triton path taken on CPU")

    monkeypatch.setattr(tk, "a8_linear", boom)
    monkeypatch.setattr(tk, "svd_linear", boom)
    layer = QuantLinear.from_float(torch.nn.Linear(32, 16), 4, 8)
    assert not tk.applies(torch.randn(4, 32))
    layer(torch.randn(4, 32))


def test_errors_name_the_problem(monkeypatch):
    triton_device(False)
    q = torch.zeros(4, 32, dtype=torch.int8)
    with pytest.raises(ValueError, match="do not match 4-bit"):
        tk.int8_gemm(
            q, torch.ones(4, 1), torch.zeros(8, 32, dtype=torch.uint8), torch.ones(8, 1), None, 4, None, torch.float32
        )
    with pytest.raises(ValueError, match="row-major 2-D"):
        tk.quantize_rows(torch.randn(32, 4).t())
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="CUDA tensors"):
        tk.quantize_rows(torch.randn(4, 32))


def test_supports_only_groups_a_block_can_cover_and_32_bit_offsets():
    assert not tk.supports(QuantLinear(64, 8), rows=2**31 // 64)
    assert tk.supports(QuantLinear(64, 8, group_size=None))
    assert tk.supports(QuantLinear(64, 8, group_size=32))
    assert not tk.supports(QuantLinear(48, 8, group_size=24))
    assert not tk.supports(QuantLinear(64, 8, group_size=16))
