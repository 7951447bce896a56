"""Low-rank recovery (accelerando.quant.recovery), the size options of the presets (``other_linears``,
``size_breakdown``) and the CLI's ``--recover-steps`` / ``--other-linears``."""

import copy
import json

import pytest
import torch
from test_presets import FAST, _outlier_pipeline, _parser

from accelerando.cli.main import main
from accelerando.quant import QuantLinear, SVDQuantLinear, quantized_layers
from accelerando.quant.calib_prompts import load_calibration_prompts
from accelerando.quant.presets import (
    PRESET_OPTIONS,
    _stft_objective,
    dit_filter,
    quantize_pipeline,
    run_prompt,
    save_quantized_generator,
    size_breakdown,
    state_bytes,
)
from accelerando.quant.recovery import complex_stft_loss, record_teacher, recover_
from accelerando.testing.models import tiny_pipeline

REC = {
    "rank": 4,
    "recover_prompts": 2,
    "recover_seconds": 1.0,
    "recover_lr": 5e-3,
    **FAST,
}  # recovery prompts 2, 3 (calib_prompts=2)


def _quantized(seed: int = 0, **opts):
    pipe = _outlier_pipeline(seed)
    quantize_pipeline(pipe, "w4a8-svd", calib_prompts=2, **{**REC, **opts})
    return pipe


def test_complex_stft_loss_is_zero_for_equal_and_relative():
    x = torch.randn(1, 1, 4000)
    assert float(complex_stft_loss(x, x)) == 0.0
    assert float(complex_stft_loss(2 * x, x)) == pytest.approx(1.0, rel=1e-5)  # ||2X - X||^2 / ||X||^2
    assert float(complex_stft_loss(-x, x)) == pytest.approx(4.0, rel=1e-5)  # a polarity flip, as the metric


@pytest.mark.parametrize("seed", [0, 1])
def test_recovery_lowers_the_complex_stft_error_on_the_calibration_prompts(seed):
    """Measured through the pipeline itself (teacher-forced objective of the stft calibration, complex_stft_error
    of the decoded audio vs the float pipeline), not through the recovery's own loss."""
    prompts = load_calibration_prompts()[2:4]  # quantize_pipeline's recovery prompts with calib_prompts=2
    errors = {}
    for steps in (0, 30):
        pipe = _outlier_pipeline(seed)
        # the recovery's clips: recover_seconds, `steps` sampler steps, seeds seed + 2000 + i (here seed 0)
        opts = {**PRESET_OPTIONS, **REC, "stft_seconds": 1.0, "stft_steps": FAST["steps"], "seed": 1000}
        objective = _stft_objective(pipe, prompts, opts)
        quantize_pipeline(pipe, "w4a8-svd", calib_prompts=2, recover_steps=steps, **REC)
        per_prompt = objective(None)  # one error per prompt
        errors[steps] = sum(per_prompt) / len(per_prompt)
        rep = pipe.model.quant_report["recovery"]
    assert rep["steps"] == 30 and not rep["reverted"] and rep["end"] < rep["start"]
    assert errors[30] < 0.7 * errors[0], errors


def test_recovery_changes_only_the_lowrank_factors_and_scales():
    pipe = _quantized()
    teacher = record_teacher(_outlier_pipeline(), load_calibration_prompts()[2:4], 1.0, 3, 3.0, 2000)
    for train_scales in (False, True):
        p = copy.copy(pipe)
        p.model = copy.deepcopy(pipe.model)
        before = {k: v.clone() for k, v in p.model.state_dict().items()}
        rep = recover_(p, teacher, steps=10, lr=5e-3, scale_lr=1e-3, train_scales=train_scales)
        assert not rep["reverted"]
        after = p.model.state_dict()
        assert before.keys() == after.keys()
        changed = {k for k in before if not torch.equal(before[k], after[k])}
        assert all(before[k].dtype == after[k].dtype and before[k].shape == after[k].shape for k in before)
        allowed = ("lora_up", "lora_down") + (("residual.weight_scale",) if train_scales else ())
        assert changed and all(k.endswith(allowed) for k in changed), sorted(changed)
        assert any(k.endswith("lora_up") for k in changed) and any(k.endswith("lora_down") for k in changed)
        assert all(torch.equal(before[k], after[k]) for k in before if k.endswith("qweight"))  # bit-identical codes
        if train_scales:
            assert any(k.endswith("weight_scale") for k in changed)


def test_recovered_model_round_trips_with_identical_outputs(tmp_path):
    from accelerando.pretrained import load_generator

    pipe = _quantized(recover_steps=8)
    path = save_quantized_generator(pipe.model, tmp_path / "rec.safetensors", {"preset": "w4a8-svd", "rec": 8})
    loaded = copy.copy(pipe)
    loaded.model = load_generator(path)
    a, b = pipe.model.state_dict(), loaded.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    p = load_calibration_prompts()[40]
    assert torch.equal(run_prompt(pipe, p, 1.0, 3, 3.0, 7), run_prompt(loaded, p, 1.0, 3, 3.0, 7))


def test_recovery_options_are_checked():
    with pytest.raises(Exception, match="recover_steps=-1"):
        quantize_pipeline(tiny_pipeline(), "w4a8-svd", calib_prompts=1, recover_steps=-1, **FAST)
    with pytest.raises(Exception, match="needs an SVD or SmoothQuant preset"):
        quantize_pipeline(tiny_pipeline(), "w4a8-rtn", calib_prompts=1, recover_steps=3, **FAST)
    with pytest.raises(Exception, match="other_linears='w4'"):
        quantize_pipeline(tiny_pipeline(), "w4a8-rtn", calib_prompts=1, other_linears="w4", **FAST)
    with pytest.raises(ValueError, match="steps=0"):
        recover_(tiny_pipeline(), None, steps=0)


