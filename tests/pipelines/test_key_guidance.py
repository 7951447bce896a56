"""Key guidance: the pitch-class map, the scale templates, the closed-form gradient and the pipeline plumbing."""

import math

import pytest
import torch

from accelerando.errors import UserError
from accelerando.pipelines.key_guidance import (
    band_frequencies,
    chroma_map,
    key_guided_velocity,
    key_score,
    key_score_grad,
    scale_template,
)
from accelerando.testing.models import tiny_pipeline


def _cmap(d=40):
    freqs = 440.0 * 2 ** ((torch.arange(d, dtype=torch.float64) - 12) / 12)  # one band per semitone from A3
    return chroma_map(freqs)


def test_scale_templates_follow_the_mode():
    c = scale_template("C major")
    assert int(c.argmax()) == 0 and c[1] < 0 and c[11] > 0  # tonic first; C# out, B in
    d = scale_template("D dorian")
    assert int(d.argmax()) == 2 and d[11] > 0 and d[10] < 0  # B natural, not B flat
    assert torch.allclose(scale_template("A minor"), scale_template("A aeolian"))
    assert not torch.allclose(scale_template("D dorian"), scale_template("D minor"))
    for t in (c, d):
        assert abs(float(t.sum())) < 1e-5 and abs(float(t.norm()) - 1) < 1e-5


def test_chroma_map_puts_a_band_on_its_pitch_class():
    m = _cmap()
    assert m.shape == (12, 40)
    assert int(m[:, 12].argmax()) == 9  # 440 Hz is an A
    assert int(m[:, 15].argmax()) == 0  # three semitones up: C
    assert float(chroma_map(torch.tensor([100.0, 9000.0], dtype=torch.float64)).abs().sum()) == 0  # outside range


def test_band_frequencies_of_a_filterbank():
    from accelerando.audio.mel import mel_filterbank

    fb = mel_filterbank(24000, 1024, 100)
    f = band_frequencies(fb, 24000)
    assert f.shape == (100,) and bool((f[1:] > f[:-1]).all()) and 0 < float(f[0]) < float(f[-1]) < 12000


def test_closed_form_gradient_equals_autograd():
    cmap, tmpl = _cmap().double(), scale_template("E minor").double()
    m = torch.randn(2, 30, 40, dtype=torch.float64, requires_grad=True)
    (auto,) = torch.autograd.grad(key_score(m, cmap, tmpl).sum(), m)
    assert torch.allclose(key_score_grad(m.detach(), cmap, tmpl), auto, atol=1e-10)


def test_a_small_step_moves_the_pitch_content_towards_the_key():
    cmap, tmpl = _cmap(), scale_template("F major")
    gen = torch.Generator().manual_seed(0)
    x, v = torch.randn(2, 30, 40, generator=gen), torch.randn(2, 30, 40, generator=gen)
    std, mean = torch.ones(40), torch.zeros(40)
    assert torch.equal(key_guided_velocity(x, 0.8, v, cmap, tmpl, 0.0, std, mean), v)
    v2 = key_guided_velocity(x, 0.8, v, cmap, tmpl, 0.05, std, mean)
    assert (key_score(x - 0.8 * v2, cmap, tmpl) > key_score(x - 0.8 * v, cmap, tmpl)).all()
    assert math.isclose(float((0.8 * (v - v2)).pow(2).mean().sqrt()), 0.05, rel_tol=1e-4)


def test_pipeline_key_guidance():
    pipe = tiny_pipeline(latent="mel")
    kw = {"duration": 2.0, "steps": 4, "key": "G mixolydian"}

    def run(**extra):
        return pipe("a reel", generator=torch.Generator().manual_seed(2), **kw, **extra)

    plain = run()
    assert plain.metadata["key_guidance"] == 0.0
    guided = run(key_guidance=1.5)
    assert guided.metadata["key_guidance"] == 1.5 and not torch.allclose(guided.audio, plain.audio, atol=1e-4)
    both = run(key_guidance=1.5, grid_guidance=1.0)
    assert not torch.allclose(both.audio, guided.audio, atol=1e-4)
    pipe.model.config.default_key_guidance = 1.5
    try:
        assert torch.equal(run().audio, guided.audio)
        assert torch.equal(run(key_guidance="off").audio, plain.audio)
    finally:
        pipe.model.config.default_key_guidance = None
    with pytest.raises(UserError, match="key_guidance=9"):
        run(key_guidance=9)
    with pytest.raises(UserError, match="pitch content from a log-mel latent"):
        tiny_pipeline()("x", duration=1.0, steps=2, key_guidance=1.0)


def test_modes_written_without_a_space():
    assert torch.allclose(scale_template("Adorian"), scale_template("A dorian"))
    assert torch.allclose(scale_template("Cmixolydian"), scale_template("C mixolydian"))
    assert torch.allclose(scale_template("Ebm"), scale_template("Eb minor"))


def test_a_flat_spectrum_favours_no_key():
    from accelerando.audio.mel import mel_filterbank

    cmap = chroma_map(band_frequencies(mel_filterbank(24000, 1024, 100), 24000))
    flat = torch.zeros(1, 10, 100)
    scores = [float(key_score(flat, cmap, scale_template(k))) for k in ("C major", "D major", "F major", "A minor")]
    assert (
        max(abs(s) for s in scores) < 1e-2
    )  # float rounding of a zero correlation (±0.3 before the rows were normalised)


def test_the_pitch_class_map_is_built_wherever_the_codec_lives():
    """The codec's filterbank on another device (here 'meta', standing in for a GPU) must not break the build: the
    map is computed on the CPU and moved to the model's device."""
    from types import SimpleNamespace

    from accelerando.pipelines.key_guidance import make_key_guidance

    pipe = tiny_pipeline(latent="mel")
    codec = SimpleNamespace(mel=SimpleNamespace(mel_basis=pipe.codec.mel.mel_basis.to("meta")), sample_rate=24000)
    with pytest.raises(NotImplementedError):  # a meta tensor has no data to read: the CPU copy is attempted
        make_key_guidance("C major", 1.0, pipe.model, codec)
    cpu = SimpleNamespace(mel=SimpleNamespace(mel_basis=pipe.codec.mel.mel_basis), sample_rate=24000)
    assert make_key_guidance("C major", 1.0, pipe.model, cpu) is not None
