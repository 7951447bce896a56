"""Fused (torch.compile) A8 path: bit-identical to the eager path, reference SQNR, varying M, switch, fallback."""

import warnings

import pytest
import torch
from torch import nn

from accelerando.quant import (
    QuantLinear,
    SVDQuantLinear,
    fused_kernels_enabled,
    use_fused_kernels,
    use_group_folding,
)
from accelerando.quant import fused as fused_mod
from accelerando.quant.primitives import INT_MM_ENV
from accelerando.testing.sqnr import sqnr

K, N = 64, 96


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch):
    # the fused path calls torch._int_mm; on a CPU without VNNI it steps aside unless told otherwise (slow, exact)
    monkeypatch.setenv(INT_MM_ENV, "native")
    saved = dict(fused_mod._state)
    fused_mod._state.update(enabled=False, broken=None)
    yield
    fused_mod._state.clear()
    fused_mod._state.update(saved)


@pytest.fixture(scope="module")
def compiles():
    """Skip the module's compiled-path tests where torch.compile cannot build a CPU kernel here."""
    try:
        torch.compile(lambda a: a * 2 + 1, dynamic=False)(torch.ones(4))
    except Exception as err:  # noqa: BLE001 -- no C++ compiler / unsupported platform
        pytest.skip(f"torch.compile unavailable: {err}")


def _linear(seed: int = 0) -> nn.Linear:
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(K, N)
    with torch.no_grad():
        lin.weight.copy_((torch.rand(N, K, generator=g) * 2 - 1) / K**0.5)
        lin.bias.copy_(torch.randn(N, generator=g) * 0.1)
    return lin


