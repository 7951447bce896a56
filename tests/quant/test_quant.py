"""Quantization: SQNR floors against float (never exact equality), kernel == reference, API, configs, save/load."""

import pytest
import torch
from torch import nn

from accelerando.quant import (
    Int8DynamicConfig,
    QuantLinear,
    RTNConfig,
    config_from_dict,
    load_quantized,
    quantize_,
    quantized_layers,
    use_group_folding,
)
from accelerando.quant.primitives import (
    dequantize_weight,
    fold_group_scales,
    int8_mm,
    int8_mm_reference,
    pack_int4,
    quantize_weight,
    unpack_int4,
)
from accelerando.testing.sqnr import sqnr

# floors measured on this data (nn.Linear(256, 384) init, x ~ N(0, 1)): w8a8 42 dB, w4a8 g32 23 dB, w8a16 48 dB
FLOORS = [
    ("w8a8", RTNConfig(8, 8), 35.0),
    ("w4a8-g32", RTNConfig(4, 8, 32), 18.0),
    ("w4a8", RTNConfig(4, 8), 17.0),
    ("w8a16", RTNConfig(8, 16), 42.0),
    ("w4a16-g32", RTNConfig(4, 16, 32), 18.0),
    ("int8-dynamic", Int8DynamicConfig(), 35.0),
]