def test_rec_preset_recovers_by_default():
    pipe = _outlier_pipeline()
    quantize_pipeline(pipe, "w4a8-svd-stft-rec", calib_prompts=2, stft_prompts=1, stft_seconds=1.0, stft_steps=3, **REC)
    rep = pipe.model.quant_report
    assert rep["stft_calibration"] is not None and rep["recovery"]["steps"] == 60
    assert not set(rep["recover_prompts"]) & set(rep["calib_prompts"] + rep["stft_objective_prompts"])


def test_other_linears_w8a16_quantizes_the_rest_weight_only_and_round_trips(tmp_path):
    from accelerando.pretrained import load_generator

    plain, pipe = _quantized(), _quantized(other_linears="w8a16")
    others = {n for n, m in pipe.model.dit.named_modules() if isinstance(m, QuantLinear) and "blocks." not in n}
    assert {"in_proj", "text_proj", "pooled_proj", "adaln.1", "out_mod.1", "out_proj", "t_embed.0"} <= others
    assert all(pipe.model.dit.get_submodule(n).a_bits == 16 for n in others)
    assert all(isinstance(m, SVDQuantLinear) for n, m in pipe.model.dit.named_modules() if dit_filter(m, n))
    s_plain, s = size_breakdown(plain.model), size_breakdown(pipe.model)
    assert s["total"] == state_bytes(pipe.model) and s_plain["total"] == state_bytes(plain.model)
    assert s["float"] < s_plain["float"] and s["lowrank"] == s_plain["lowrank"] > 0
    assert pipe.model.quant_report["weight_bytes_after"] < plain.model.quant_report["weight_bytes_after"]
    path = save_quantized_generator(pipe.model, tmp_path / "w8.safetensors", {"preset": "w4a8-svd"})
    g = load_generator(path)
    assert set(quantized_layers(g)) == set(quantized_layers(pipe.model))
    p = load_calibration_prompts()[40]
    loaded = copy.copy(pipe)
    loaded.model = g
    assert torch.equal(run_prompt(pipe, p, 1.0, 3, 3.0, 7), run_prompt(loaded, p, 1.0, 3, 3.0, 7))


def test_cli_recover_steps_writes_a_recovered_file(tmp_path, monkeypatch, capsys):
    from accelerando.cli import quantize
    from accelerando.pretrained import load_generator

    monkeypatch.setattr(quantize, "load_pipeline", lambda model: _outlier_pipeline())
    out = tmp_path / "rec.safetensors"
    args = _parser().parse_args(
        ["quantize", "--config", "w4a8-svd", "--calib-prompts", "2", "--rank", "4", "--recover-steps", "5"]
        + ["--other-linears", "w8a16", "-o", str(out), "--json", "--quiet"]
    )
    assert args.func(args) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["recovery"]["steps"] == 5 and len(rep["recovery"]["history"]) == 5
    assert rep["size"]["total"] == rep["weight_bytes_after"] and rep["weight_bytes_bf16"] > rep["weight_bytes_after"]
    g = load_generator(out)
    assert g.quant_metadata["recovery"]["steps"] == 5 and g.quant_metadata["other_linears"] == "w8a16"


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--config", "w4a8-svd", "--recover-steps", "-3"], "--recover-steps -3"),
        (["--config", "w4a8-rtn", "--recover-steps", "3"], "needs an SVD or SmoothQuant preset"),
        (["--config", "w4a8-svd", "--recover-steps", "many"], "invalid int value"),
        (["--config", "w4a8-svd", "--other-linears", "w4"], "invalid choice"),
    ],
)
def test_cli_bad_recovery_arguments_give_one_line_and_exit_code_2(argv, needle, tmp_path, capsys):
    assert main(["quantize", *argv, "-o", str(tmp_path / "o.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert not (tmp_path / "o.safetensors").exists()


@pytest.mark.parametrize("backbone", ["dit", "unet"])
def test_recovery_follows_rhythm_guidance_three_branches(backbone):
    """With a rhythm scale the pipeline batches three branches per call; the teacher records them all, its Euler
    replay reproduces the float latent (record_teacher checks this and raises otherwise), and recovery lowers its
    loss."""
    pipe = tiny_pipeline(backbone=backbone) if backbone == "unet" else _outlier_pipeline()
    pipe.model.config.default_rhythm_cfg = 5.0
    teacher = record_teacher(pipe, load_calibration_prompts()[2:4], 1.0, 3, 3.0, 2000)
    assert teacher.rhythm_cfg == 5.0 and {it.nb for it in teacher.items} == {3}
    quantize_pipeline(pipe, "w4a8-svd", calib_prompts=2, recover_steps=10, **REC)
    rep = pipe.model.quant_report["recovery"]
    assert rep["steps"] == 10 and not rep["reverted"] and rep["end"] < rep["start"]


def test_teacher_and_stft_objective_run_without_latent_guidance():
    """A model whose defaults add grid and key guidance after the backbone: the teacher records with them off (else
    its Euler replay of the backbone calls could not reproduce the float latent), and stft calibration with recovery
    runs."""
    pipe = tiny_pipeline(latent="mel")
    pipe.model.config.default_grid_guidance = 2.0
    pipe.model.config.default_key_guidance = 2.0
    teacher = record_teacher(pipe, load_calibration_prompts()[2:4], 1.0, 3, 3.0, 2000)
    assert len(teacher.items) == 2
    quantize_pipeline(pipe, "w4a8-svd-stft", calib_prompts=2, recover_steps=2, **REC)
    assert pipe.model.quant_report["recovery"]["steps"] == 2
