"""Beat-grid guidance: the closed-form gradient, the guided velocity, and the pipeline / session plumbing."""

import math

import pytest
import torch

from accelerando.conditioning.phases import frame_phases
from accelerando.errors import UserError
from accelerando.pipelines.grid_guidance import (
    GRID_INTERVAL,
    check_grid_guidance,
    grid_guided_velocity,
    grid_score,
    grid_score_grad,
    in_interval,
    pulse_template,
)
from accelerando.testing.models import tiny_pipeline


def _template(frames=120, frame_rate=20.0, bpm=100.0):
    return pulse_template(frame_phases(frames, frame_rate, bpm, 4))


def test_pulse_template_peaks_on_the_beats():
    g = _template()
    assert abs(float(g.sum())) < 1e-4 and abs(float(g.norm()) - 1) < 1e-5
    beats = [round(i * 60 / 100 * 20) for i in range(10)]  # frame of each beat at 100 bpm, 20 frames/s
    between = [b + 6 for b in beats]  # half a beat later
    assert all(g[b] > 0 for b in beats) and all(g[b] < 0 for b in between)


def test_closed_form_gradient_equals_autograd():
    g = _template()
    m = torch.randn(3, 120, 10, dtype=torch.float64, requires_grad=True)
    (auto,) = torch.autograd.grad(grid_score(m, g.double()).sum(), m)
    closed = grid_score_grad(m.detach(), g.double())
    assert torch.allclose(closed, auto, atol=1e-10)


def test_a_small_step_raises_the_score_and_strength_zero_is_the_identity():
    g = _template()
    gen = torch.Generator().manual_seed(0)
    x, v = torch.randn(2, 120, 10, generator=gen), torch.randn(2, 120, 10, generator=gen)
    std, mean = torch.rand(10, generator=gen) + 0.5, torch.randn(10, generator=gen)
    t = 0.8
    assert torch.equal(grid_guided_velocity(x, t, v, g, 0.0, std, mean), v)
    v2 = grid_guided_velocity(x, t, v, g, 0.05, std, mean)
    before = grid_score((x - t * v) * std + mean, g)
    after = grid_score((x - t * v2) * std + mean, g)
    assert (after > before).all()
    # the move has the requested size: strength times the normalised latent's unit RMS
    assert math.isclose(float((t * (v - v2)).pow(2).mean().sqrt()), 0.05, rel_tol=1e-4)


def test_known_frames_are_not_moved_and_feed_the_score():
    g = _template()
    gen = torch.Generator().manual_seed(1)
    x, v, known = (torch.randn(1, 120, 10, generator=gen) for _ in range(3))
    std, mean = torch.ones(10), torch.zeros(10)
    free = torch.zeros(1, 120)
    free[:, 40:80] = 1
    t = 0.7
    v2 = grid_guided_velocity(x, t, v, g, 1.0, std, mean, free=free, known=known)
    x0 = x - t * v2
    assert torch.allclose(x0[:, free[0] == 0], known[:, free[0] == 0], atol=1e-5)  # known frames: the known latent
    # the generated frames move by the strength in RMS, as a whole generated clip would (not diluted by known frames)
    move = (t * (v - v2))[:, free[0] > 0]
    assert math.isclose(float(move.pow(2).mean().sqrt()), 1.0, rel_tol=1e-4)
    shifted = known + (torch.arange(120) < 40)[None, :, None]  # other known context before the generated frames
    other = grid_guided_velocity(x, t, v, g, 1.0, std, mean, free=free, known=shifted)
    assert not torch.allclose(other[:, 40:80], v2[:, 40:80])  # the known context is read


def test_check_grid_guidance_and_interval():
    assert check_grid_guidance("off") == 0.0 and check_grid_guidance(2) == 2.0
    for bad in (-1, 4.5, "on", True, float("nan")):
        with pytest.raises(UserError, match="grid_guidance="):
            check_grid_guidance(bad)
    lo, hi = GRID_INTERVAL
    assert in_interval(lo) and in_interval(hi) and not in_interval(hi + 0.01) and not in_interval(lo - 0.01)
    assert in_interval(lo * 0.5, scale=0.5) and not in_interval(hi, scale=0.5)


def test_pipeline_grid_guidance():
    pipe = tiny_pipeline(latent="mel")
    kw = {"duration": 2.0, "steps": 4, "bpm": 90.0}

    def run(**extra):
        return pipe("a march", generator=torch.Generator().manual_seed(3), **kw, **extra)

    plain = run()
    assert plain.metadata["grid_guidance"] == 0.0
    assert torch.equal(run(grid_guidance="off").audio, plain.audio)
    guided = run(grid_guidance=2.0)
    assert guided.metadata["grid_guidance"] == 2.0
    assert not torch.allclose(guided.audio, plain.audio, atol=1e-4)
    assert torch.equal(run(grid_guidance=2.0).audio, guided.audio)  # deterministic
    pipe.model.config.default_grid_guidance = 2.0
    try:
        assert torch.equal(run().audio, guided.audio)  # the model's default
        assert torch.equal(run(grid_guidance="off").audio, plain.audio)
    finally:
        pipe.model.config.default_grid_guidance = None
    with pytest.raises(UserError, match="grid_guidance=5"):
        run(grid_guidance=5)


def test_grid_guidance_needs_a_log_mel_latent():
    pipe = tiny_pipeline()  # a learned latent
    with pytest.raises(UserError, match="log-mel latent"):
        pipe("x", duration=1.0, steps=2, grid_guidance=1.0)
    pipe("x", duration=1.0, steps=2, grid_guidance="off")  # off works with any codec


def test_a_flat_estimate_is_left_alone():
    """No rise anywhere (silence, or a held chord): no gradient, the velocity comes back unchanged and finite."""
    g = _template()
    x = torch.zeros(1, 120, 10)
    v = torch.full((1, 120, 10), 0.5)  # x0 = x - t v is constant over time
    out = grid_guided_velocity(x, 0.8, v, g, 2.0, torch.ones(10), torch.zeros(10))
    assert torch.isfinite(out).all() and torch.allclose(out, v)
