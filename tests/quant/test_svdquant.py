"""SmoothQuant / SVDQuant: SQNR ordering on outlier data (floors with measured margins), rank 0 == SmoothQuant,
save/load bit-exactness, config validation, calibration API, low-rank reconstruction."""

import json

import pytest
import torch
from torch import nn

from accelerando.quant import (
    RTNConfig,
    SmoothQuantConfig,
    SVDQuantConfig,
    SVDQuantLinear,
    calibrate_,
    config_from_dict,
    load_quantized,
    quantize_,
    save_quantized,
)
from accelerando.quant.svd import lowrank_split, smoothing_factors
from accelerando.testing.sqnr import sqnr

K, N = 256, 384
OUTLIER_CHANNELS = [10, 60, 130, 250]  # activation channels 50x larger
BIG_COLUMNS = [3, 77, 150, 201]  # weight columns 8x larger


def _outlier_linear(seed: int = 0) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    """(layer, calibration activations [256, K], held-out test activations [2, 128, K])."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(K, N)
    with torch.no_grad():
        w = (torch.rand(N, K, generator=g) * 2 - 1) / K**0.5
        w[:, BIG_COLUMNS] *= 8
        lin.weight.copy_(w)
        lin.bias.copy_(torch.randn(N, generator=g) * 0.1)

    def acts(*shape):
        x = torch.randn(*shape, K, generator=g)
        x[..., OUTLIER_CHANNELS] *= 50
        return x

    return lin, acts(256), acts(2, 128)


def _calibrated(lin: nn.Linear, cfg, calib: torch.Tensor) -> nn.Module:
    model = nn.Sequential(nn.Linear(K, N))
    model[0].load_state_dict(lin.state_dict())
    return calibrate_(model, cfg, [calib])[0]


def test_sqnr_ordering_svd_over_smooth_over_rtn():
    # measured (seed 0): RTN W4A8 6.7 dB, SmoothQuant W4A8 21.7 dB, SVDQuant W4A8 rank 32 (mse) 36.4 dB
    lin, calib, x = _outlier_linear()
    with torch.no_grad():
        ref = lin(x)
        rtn = sqnr(ref, _calibrated(lin, RTNConfig(4, 8), calib)(x))
        smooth = sqnr(ref, _calibrated(lin, SmoothQuantConfig(4, 8), calib)(x))
        svd = sqnr(ref, _calibrated(lin, SVDQuantConfig(4, 8, rank=32), calib)(x))
    assert smooth >= rtn + 10.0, (rtn, smooth)
    assert svd >= smooth + 8.0, (smooth, svd)
    assert svd >= 30.0


def test_rank0_svdquant_equals_smoothquant():
    lin, calib, x = _outlier_linear(seed=1)
    sq = _calibrated(lin, SmoothQuantConfig(4, 8, alpha=0.5), calib)
    sv = _calibrated(lin, SVDQuantConfig(4, 8, rank=0, smooth_alpha=0.5, calibration=None), calib)
    with torch.no_grad():
        torch.testing.assert_close(sv(x), sq(x), rtol=1e-6, atol=1e-6)


def test_mse_calibration_picks_alpha_from_grid_and_is_no_worse_than_fixed():
    lin, calib, x = _outlier_linear(seed=2)
    mse = _calibrated(lin, SVDQuantConfig(4, 8, rank=16), calib)
    assert min(abs(float(mse.alpha) - a) for a in (0.3, 0.5, 0.7)) < 1e-6
    fixed = _calibrated(lin, SVDQuantConfig(4, 8, rank=16, calibration=None), calib)
    with torch.no_grad():
        ref = lin(calib)
        assert (mse(calib) - ref).pow(2).mean() <= (fixed(calib) - ref).pow(2).mean() * (1 + 1e-6)


def test_clip_search_picks_alpha_and_clipping_by_mse_and_records_the_clip(tmp_path):
    lin, calib, x = _outlier_linear(seed=3)
    with torch.no_grad():
        lin.weight[5, 9] = 4 * lin.weight.abs().max()  # one weight far out: worth clipping
    plain = _calibrated(lin, SVDQuantConfig(4, 8, rank=4), calib)
    model = nn.Sequential(nn.Linear(K, N))
    model[0].load_state_dict(lin.state_dict())
    calibrate_(model, SVDQuantConfig(4, 8, rank=4, clip_search=True), [calib])
    searched = model[0]
    with torch.no_grad():
        ref = lin(calib)
        err = (searched(calib) - ref).pow(2).mean()
        assert err <= (plain(calib) - ref).pow(2).mean() * (1 + 1e-6)  # the plain choice is one of the candidates
    cfg = searched.quant_config
    assert cfg.clip_search and cfg.w_clip in (0.9, 0.8), cfg  # recorded per layer, with the alpha
    assert min(abs(float(searched.alpha) - a) for a in (0.3, 0.5, 0.7)) < 1e-6
    assert abs(cfg.smooth_alpha - float(searched.alpha)) < 1e-6
    path = save_quantized(model, tmp_path / "c.safetensors")
    fresh = nn.Sequential(nn.Linear(K, N))
    loaded = load_quantized(fresh, path)
    assert loaded[0].quant_config == cfg
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    with pytest.raises(ValueError, match="clip_search='yes'"):
        SVDQuantConfig(clip_search="yes")
    with pytest.raises(ValueError, match="clip_search=True needs calibration 'mse' or 'stft', not None"):
        SVDQuantConfig(calibration=None, clip_search=True)


@pytest.mark.parametrize(
    "cfg,floor",
    [(SVDQuantConfig(4, 4, rank=32), 25.0), (SVDQuantConfig(8, 8, rank=32, group_size=32), 35.0)],
    ids=["w4a4", "w8a8-g32"],
)
def test_other_bit_widths_and_kernel_matches_reference(cfg, floor):
    # measured: w4a4 rank 32 29.7 dB
    lin, calib, x = _outlier_linear(seed=3)
    q = _calibrated(lin, cfg, calib)
    with torch.no_grad():
        assert sqnr(lin(x), q(x)) >= floor
        assert sqnr(q.reference_forward(x), q(x)) >= 80.0


def test_lowrank_reconstruction_error_decreases_with_rank():
    lin, calib, _ = _outlier_linear()
    w = lin.weight.detach() * smoothing_factors(calib.abs().amax(0), lin.weight, 0.5)
    errs = [float(lowrank_split(w, r)[2].norm()) for r in (0, 4, 16, 64, 128)]
    assert all(b < a for a, b in zip(errs, errs[1:], strict=False)), errs
    assert errs[-1] < 0.6 * errs[0]


def test_row_weighted_lowrank_split_is_optimal_in_the_weighted_norm():
    """With row weights the branch minimises sum_n f_n ||w_n - L_n||² (Eckart-Young on diag(sqrt f) w): below the plain
    SVD's weighted error; uniform weights give the plain split."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(96, 160, generator=g)
    f = torch.rand(96, generator=g).pow(4) * 50 + 0.01  # a few rows matter far more
    plain, weighted = lowrank_split(w, 16), lowrank_split(w, 16, f)

    def cost(split):
        return float((f[:, None] * split[2].square()).sum())

    assert cost(weighted) < 0.9 * cost(plain), (cost(weighted), cost(plain))
    assert float(weighted[2].norm()) > float(plain[2].norm())  # paid for in the unweighted norm
    uniform = lowrank_split(w, 16, torch.full((96,), 3.0))
    # the same product up to the bf16 rounding of differently scaled factors
    assert float((uniform[2] - plain[2]).norm()) < 0.02 * float(plain[2].norm())


