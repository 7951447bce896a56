"""TextToMusicPipeline on the tiny random-weight models: shapes, determinism, the edits (extend, inpaint, remix),
input resampling, input validation, guidance, and the timings/metadata of AudioOutput.

Everything runs on ``tiny_pipeline()`` (24 kHz codec, 23.4375 latent frames per second) with 2-4 sampling steps and
clips of at most 4 s, so the whole file takes a few seconds on a CPU.
"""

import math
import re

import pytest
import soundfile as sf
import torch

from accelerando.audio import resample
from accelerando.errors import UserError
from accelerando.modules.precision import use_bf16
from accelerando.pipelines.text_to_music import AudioOutput
from accelerando.testing.models import tiny_pipeline

PROMPT = "a calm piano"
SR = 24000  # tiny codec sample rate
STEPS = 2


@pytest.fixture(scope="module")
def pipe():
    p = tiny_pipeline()
    assert p.codec.sample_rate == SR
    return p


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def noise_audio(seconds: float, seed: int = 1, channels: int = 1) -> torch.Tensor:
    """Input audio [C, S] at 24 kHz: quiet white noise (every sample distinct from the generated audio)."""
    return 0.1 * torch.randn(channels, int(round(seconds * SR)), generator=gen(seed))


def run(pipe, prompt: str = PROMPT, *, seed: int = 0, **kw) -> AudioOutput:
    kw.setdefault("duration", 1.0)
    kw.setdefault("steps", STEPS)
    return pipe(prompt, generator=gen(seed), **kw)


# -- 1. generate ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("duration", [1.0, 1.7])
def test_generate_shape_dtype_finite(pipe, duration):
    out = run(pipe, duration=duration, num_outputs=2)
    assert out.audio.shape == (2, 1, round(duration * SR))
    assert out.audio.dtype == torch.float32
    assert torch.isfinite(out.audio).all()
    assert out.audio.abs().max() > 0
    assert out.sample_rate == SR


def test_generate_num_outputs_are_distinct(pipe):
    audio = run(pipe, num_outputs=3).audio
    assert audio.shape[0] == 3
    for i in range(3):
        for j in range(i + 1, 3):
            assert not torch.equal(audio[i], audio[j]), f"outputs {i} and {j} are identical"


def test_audio_output_save_writes_wav(pipe, tmp_path):
    out = run(pipe, duration=1.5, num_outputs=2)
    path = out.save(tmp_path / "sub" / "clip.wav", index=1)
    assert path.is_file()
    data, rate = sf.read(path, always_2d=True)  # [S, C]
    assert rate == SR
    assert data.shape == (round(1.5 * SR), 1)
    # 16-bit PCM: within one quantisation step of output 1, and not output 0
    written = torch.from_numpy(data[:, 0]).float()
    assert (written - out.audio[1, 0]).abs().max() <= 1.5 / 32768
    assert (written - out.audio[0, 0]).abs().max() > 1e-3


# -- 2. determinism ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_same_seed_is_bit_identical(pipe, sampler):
    a = run(pipe, seed=7, sampler=sampler).audio
    b = run(pipe, seed=7, sampler=sampler).audio
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)


def test_different_seeds_differ(pipe):
    a = run(pipe, seed=0).audio
    b = run(pipe, seed=1).audio
    assert not torch.equal(a, b)
    assert (a - b).abs().mean() > 1e-4


def test_samplers_and_steps_change_the_result(pipe):
    euler = run(pipe, sampler="euler").audio
    heun = run(pipe, sampler="heun").audio
    euler_more = run(pipe, sampler="euler", steps=STEPS + 2).audio
    assert torch.isfinite(heun).all()
    assert not torch.equal(euler, heun)
    assert not torch.equal(euler, euler_more)


# -- 3. extend --------------------------------------------------------------------------------------------------------


def test_extend_keeps_input_exactly(pipe):
    init = noise_audio(2.0)
    audio = run(pipe, duration=4.0, init_audio=init).audio
    assert audio.shape == (1, 1, 4 * SR)
    assert torch.equal(audio[0, 0, : 2 * SR], init[0])
    rest = audio[0, 0, 2 * SR :]
    assert torch.isfinite(rest).all()
    assert rest.abs().mean() > 1e-4  # generated, not silence
    assert rest[0] != init[0, -1]  # the seam is the crossfade's first sample, not a kept one