def _linear_and_input(seed: int = 0, k: int = 256, n: int = 384, m: int = 96):
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(k, n)
    with torch.no_grad():
        lin.weight.copy_((torch.rand(n, k, generator=g) * 2 - 1) / k**0.5)
        lin.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return lin, torch.randn(2, m // 2, k, generator=g)


def _quantized(lin: nn.Linear, cfg) -> QuantLinear:
    model = nn.Sequential(nn.Linear(lin.in_features, lin.out_features))
    model[0].load_state_dict(lin.state_dict())
    return quantize_(model, cfg)[0]


@pytest.mark.parametrize("name,cfg,floor", FLOORS, ids=[f[0] for f in FLOORS])
def test_linear_sqnr_floor(name, cfg, floor):
    lin, x = _linear_and_input()
    q = _quantized(lin, cfg)
    with torch.no_grad():
        assert sqnr(lin(x), q(x)) >= floor


@pytest.mark.parametrize("cfg", [RTNConfig(8, 8), RTNConfig(4, 8, 32), RTNConfig(4, 8), Int8DynamicConfig()])
def test_int_mm_accumulators_match_reference_bit_exactly(cfg):
    lin, x = _linear_and_input(seed=1)
    q = _quantized(lin, cfg)
    x2 = x.reshape(-1, lin.in_features)
    acc, sa = q.int_accumulate(x2, int8_mm)
    ref_acc, ref_sa = q.int_accumulate(x2, int8_mm_reference)
    assert acc.dtype == torch.int32 and torch.equal(acc, ref_acc) and torch.equal(sa, ref_sa)
    with torch.no_grad():
        assert sqnr(q.reference_forward(x), q(x)) > 100  # same integers, same float epilogue


def test_folded_group_scales_stay_close_to_the_exact_grouped_weight():
    g = torch.Generator().manual_seed(4)
    w = torch.randn(64, 256, generator=g) * torch.rand(64, 256 // 32, 1, generator=g).repeat_interleave(32, 2).view(
        64, 256
    )  # groups of very different ranges
    w[5] = 0  # an all-zero row
    q, scale = quantize_weight(w, 4, 32)
    q8, c = fold_group_scales(q, scale)
    assert q8.dtype == torch.int8 and c.shape == (64, 1) and int(q8.abs().max()) <= 128
    exact = dequantize_weight(q, scale)
    folded = q8.float() * c
    assert sqnr(exact, folded) > 35 and sqnr(w, folded) > sqnr(w, exact) - 0.2  # far below the 4-bit error
    coarsest = scale.argmax(dim=1)  # that group's codes are exact: 16 times the 4-bit code
    for row in (0, 9, 63):
        cols = slice(int(coarsest[row]) * 32, int(coarsest[row]) * 32 + 32)
        assert torch.equal(q8[row, cols].int(), 16 * q[row, cols].int())
    assert torch.isfinite(c).all() and (q8[5] == 0).all()


def test_grouped_w4a8_runs_one_folded_gemm_close_to_the_exact_groups():
    lin, x = _linear_and_input(seed=2)
    q = _quantized(lin, RTNConfig(4, 8, 32))
    x2 = x.reshape(-1, lin.in_features)
    assert q.gemm_weight()[2] is None and q.int_accumulate(x2)[0].shape[0] == 1  # one GEMM
    with torch.no_grad():
        folded = q(x)
        with use_group_folding(False):
            assert q.gemm_weight()[2] == 32 and q.int_accumulate(x2)[0].shape[0] == 256 // 32
            exact = q(x)
        assert sqnr(exact, folded) > 35 and sqnr(lin(x), folded) > sqnr(lin(x), exact) - 0.2
    q8 = _quantized(lin, RTNConfig(8, 8, 32))
    assert q8.gemm_weight()[2] == 32  # 8-bit groups are never folded (16x would overflow int8)


@pytest.mark.parametrize("m,k,n", [(1, 8, 8), (17, 24, 40), (33, 12, 20)])
def test_int8_mm_odd_shapes(m, k, n):
    a = torch.randint(-128, 128, (m, k), dtype=torch.int8)
    b = torch.randint(-128, 128, (n, k), dtype=torch.int8).t()  # transposed view, as QuantLinear passes it
    assert torch.equal(int8_mm(a, b), int8_mm_reference(a, b))


def test_int4_pack_unpack_round_trip():
    q = torch.arange(-8, 8, dtype=torch.int8).repeat(3, 4)  # [3, 64]: every code in every nibble position
    q = q[:, torch.randperm(q.shape[1], generator=torch.Generator().manual_seed(0))]
    p = pack_int4(q)
    assert p.dtype == torch.uint8 and p.shape == (3, 32)
    assert torch.equal(unpack_int4(p), q)
    with pytest.raises(ValueError, match="-8, 7"):
        pack_int4(torch.tensor([[8, 0]], dtype=torch.int8))


def test_weight_bytes_shrink():
    lin, _ = _linear_and_input()
    q8, q4 = _quantized(lin, RTNConfig(8, 8)), _quantized(lin, RTNConfig(4, 8, 32))
    assert q8.qweight.dtype == torch.int8 and q8.qweight.shape == (384, 256)
    assert q4.qweight.dtype == torch.uint8 and q4.qweight.shape == (384, 128) and q4.weight_scale.shape == (384, 8)


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(32, 64)
        self.b = nn.Sequential(nn.Linear(64, 32), nn.GELU(), nn.Linear(32, 8))  # b.2: out 8 < 16, skipped
        self.conv = nn.Conv1d(32, 32, 1)

    def forward(self, x):
        return self.b(self.a(x))


def test_quantize_replaces_exactly_the_filtered_layers():
    model = quantize_(_Toy(), RTNConfig())
    assert set(quantized_layers(model)) == {"a", "b.0"}
    assert isinstance(model.a, QuantLinear) and type(model.b[2]) is nn.Linear and type(model.conv) is nn.Conv1d


def test_quantize_honours_filter_fn_and_overrides():
    model = quantize_(_Toy(), RTNConfig(), filter_fn=lambda m, name: isinstance(m, nn.Linear) and name != "a")
    assert set(quantized_layers(model)) == {"b.0", "b.2"}
    w4 = RTNConfig(4, 8, 16)
    model = quantize_(_Toy(), RTNConfig(), overrides={"b.0": w4, "a": None})
    layers = quantized_layers(model)
    assert set(layers) == {"b.0"} and layers["b.0"] == w4 and model.b[0].w_bits == 4
    with pytest.raises(ValueError, match="nope"):
        quantize_(_Toy(), RTNConfig(), overrides={"nope": w4})
    with pytest.raises(TypeError, match="Conv1d"):
        quantize_(_Toy(), None, overrides={"conv": w4})
    with pytest.raises(TypeError, match="no quantize_ handler"):
        quantize_(_Toy(), object())


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"w_bits": 3}, "w_bits=3"),
        ({"a_bits": 4}, "a_bits=4"),
        ({"group_size": 0}, "group_size=0"),
        ({"group_size": 33, "w_bits": 4}, "group_size=33"),
    ],
)
def test_config_rejects_bad_values(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        RTNConfig(**kwargs)


def test_config_round_trip_and_versioning():
    cfg = RTNConfig(4, 8, 32)
    d = cfg.to_dict()
    assert d["_type"] == "RTNConfig" and d["_version"] == 1 and config_from_dict(d) == cfg
    assert config_from_dict(Int8DynamicConfig().to_dict()) == Int8DynamicConfig()
    with pytest.raises(ValueError, match="_version=99"):
        config_from_dict({**d, "_version": 99})
    with pytest.raises(ValueError, match="bogus"):
        config_from_dict({**d, "_data": {"bogus": 1}})
    with pytest.raises(ValueError, match="layer '0'.*group_size=32"):
        _quantized(nn.Linear(48, 32), RTNConfig(8, 8, 32))  # 32 does not divide 48


def test_save_load_round_trip_is_exact(tmp_path):
    from accelerando.quant import save_quantized

    torch.manual_seed(0)
    model = quantize_(_Toy(), RTNConfig(), overrides={"b.0": RTNConfig(4, 8, 16), "b.2": RTNConfig(8, 16)})
    x = torch.randn(5, 32)
    path = save_quantized(model, tmp_path / "toy.safetensors")
    fresh = _Toy()  # different random float weights: everything must come from the file
    load_quantized(fresh, path)
    assert quantized_layers(fresh) == quantized_layers(model)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_group_scales_are_float16_and_exact_and_old_float32_files_still_load(tmp_path):
    from accelerando.quant import save_quantized

    lin, x = _linear_and_input()
    q4, q8 = _quantized(lin, RTNConfig(4, 8, 32)), _quantized(lin, RTNConfig(8, 8))
    assert q4.weight_scale.dtype == torch.float16 and q8.weight_scale.dtype == torch.float32
    # the codes were rounded against the stored scale: the float16 dequantized weight is as close as float32's was
    s16 = q4.weight_scale.float().repeat_interleave(32, dim=1)  # [N, K]
    assert torch.equal(q4.int_weight(), torch.round(lin.weight / s16).clamp(-7, 7).to(torch.int8))
    assert sqnr(lin.weight, q4.dequantize()) > 19
    huge = quantize_weight(torch.full((2, 32), 1e6), 4, 16)[1]  # beyond float16: clamped to its largest finite
    tiny = quantize_weight(torch.zeros(2, 32), 4, 16)[1]  # all zero: its smallest subnormal, never 0
    assert torch.isfinite(huge).all() and float(huge.max()) == 65504.0 and float(tiny.min()) > 0
    torch.manual_seed(0)
    model = quantize_(_Toy(), RTNConfig(4, 8, 16))
    for name in ("a", "b.0"):  # a file written before float16 group scales
        layer = model.get_submodule(name)
        layer.weight_scale = layer.weight_scale.float()
    path = save_quantized(model, tmp_path / "old.safetensors")
    fresh = load_quantized(_Toy(), path)
    assert fresh.a.weight_scale.dtype == torch.float32
    with torch.no_grad():
        x = torch.randn(5, 32)
        assert torch.equal(fresh(x), model(x))


def test_tiny_codec_decodes_after_quantize():
    from accelerando.testing.models import tiny_codec

    codec = tiny_codec()
    latent = torch.randn(1, codec.latent_dim, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = codec.decode(latent)
        for cfg, floor in [(RTNConfig(8, 8), 25.0), (RTNConfig(8, 16), 30.0), (RTNConfig(4, 8, 8), 8.0)]:
            q = quantize_(tiny_codec(), cfg)
            assert len(quantized_layers(q)) > 0
            assert sqnr(ref, q.decode(latent)) >= floor, cfg


def test_tiny_dit_runs_after_quantize():
    from accelerando.models.dit import DiTConditioning, MusicDiT, MusicDiTConfig

    cfg = MusicDiTConfig.tiny()

    def build():
        torch.manual_seed(0)
        model = MusicDiT(cfg)
        for p in model.parameters():  # adaLN-zero starts as the identity; make the output non-trivial
            p.data.add_(0.05 * torch.randn_like(p))
        return model.eval()

    g = torch.Generator().manual_seed(1)
    b, t = 2, 16
    cond = DiTConditioning(
        text_tokens=torch.randn(b, 3, cfg.text_dim, generator=g),
        text_mask=torch.ones(b, 3, dtype=torch.bool),
        text_pooled=torch.randn(b, cfg.text_dim, generator=g),
        control=torch.randn(b, cfg.width, generator=g),
        phases=torch.rand(b, t, cfg.phase_features, generator=g),
    )
    x, tt = torch.randn(b, t, cfg.latent_dim, generator=g), torch.rand(b, generator=g)
    with torch.no_grad():
        ref = build()(x, tt, cond)
        for qcfg, floor in [(RTNConfig(8, 8), 25.0), (Int8DynamicConfig(), 25.0), (RTNConfig(4, 8, 16), 8.0)]:
            # in_proj has in_features 42, which no group of 16 divides: a per-layer override keeps it per-channel
            out = quantize_(build(), qcfg, overrides={"in_proj": RTNConfig(8, 8)})(x, tt, cond)
            assert out.shape == ref.shape and sqnr(ref, out) >= floor, qcfg
