"""int8 GEMMs on CPUs without VNNI: the float32 GEMM of the codes gives the int32 reference's result, the choice
follows the CPU and ACCELERANDO_QUANT_INT_MM, and quantized layers give the same output either way."""

import pytest
import torch
from torch import nn

from accelerando.errors import UserError
from accelerando.quant import RTNConfig, quantize_
from accelerando.quant import primitives as prim
from accelerando.quant.linear import QuantLinear


def test_float_gemm_of_codes_equals_the_int32_reference():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (37, 1000), generator=g, dtype=torch.int8)
    b = torch.randint(-128, 128, (1000, 29), generator=g, dtype=torch.int8)
    assert torch.equal(prim.int8_mm_float(a, b), prim.int8_mm_reference(a, b))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast must not round the float32 sums to bf16
        assert torch.equal(prim.int8_mm_float(a, b), prim.int8_mm_reference(a, b))
    worst = torch.full((3, 1023), -128, dtype=torch.int8)  # every product at full scale: 1023 * 2^14 < 2^24
    out = prim.int8_mm_float(worst, worst.t())
    assert out.dtype == torch.int32 and torch.equal(out, prim.int8_mm_reference(worst, worst.t()))


def test_the_choice_follows_the_cpu_and_the_override(monkeypatch):
    monkeypatch.delenv(prim.INT_MM_ENV, raising=False)
    monkeypatch.setattr(prim, "_cpu_has_vnni", lambda: False)
    assert not prim.int_mm_native("cpu")
    monkeypatch.setattr(prim, "_cpu_has_vnni", lambda: True)
    assert prim.int_mm_native("cpu")
    monkeypatch.setenv(prim.INT_MM_ENV, "float")
    assert not prim.int_mm_native("cpu") and prim.int_mm_native("cuda")
    monkeypatch.setenv(prim.INT_MM_ENV, "native")
    monkeypatch.setattr(prim, "_cpu_has_vnni", lambda: False)
    assert prim.int_mm_native("cpu")
    monkeypatch.setenv(prim.INT_MM_ENV, "fast")
    with pytest.raises(UserError, match="ACCELERANDO_QUANT_INT_MM='fast'; use native, float or auto"):
        prim.int_mm_native("cpu")


@pytest.mark.parametrize("act_scale", ["token", "tensor"])
@pytest.mark.parametrize("w_bits,group", [(8, None), (4, 32)])
def test_quantized_layers_give_the_same_output_on_both_paths(monkeypatch, act_scale, w_bits, group):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(96, 64), nn.SiLU(), nn.Linear(64, 48))
    quantize_(model, RTNConfig(w_bits, 8, group, act_scale=act_scale))
    assert isinstance(model[0], QuantLinear)
    x = torch.randn(2, 10, 96)
    outs = {}
    for mode in ("native", "float"):
        monkeypatch.setenv(prim.INT_MM_ENV, mode)
        with torch.no_grad():
            outs[mode] = model(x)
    torch.testing.assert_close(outs["float"], outs["native"], rtol=0, atol=0)