def test_extend_stereo_input_keeps_its_mono_mix(pipe):
    init = noise_audio(2.0, channels=2)
    audio = run(pipe, duration=3.0, init_audio=init).audio
    assert audio.shape == (1, 1, 3 * SR)
    assert torch.equal(audio[0, 0, : 2 * SR], init.mean(dim=0))


# -- 4. inpaint -------------------------------------------------------------------------------------------------------

REGIONS = [(1.0, 1.5), (2.0, 2.5)]


def test_inpaint_keeps_outside_exactly_and_regenerates_inside(pipe):
    init = noise_audio(3.0)
    audio = run(pipe, duration=3.0, init_audio=init, regions=REGIONS).audio
    assert audio.shape == (1, 1, 3 * SR)
    a, x = audio[0, 0], init[0]
    inside = torch.zeros(3 * SR, dtype=torch.bool)
    for lo, hi in REGIONS:
        inside[int(lo * SR) : int(hi * SR)] = True

    assert torch.equal(a[~inside], x[~inside])
    changed = a != x
    assert torch.equal(changed, inside), "exactly the samples inside the regions are regenerated"
    for lo, hi in REGIONS:
        s0, s1 = int(lo * SR), int(hi * SR)
        # the samples just outside each boundary are kept bit-exactly (the crossfade stays inside the region)
        assert a[s0 - 1] == x[s0 - 1] and a[s1] == x[s1]
        interior = (a[s0 + 1000 : s1 - 1000] - x[s0 + 1000 : s1 - 1000]).abs().mean()
        assert interior > 1e-3
        # ... and the seams are crossfaded: the first and last regenerated samples are still almost the input
        assert (a[s0] - x[s0]).abs() < 0.1 * interior
        assert (a[s1 - 1] - x[s1 - 1]).abs() < 0.1 * interior


def test_inpaint_region_starting_before_zero(pipe):
    init = noise_audio(3.0)
    try:
        audio = run(pipe, duration=3.0, init_audio=init, regions=[(-0.5, 0.5)]).audio
    except UserError:
        return  # rejecting the region is a fine fix too
    assert (audio[0, 0, : SR // 2] != init[0, : SR // 2]).float().mean() > 0.99


# -- 5. remix ---------------------------------------------------------------------------------------------------------


def test_remix_strength_zero_is_the_codec_round_trip(pipe):
    init = noise_audio(3.0)
    out = run(pipe, duration=3.0, init_audio=init, strength=0.0).audio
    with torch.inference_mode():
        ref = pipe.codec.decode(pipe.codec.encode(init[None]))[..., : 3 * SR]  # [1, 1, S]
    assert out.shape == ref.shape == (1, 1, 3 * SR)
    assert torch.equal(out, ref)  # no noise added: the input latent decoded as it is


def test_remix_strength_moves_progressively_away(pipe):
    init = noise_audio(3.0)
    outs = {s: run(pipe, duration=3.0, steps=4, init_audio=init, strength=s).audio for s in (0.0, 0.3, 0.9)}
    d03 = (outs[0.3] - outs[0.0]).abs().mean()
    d09 = (outs[0.9] - outs[0.0]).abs().mean()
    assert d03 > 1e-4
    assert d09 > 1.5 * d03


def test_remix_without_duration_matches_the_input_length(pipe):
    init = noise_audio(3.0)
    out = pipe(PROMPT, steps=STEPS, init_audio=init, strength=0.5, generator=gen(0))
    assert out.audio.shape[-1] == init.shape[-1]
    assert out.metadata["duration"] == pytest.approx(3.0)


# -- 6. input resampling ----------------------------------------------------------------------------------------------


def _sine(rate: int, seconds: int = 2) -> torch.Tensor:
    """A 440 Hz sine [S] sampled at ``rate``."""
    return 0.3 * torch.sin(2 * math.pi * 440 * torch.arange(seconds * rate) / rate)


def test_extend_resamples_48k_input(pipe):
    """A 48 kHz input is resampled (soxr HQ) to the codec's 24 kHz, so the kept part equals the 24 kHz rendering of
    the same signal only within resampling error (not bit-exactly); the error is largest at the clip's edges, where
    the resampler's filter sees the implicit zeros outside the clip."""
    init48 = _sine(48000)[None]  # [1, 96000]
    audio = run(pipe, duration=4.0, init_audio=init48, init_sample_rate=48000).audio
    assert audio.shape == (1, 1, 4 * SR)
    kept = audio[0, 0, : 2 * SR]
    err = (kept - _sine(SR)).abs()
    assert err[200:-200].max() < 1e-3
    assert err.max() < 1e-2
    assert torch.equal(kept, resample(init48[0], 48000, SR))  # the kept part is exactly the resampled input
    assert audio[0, 0, 2 * SR :].abs().mean() > 1e-4


# -- 7. check_inputs --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"duration": 61.0}, "duration=61.0"),
        ({"duration": 0.0}, "duration=0.0"),
        ({"duration": -1.0}, "duration=-1.0"),
        ({"bpm": 30.0}, "bpm=30.0"),
        ({"bpm": 250}, "bpm=250"),
        ({"key": "H major"}, "'H major'"),
        ({"meter": "5/3"}, "'5/3'"),
        ({"meter": "four"}, "'four'"),
        ({"steps": 0}, "steps=0"),
        ({"cfg": -1.0}, "cfg=-1.0"),
        ({"sampler": "dpm"}, "sampler='dpm'"),
    ],
)
def test_check_inputs_rejects_bad_values(pipe, kwargs, pattern):
    with pytest.raises(UserError, match=re.escape(pattern)):
        run(pipe, **kwargs)