def test_dequantize_approximates_float_weight():
    lin, calib, _ = _outlier_linear()
    q = _calibrated(lin, SVDQuantConfig(8, 16, rank=32, calibration=None), calib)
    assert sqnr(lin.weight, q.dequantize()) >= 35.0


def test_save_load_round_trip_is_exact(tmp_path):
    lin, calib, x = _outlier_linear()
    model = nn.Sequential(nn.Linear(K, N), nn.GELU(), nn.Linear(N, K))
    model[0].load_state_dict(lin.state_dict())
    fresh_state = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = SVDQuantConfig(4, 8, rank=32, group_size=32)
    calibrate_(model, cfg, [calib, lambda m: m(x)], overrides={"2": SmoothQuantConfig(8, 8, alpha=0.7)})
    assert isinstance(model[0], SVDQuantLinear) and model[0].rank == 32 and model[2].rank == 0
    path = save_quantized(model, tmp_path / "q.safetensors")

    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        layers = json.loads(fh.metadata()["layers"])
    assert config_from_dict(layers["0"]) == cfg and layers["0"]["_version"] == 1
    assert config_from_dict(layers["2"]) == SmoothQuantConfig(8, 8, alpha=0.7)

    fresh = nn.Sequential(nn.Linear(K, N), nn.GELU(), nn.Linear(N, K))
    fresh.load_state_dict(fresh_state)
    loaded = load_quantized(fresh, path)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and {"0.inv_smooth", "0.lora_up", "0.lora_down", "0.residual.qweight"} <= a.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize(
    "cls,kwargs,needle",
    [
        (SmoothQuantConfig, {"w_bits": 3}, "w_bits=3"),
        (SmoothQuantConfig, {"a_bits": 2}, "a_bits=2"),
        (SmoothQuantConfig, {"alpha": 1.5}, "alpha=1.5"),
        (SmoothQuantConfig, {"group_size": 33}, "group_size=33"),
        (SVDQuantConfig, {"rank": -1}, "rank=-1"),
        (SVDQuantConfig, {"rank": 2.5}, "rank=2.5"),
        (SVDQuantConfig, {"w_bits": 2}, "w_bits=2"),
        (SVDQuantConfig, {"a_bits": 12}, "a_bits=12"),
        (SVDQuantConfig, {"smooth_alpha": -0.1}, "smooth_alpha=-0.1"),
        (SVDQuantConfig, {"calibration": "l1"}, "calibration='l1'"),
    ],
)
def test_config_rejects_bad_values(cls, kwargs, needle):
    with pytest.raises(ValueError, match=needle.replace(".", r"\.").replace("(", r"\(")):
        cls(**kwargs)


