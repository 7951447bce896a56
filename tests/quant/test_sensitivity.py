"""Sensitivity-weighted ("stft", ``stft_method="sensitivity"``) calibration: the Hutchinson weights predict the
teacher-forced complex-STFT loss, the refinement only keeps improvements and installs what it reports, and it runs
on both backbones."""

import pytest
import torch
from test_presets import _outlier_pipeline
from torch import nn

from accelerando.errors import UserError
from accelerando.quant import SVDQuantConfig, SVDQuantLinear, calibrate_, quantized_layers
from accelerando.quant.api import quant_plan
from accelerando.quant.calib_prompts import load_calibration_prompts
from accelerando.quant.presets import prepare_backbone, preset_config, quantize_pipeline
from accelerando.quant.recovery import _item_loss, record_teacher
from accelerando.quant.sensitivity import layer_outputs, record_sensitivity
from accelerando.testing.models import tiny_pipeline

SENS = {"rank": 4, "group_size": None, "seconds": 1.0, "steps": 3, "stft_prompts": 2, "stft_method": "sensitivity"}


@pytest.mark.parametrize("name", ["blocks.1.attn.out", "out_proj"])
def test_sensitivity_predicts_the_teacher_forced_loss_of_output_noise(name):
    """For i.i.d. noise of std sigma added to some of a layer's output channels, the teacher-forced loss is sigma²
    times the trace of H over those channels, which the recorded weights (mean g² over projections) must give: for
    all channels, and for the first third alone (a misaligned or permuted channel axis fails the second)."""
    pipe = _outlier_pipeline(0)
    teacher = record_teacher(pipe, load_calibration_prompts()[:2], 1.0, 3, 3.0, 0)
    # every Linear hooked at once: a later layer's hook must not change the gradient an earlier one sees
    names = [n for n, m in pipe.model.dit.named_modules() if isinstance(m, torch.nn.Linear)]
    assert name in names and len(names) > 10
    sens = record_sensitivity(pipe, teacher, names, max_rows=10**9, projections=4, seed=1)
    w = sens[name]["w"]  # [M, N], every row (no subsampling)
    sigma, n_out = 1e-3, w.shape[1]
    for channels in (slice(None), slice(0, n_out // 3)):
        predicted = sigma**2 * float(w[:, channels].sum()) / len(teacher.items)
        mask = torch.zeros(n_out)
        mask[channels] = 1.0
        gen = torch.Generator().manual_seed(5)
        hook = pipe.model.dit.get_submodule(name).register_forward_hook(
            lambda m, a, y, mask=mask, gen=gen: y + sigma * mask * torch.randn(y.shape, generator=gen)
        )
        try:
            with torch.no_grad():
                draws = [
                    sum(float(_item_loss(pipe, it, teacher.cfg, teacher.rhythm_cfg)) for it in teacher.items)
                    / len(teacher.items)
                    for _ in range(8)
                ]
        finally:
            hook.remove()
        actual = sum(draws) / len(draws)
        assert predicted == pytest.approx(actual, rel=0.3), (channels, predicted, draws)


def test_per_tensor_layers_see_each_calls_own_activation_scale():
    """A per-tensor layer run on a subsample of the recorded rows gives, row for row, the outputs it gives when it
    runs each whole backbone call at once (the appended per-channel max / min rows reproduce the call's scale)."""
    pipe = tiny_pipeline(0, backbone="unet")
    dit = pipe.model.dit
    plan = quant_plan(dit, preset_config("w4a8-svd", 4, None, act_scale="tensor"), prepare_backbone(dit))
    name = next(iter(plan))
    teacher = record_teacher(pipe, load_calibration_prompts()[:1], 1.0, 3, 3.0, 0)
    full = record_sensitivity(pipe, teacher, [name], max_rows=10**9, projections=1)[name]  # every row
    lin = dit.get_submodule(name)
    q = SVDQuantLinear.from_float(lin, full["x"].abs().amax(0), 0.5, 4, 8, None, 4, act_scale="tensor")
    truth = torch.empty(len(full["x"]), lin.out_features)
    with torch.no_grad():
        for c in full["call"].unique().tolist():
            idx = (full["call"] == c).nonzero().flatten()
            truth[idx] = q(full["x"][idx])  # one call's rows, as generation runs them
    pick = torch.randperm(len(full["x"]), generator=torch.Generator().manual_seed(0))[:40]
    sub = {**full, "x": full["x"][pick], "w": full["w"][pick], "call": full["call"][pick]}
    assert len(full["call"].unique()) == 3  # three sampler calls, guidance branches together
    assert torch.equal(layer_outputs(q, sub), truth[pick])
    with torch.no_grad():
        assert not torch.equal(q(sub["x"]), truth[pick])  # the subsample's own scale differs


@pytest.mark.parametrize("backbone", ["dit", "unet"])
def test_sensitivity_rows_have_the_layer_shapes_and_weights(backbone):
    """Every planned layer gets ``max_rows`` input rows and non-negative finite weights. On the outlier DiT every
    layer's weights are non-zero; in the tiny random U-Net the deep layers' gradients are (close to) zero behind its
    zero-initialised convolutions, so only the total is checked there."""
    pipe = _outlier_pipeline(0) if backbone == "dit" else tiny_pipeline(0, backbone="unet")
    dit = pipe.model.dit
    plan = quant_plan(dit, preset_config("w4a8-svd", 4, None), prepare_backbone(dit))
    teacher = record_teacher(pipe, load_calibration_prompts()[:2], 1.0, 3, 3.0, 0)
    sens = record_sensitivity(pipe, teacher, list(plan), max_rows=64, projections=1)
    assert set(sens) == set(plan)
    for n, d in sens.items():
        k, nout = dit.get_submodule(n).in_features, dit.get_submodule(n).out_features
        assert d["x"].shape == (64, k) and d["w"].shape == (64, nout), n
        assert bool(torch.isfinite(d["w"]).all()) and float(d["w"].min()) >= 0, n
        if backbone == "dit":
            assert float(d["w"].sum()) > 0, n
    assert sum(float(d["w"].sum()) for d in sens.values()) > 0


@pytest.mark.parametrize("backbone", ["dit", "unet"])
def test_sensitivity_calibration_installs_its_choices_and_never_raises_the_weighted_error(backbone):
    pipe = _outlier_pipeline(1) if backbone == "dit" else tiny_pipeline(1, backbone="unet")
    quantize_pipeline(pipe, "w4a8-svd-stft", calib_prompts=2, **SENS)
    rep = pipe.model.quant_report["stft_calibration"]
    assert rep["method"] == "sensitivity" and rep["best"] <= rep["start"]
    layers = rep["layers"]
    assert layers and all(v["gain"] >= 0 for v in layers.values())
    changed = 0
    for n, choice in layers.items():
        m = pipe.model.dit.get_submodule(n)
        assert isinstance(m, SVDQuantLinear)
        assert (m.quant_config.smooth_alpha, m.quant_config.w_clip) == (choice["alpha"], choice["w_clip"])
        assert float(m.alpha) == pytest.approx(choice["alpha"])
        changed += choice["gain"] > 0
    assert changed > 0  # the weighting moved at least one layer off mse's choice


def test_stft_method_and_projections_are_checked():
    with pytest.raises(UserError, match="stft_method='magic'"):
        quantize_pipeline(tiny_pipeline(0), "w4a8-svd-stft", stft_method="magic")
    with pytest.raises(UserError, match="stft_projections=0"):
        quantize_pipeline(tiny_pipeline(0), "w4a8-svd-stft", stft_projections=0)


def test_uniform_ablation_weights_every_output_alike_with_the_plain_split():
    pipe = _outlier_pipeline(1)
    quantize_pipeline(pipe, "w4a8-svd-stft", calib_prompts=2, **{**SENS, "stft_method": "uniform"})
    rep = pipe.model.quant_report["stft_calibration"]
    assert rep["method"] == "uniform"
    assert {v["split"] for v in rep["layers"].values()} == {"plain"}
    assert any(v["gain"] > 0 for v in rep["layers"].values())


def test_calibrate_rejects_missing_sensitivity_rows_before_quantizing():
    model = nn.Sequential(nn.Linear(32, 32), nn.Linear(32, 32))
    cfg = SVDQuantConfig(4, 8, rank=4, calibration="stft")
    rows = {"x": torch.randn(8, 32), "w": torch.ones(8, 32), "call": torch.zeros(8, dtype=torch.long)}
    sens = {"0": {**rows, "hi": torch.ones(1, 32), "lo": -torch.ones(1, 32)}}  # nothing for layer "1"
    with pytest.raises(ValueError, match="no sensitivity rows recorded for layer '1'"):
        calibrate_(model, cfg, [torch.randn(8, 32)], sensitivity=sens)
    assert not quantized_layers(model)
    with pytest.raises(ValueError, match="do not fit the layer"):
        calibrate_(
            model, cfg, [torch.randn(8, 32)], sensitivity={"0": sens["0"], "1": {**sens["0"], "w": torch.ones(8, 5)}}
        )
    assert not quantized_layers(model)


@pytest.mark.parametrize("method", [None, "uniform"])
def test_cli_stft_method_reaches_the_calibration(tmp_path, monkeypatch, capsys, method):
    """``accelerando quantize --config w4a8-svd-stft`` calibrates by sensitivity unless ``--stft-method`` says
    otherwise; the JSON report names the method."""
    import json

    from accelerando.cli import quantize
    from accelerando.cli.main import build_parser

    monkeypatch.setattr(quantize, "load_pipeline", lambda model: tiny_pipeline(backbone="unet"))
    argv = ["quantize", "--config", "w4a8-svd-stft", "--rank", "4", "--calib-prompts", "2", "--json"]
    argv += ["-o", str(tmp_path / "s.safetensors"), *(["--stft-method", method] if method else [])]
    args = build_parser().parse_args(argv)
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["stft_calibration"]["method"] == (method or "sensitivity")