def _x(m: int, seed: int = 1, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(2, m, K, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _both(layer, x, autocast=False, **opts):
    """(eager output, fused output, whether the fused call compiled/ran a graph)."""
    before = len(fused_mod._stats["first_call_seconds"])
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        eager = layer(x)
        with use_fused_kernels(True, **opts):
            fused = layer(x)
    assert fused_mod._state["broken"] is None, fused_mod._state["broken"]
    return eager, fused, len(fused_mod._stats["first_call_seconds"]) > before


QUANT_CASES = [
    ("w8a8", dict(w_bits=8, a_bits=8)),
    ("w4a8", dict(w_bits=4, a_bits=8)),
    ("w4a8-g32", dict(w_bits=4, a_bits=8, group_size=32)),
    ("w8a8-full", dict(w_bits=8, a_bits=8, full_range=True)),  # the int8-dynamic (torchao) layout
    ("w4a4", dict(w_bits=4, a_bits=4)),
]


@pytest.mark.parametrize("name,kw", QUANT_CASES, ids=[c[0] for c in QUANT_CASES])
def test_fused_quantlinear_bit_identical_to_eager(compiles, name, kw):
    q = QuantLinear.from_float(_linear(), **kw)
    x = _x(24)
    eager, fused, ran = _both(q, x)
    assert ran, "the fused path did not run"
    assert fused.dtype == eager.dtype and fused.shape == eager.shape
    assert torch.equal(fused, eager)
    with torch.no_grad():
        assert sqnr(q.reference_forward(x), fused) > 100  # the pure-torch int32 reference


@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("cache", [False, True])
def test_fused_grouped_layers_follow_the_folding_switch(compiles, fold, cache):
    q = QuantLinear.from_float(_linear(8), 4, 8, group_size=32)
    act = torch.rand(K, generator=torch.Generator().manual_seed(9)) * 4 + 0.1
    s = SVDQuantLinear.from_float(_linear(9), act, 0.5, 4, 8, 32, 8)
    with use_group_folding(fold):
        for layer in (q, s):
            eager, fused, _ = _both(layer, _x(24), cache_int4=cache)
            assert fused_mod._state["broken"] is None and torch.equal(fused, eager)
            eager, fused, _ = _both(layer, _x(24), cache_int4=cache)  # the cached copy serves a second call
            assert torch.equal(fused, eager)


def test_fused_under_autocast_and_bf16_input(compiles):
    q = QuantLinear.from_float(_linear(2), 8, 8)
    eager, fused, _ = _both(q, _x(24), autocast=True)
    assert fused.dtype == torch.bfloat16 and torch.equal(fused, eager)
    eager, fused, _ = _both(q, _x(24, dtype=torch.bfloat16))
    assert fused.dtype == torch.bfloat16 and torch.equal(fused, eager)


@pytest.mark.parametrize("rank,autocast", [(8, False), (8, True), (0, False)])
def test_fused_svdquant_bit_identical(compiles, rank, autocast):
    act = torch.rand(K, generator=torch.Generator().manual_seed(3)) * 4 + 0.1
    s = SVDQuantLinear.from_float(_linear(4), act, 0.5, 4, 8, None, rank)
    x = _x(24, seed=5)
    eager, fused, ran = _both(s, x, autocast=autocast)
    assert ran and torch.equal(fused, eager)
    with torch.no_grad():
        ref = s.reference_forward(x)
    assert sqnr(ref.float(), fused.float()) > (40 if autocast else 100)


def test_fused_dynamic_m_compiles_once_per_signature(compiles):
    q = QuantLinear.from_float(_linear(6), 8, 8)
    _both(q, _x(11))
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    for m in (13, 29):  # new clip lengths: no new graph
        eager, fused, _ = _both(q, _x(m))
        assert torch.equal(fused, eager)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs


def test_fused_int4_cache_matches_and_follows_weight_updates(compiles):
    q = QuantLinear.from_float(_linear(7), 4, 8)
    x = _x(24)
    eager, fused, _ = _both(q, x, cache_int4=True)
    assert torch.equal(fused, eager)
    q2 = QuantLinear.from_float(_linear(8), 4, 8)
    q.qweight.copy_(q2.qweight)  # in place: the cached int8 copy must be rebuilt
    q.weight_scale.copy_(q2.weight_scale)
    q.bias.copy_(q2.bias)
    eager, fused, _ = _both(q, x, cache_int4=True)
    assert torch.equal(fused, eager) and torch.equal(eager, _both(q2, x)[0])


def test_switch_is_scoped_and_off_by_default():
    assert not fused_kernels_enabled()
    with use_fused_kernels(True):
        assert fused_kernels_enabled()
        with use_fused_kernels(False):
            assert not fused_kernels_enabled()
        assert fused_kernels_enabled()
    assert not fused_kernels_enabled()
    use_fused_kernels(True)  # plain call: stays on
    assert fused_kernels_enabled()
    with pytest.raises(ValueError, match="shapes"):
        use_fused_kernels(True, shapes="sometimes")


def test_grad_inputs_stay_eager():
    q = QuantLinear.from_float(_linear(9), 8, 8)
    x = _x(8).requires_grad_(True)
    with use_fused_kernels(True):
        assert not fused_mod.applies(x.reshape(-1, K))
        with torch.no_grad():
            assert fused_mod.applies(x.reshape(-1, K))
    assert q(x).shape == (2, 8, N)


def test_compile_failure_warns_once_and_falls_back(monkeypatch):
    def broken_compile(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("no C++ compiler found")

        return run

    monkeypatch.setattr(fused_mod, "_compiled", {})
    monkeypatch.setattr(torch, "compile", broken_compile)
    q = QuantLinear.from_float(_linear(10), 8, 8)
    x = _x(8)
    with torch.no_grad():
        eager = q(x)
        with use_fused_kernels(True):
            with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
                first = q(x)
            assert not fused_kernels_enabled()
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                second = q(x)  # no second warning
    assert torch.equal(first, eager) and torch.equal(second, eager)


def test_fused_path_steps_aside_where_int_mm_is_slow(monkeypatch):
    """On a CPU without VNNI (forced here) the eager path's float32 GEMM of the codes runs instead."""
    monkeypatch.setenv(INT_MM_ENV, "float")
    fused_mod._state.update(enabled=True)
    assert not fused_mod.applies(torch.randn(4, K))