def test_stft_calibration_config_and_clip_validation():
    assert SVDQuantConfig(calibration="stft").w_clip == 1.0
    for bad in (0.3, 1.2, True):
        with pytest.raises(ValueError, match="w_clip"):
            SVDQuantConfig(w_clip=bad)


def test_residual_clipping_changes_scales_not_format():
    lin, calib, x = _outlier_linear(seed=4)
    full = _calibrated(lin, SVDQuantConfig(4, 8, rank=8, calibration=None), calib)
    clipped = _calibrated(lin, SVDQuantConfig(4, 8, rank=8, calibration=None, w_clip=0.8), calib)
    assert clipped.residual.qweight.shape == full.residual.qweight.shape
    torch.testing.assert_close(clipped.residual.weight_scale, 0.8 * full.residual.weight_scale)
    with torch.no_grad():
        assert sqnr(lin(x), clipped(x)) >= 20.0


def test_quantize_without_calibration_points_to_calibrate():
    model = nn.Sequential(nn.Linear(K, N))
    with pytest.raises(ValueError, match="calibrate_"):
        quantize_(model, SmoothQuantConfig())


def test_calibrate_reports_layers_never_run():
    model = nn.Sequential(nn.Linear(K, N), nn.Linear(N, K))
    with pytest.raises(ValueError, match=r"never ran these layers: \['1'\]"):
        calibrate_(model, SmoothQuantConfig(), [lambda m: m[0](torch.randn(4, K))])