def test_duration_error_states_the_model_maximum(pipe):
    assert pipe.max_seconds == 60.0
    with pytest.raises(UserError, match=r"\b60 s\b"):
        run(pipe, duration=pipe.max_seconds + 1)
    run(pipe, duration=0.5)  # a valid duration below the maximum passes


@pytest.mark.parametrize("bpm", [39.0, 201.0])
def test_bpm_error_states_the_range(pipe, bpm):
    with pytest.raises(UserError) as info:
        run(pipe, bpm=bpm)
    assert f"bpm={bpm}" in str(info.value)
    assert "40" in str(info.value) and "200" in str(info.value)


def test_strength_out_of_range_with_init_audio(pipe):
    with pytest.raises(UserError, match=re.escape("strength=1.5")):
        run(pipe, init_audio=noise_audio(1.0), strength=1.5)


def test_strength_out_of_range_without_init_audio(pipe):
    with pytest.raises(UserError, match=re.escape("strength=1.5")):
        run(pipe, strength=1.5)


@pytest.mark.parametrize("prompt", [42, None, ["a", "b"]])
def test_prompt_must_be_a_string(pipe, prompt):
    with pytest.raises(UserError, match=rf"prompt.*{type(prompt).__name__}"):
        run(pipe, prompt)


def test_valid_edge_values_pass(pipe):
    out = run(pipe, bpm=40, key="F# minor", meter="6/8", cfg=0.0, steps=1, duration=0.3)
    assert out.audio.shape == (1, 1, round(0.3 * SR))


# -- 8. classifier-free guidance --------------------------------------------------------------------------------------


def test_guidance_scale_changes_the_output(pipe):
    plain = run(pipe, cfg=1.0).audio  # no unconditional branch
    guided = run(pipe, cfg=3.0).audio
    assert torch.isfinite(guided).all()
    assert not torch.equal(plain, guided)


def test_cfg_zero_is_the_unconditional_prediction(pipe):
    """cfg=0 keeps only the unconditional branch (text and controls dropped), so the prompt and the key no longer
    matter. Prompts of equal word count keep the null-text length, and so the arithmetic, identical."""
    a = run(pipe, "a calm piano", cfg=0.0).audio
    b = run(pipe, "loud brass band", key="A minor", cfg=0.0).audio
    assert torch.isfinite(a).all() and a.abs().max() > 0
    assert torch.equal(a, b)
    # the conditional path does depend on them, so the equality above is not vacuous
    c = run(pipe, "a calm piano", cfg=1.0).audio
    d = run(pipe, "loud brass band", key="A minor", cfg=1.0).audio
    assert not torch.equal(c, d)


def test_rhythm_guidance_runs_three_branches_and_reduces_to_plain_guidance(pipe, monkeypatch):
    seen = []
    forward = pipe.model.dit.forward

    def spy(x, t, cond):
        seen.append((cond.drop_text.clone(), cond.phases.clone()))
        return forward(x, t, cond)

    monkeypatch.setattr(pipe.model.dit, "forward", spy)
    monkeypatch.setattr(pipe.model.config, "phase_guidance", True)
    a = run(pipe, cfg=3.0, rhythm_cfg=3.0).audio
    drop_text, phases = seen[0]
    assert drop_text.tolist() == [False, False, True]  # all conditions; text only; nothing
    assert phases[0].abs().sum() > 0 and torch.count_nonzero(phases[1:]) == 0  # the grid goes with the controls
    plain = run(pipe, cfg=3.0).audio
    assert (a - plain).abs().max() < 1e-2 * plain.abs().max()  # the same combination, other batch rounding
    strong = run(pipe, cfg=3.0, rhythm_cfg=8.0).audio
    assert (strong - plain).abs().max() > 0.1 * plain.abs().max()
    with pytest.raises(UserError, match="rhythm_cfg=25"):
        run(pipe, rhythm_cfg=25.0)
    with pytest.raises(UserError, match="rhythm_cfg='loud'"):
        run(pipe, rhythm_cfg="loud")


def test_the_default_rhythm_guidance_comes_from_the_model_config(pipe, monkeypatch):
    monkeypatch.setattr(pipe.model.config, "default_rhythm_cfg", 6.0)
    default = run(pipe, cfg=3.0)
    assert default.metadata["rhythm_cfg"] == 6.0
    assert torch.equal(default.audio, run(pipe, cfg=3.0, rhythm_cfg=6.0).audio)
    off = run(pipe, cfg=3.0, rhythm_cfg="off")
    assert off.metadata["rhythm_cfg"] is None and not torch.equal(off.audio, default.audio)


def test_guidance_interval_guides_only_the_steps_inside_it(pipe, monkeypatch):
    batches = []
    forward = pipe.model.dit.forward

    def spy(x, t, cond):
        batches.append((round(float(t[0]), 4), x.shape[0], cond.drop_text.tolist()))
        return forward(x, t, cond)

    monkeypatch.setattr(pipe.model.dit, "forward", spy)
    kw = {"cfg": 3.0, "rhythm_cfg": 5.0, "steps": 4}
    every = run(pipe, **kw).audio
    times = [t for t, _, _ in batches]
    assert torch.equal(run(pipe, guidance_interval=(0.0, 1.0), **kw).audio, every)  # every step inside: unchanged
    batches.clear()
    part = run(pipe, guidance_interval=(0.8, 1.0), **kw)
    assert [(t, n) for t, n, _ in batches] == [(t, 3 if t >= 0.8 else 1) for t in times]
    assert all(d == [False] for t, n, d in batches if n == 1)  # the unguided steps keep text and controls
    assert part.metadata["guidance_interval"] == [0.8, 1.0]
    assert not torch.equal(part.audio, every)
    monkeypatch.setattr(pipe.model.dit, "forward", forward)
    none = run(pipe, guidance_interval=(0.0, 0.0001), **{**kw, "steps": 4})
    # conditional only; in float32 (CPUs without bf16) a GEMM over a 3-row batch and over 1 row round differently
    plain = run(pipe, **{**kw, "cfg": 1.0, "rhythm_cfg": "off"}).audio
    torch.testing.assert_close(none.audio, plain, rtol=0, atol=0 if use_bf16() else 1e-5)
    for bad, word in (
        ((0.8, 0.2), "0.8, 0.2"),
        ((0.1, 1.5), "1.5"),
        ("x", "'x'"),
        ("01", "'01'"),
        ((float("nan"), 1), "nan"),
    ):
        with pytest.raises(UserError, match=f"guidance_interval=.*{word}"):
            run(pipe, guidance_interval=bad)


def test_guidance_interval_bounds_are_inclusive_and_remix_scales_them(pipe, monkeypatch):
    rows = []
    forward = pipe.model.dit.forward

    def spy(x, t, cond):
        rows.append((round(float(t[0]), 4), x.shape[0]))
        return forward(x, t, cond)

    monkeypatch.setattr(pipe.model.dit, "forward", spy)
    run(pipe, cfg=3.0, steps=8, guidance_interval=(0.9, 1.0))  # 0.9 is a step time (0.89999998 in float32)
    assert [n for t, n in rows] == [2, 2, 2, 1, 1, 1, 1, 1]  # t = 1, 0.955, 0.9 guided
    rows.clear()
    src = run(pipe, cfg=3.0, steps=2).audio[0]
    rows.clear()
    run(pipe, cfg=3.0, steps=4, init_audio=src, strength=0.5, guidance_interval=(0.7, 1.0))
    times = [t for t, _ in rows]
    assert times[0] == 0.5 and [n for _, n in rows] == [2 if t >= 0.35 else 1 for t in times]
    assert [n for _, n in rows].count(2) >= 1  # a remix below t_lo is still guided at its start


def test_the_default_guidance_interval_comes_from_the_model_config(pipe, monkeypatch):
    kw = {"cfg": 3.0, "steps": 4}
    every = run(pipe, **kw)
    assert every.metadata["guidance_interval"] is None
    monkeypatch.setattr(pipe.model.config, "default_guidance_interval", [0.8, 1.0])
    default = run(pipe, **kw)
    assert default.metadata["guidance_interval"] == [0.8, 1.0]
    assert torch.equal(default.audio, run(pipe, guidance_interval=(0.8, 1.0), **kw).audio)
    assert torch.equal(run(pipe, guidance_interval="all", **kw).audio, every.audio)
    monkeypatch.setattr(pipe.model.config, "default_guidance_interval", [0.9, 0.2])
    with pytest.raises(UserError, match=r"guidance_interval=\(0.9, 0.2\)"):
        run(pipe, **kw)


# -- 9. timings and metadata ------------------------------------------------------------------------------------------


def test_timings_and_metadata(pipe):
    out = run(pipe, bpm=96.0, key="Eb minor", meter="3/4", steps=3, cfg=2.5, sampler="heun", duration=1.2)
    t = out.timings
    for k in ("wall_s", "sampling_s", "decode_s", "rtf"):
        assert k in t, k
        assert math.isfinite(t[k]) and t[k] > 0, (k, t[k])
    assert t["sampling_s"] <= t["wall_s"] and t["decode_s"] <= t["wall_s"]
    assert t["rtf"] == pytest.approx(1.2 / t["wall_s"])
    m = out.metadata
    assert m["prompt"] == PROMPT
    assert m["bpm"] == 96.0
    assert m["key"] == "Eb minor"
    assert m["meter"] == "3/4"
    assert m["steps"] == 3
    assert m["cfg"] == 2.5
    assert m["sampler"] == "heun"
    assert m["duration"] == 1.2


@pytest.mark.parametrize("phase_guidance", [False, True])
def test_unconditional_branch_drops_the_beat_grid_only_for_phase_guided_models(pipe, phase_guidance, monkeypatch):
    seen = []
    forward = pipe.model.dit.forward

    def spy(x, t, cond):
        seen.append(cond.phases.clone())
        return forward(x, t, cond)

    monkeypatch.setattr(pipe.model.dit, "forward", spy)
    monkeypatch.setattr(pipe.model.config, "phase_guidance", phase_guidance)
    pipe(PROMPT, bpm=100, duration=2.0, steps=STEPS, cfg=3.0, generator=gen())
    cond, uncond = seen[0].chunk(2)
    assert cond.abs().sum() > 0 and torch.equal(cond[:, :, 0], seen[0][0, :, 0].expand_as(cond[:, :, 0]))
    if phase_guidance:
        assert torch.count_nonzero(uncond) == 0
    else:
        assert torch.equal(uncond, cond)
    seen.clear()
    pipe(PROMPT, bpm=100, duration=2.0, steps=STEPS, cfg=1.0, generator=gen())  # unguided: one branch, with a grid
    assert seen[0].shape[0] == 1 and seen[0].abs().sum() > 0


def test_the_unet_backbone_runs_every_pipeline_operation():
    unet_pipe = tiny_pipeline(backbone="unet")
    assert type(unet_pipe.model.dit).__name__ == "MusicUNet"
    a = run(unet_pipe, bpm=90, key="A minor", duration=2.0, seed=3).audio
    b = run(unet_pipe, bpm=90, key="A minor", duration=2.0, seed=3).audio
    assert a.shape == (1, 1, 2 * SR) and torch.equal(a, b)
    init = noise_audio(3.0)
    audio = run(unet_pipe, duration=3.0, init_audio=init, regions=[(1.0, 2.0)]).audio[0, 0]
    assert torch.equal(audio[:SR], init[0, :SR]) and torch.equal(audio[2 * SR :], init[0, 2 * SR :])
    assert not torch.equal(audio[SR : 2 * SR], init[0, SR : 2 * SR])


def test_the_default_guidance_scale_comes_from_the_model_config(pipe, monkeypatch):
    monkeypatch.setattr(pipe.model.config, "default_cfg", 5.0)
    out = run(pipe)
    assert out.metadata["cfg"] == 5.0
    assert torch.equal(out.audio, run(pipe, cfg=5.0).audio) and not torch.equal(out.audio, run(pipe, cfg=3.0).audio)
