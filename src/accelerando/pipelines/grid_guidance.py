"""Beat-grid guidance: steer the sampler's clean-latent estimate so that its onsets fall on the requested beats.

The built-in codec's latent is a log-mel spectrogram (``CodecConfig.latent == "mel"``), so an onset envelope can be
read off any latent estimate: the spectral flux ``f[t] = mean_d max(m[t, d] - m[t-1, d], 0)`` of the log-mel ``m``.
At every sampler step whose flow time lies in :data:`GRID_INTERVAL` the pipeline

1. forms the rectified-flow estimate of the clean latent, ``x0 = x - t v`` (known frames of an edit: the known
   latent itself);
2. scores it with :func:`grid_score`: the correlation of the mean-removed flux with a pulse train on the requested
   beat grid (:func:`pulse_template`: a von Mises bump of concentration :data:`GRID_KAPPA` at every beat, built from
   the same beat phases the model is conditioned on);
3. moves ``x0`` up the score's gradient (:func:`grid_score_grad`, closed form) by ``strength`` times the normalised
   latent's unit RMS, on the frames being generated only;
4. hands the scheduler the velocity that points at the moved estimate, ``v' = (x - x0') / t``.

Only the score is differentiated, never the backbone, so a guided step costs a few element-wise passes over the
latent on top of the backbone call. Guidance on a differentiable loss of the ``x0`` estimate is "universal
guidance" (Bansal et al., 2023); DITTO (Novack et al., 2024) controls rhythm with an onset-based loss, by optimising
the initial noise instead. No library ships it for a log-mel latent, hence this file.

The beat tracker of ``benchmarks/generator_adherence.py`` also reads an onset envelope (librosa's, from the decoded
audio), so the FAD and pulse figures next to every adherence figure in BENCHMARKS.md are the check that the guidance
moves the music onto the grid rather than stamping clicks on it.

Shapes: ``x``, ``v``, ``x0`` [B, T, D] normalised latents (``D`` mel bands); ``phases`` [T, 4] (sin, cos of the beat
phase; sin, cos of the bar phase); ``template`` [T].
"""

import numbers
from collections.abc import Callable

import torch

from accelerando.errors import UserError

__all__ = [
    "GRID_INTERVAL",
    "GRID_KAPPA",
    "MAX_GRID_GUIDANCE",
    "check_grid_guidance",
    "grid_guided_velocity",
    "grid_score",
    "grid_score_grad",
    "guided_velocity",
    "at_guided_times",
    "in_interval",
    "make_grid_guidance",
    "pulse_template",
    "unit_step",
]

GRID_INTERVAL = (0.6, 0.95)  # flow times guided (1 = noise): the onsets' placement is settled early
GRID_KAPPA = 64.0  # von Mises concentration of each beat's bump (about a twentieth of a beat wide at half height)
MAX_GRID_GUIDANCE = 4.0
_EPS = 1e-6


def check_grid_guidance(value, name: str = "grid_guidance") -> float:
    """``value`` as a strength: a real number in ``[0, MAX_GRID_GUIDANCE]`` or ``"off"`` (0); UserError naming
    ``name`` and the value."""
    if isinstance(value, str) and value == "off":
        return 0.0
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= MAX_GRID_GUIDANCE:
        raise UserError(f"{name}={value!r}; use a strength between 0 and {MAX_GRID_GUIDANCE:g}, or 'off'")
    return float(value)


def pulse_template(phases: torch.Tensor, kappa: float | None = None) -> torch.Tensor:
    """``phases`` [T, 4] -> zero-mean, unit-norm pulse train [T] peaking at every beat (beat phase 0); ``kappa``:
    the bumps' concentration (None: :data:`GRID_KAPPA`)."""
    kappa = GRID_KAPPA if kappa is None else kappa
    g = torch.exp(kappa * (phases[:, 1].double() - 1))  # phases[:, 1] = cos(2 pi beat phase)
    g = g - g.mean()
    return (g / g.norm().clamp(min=_EPS)).float()


def _flux(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mel ``m`` [B, T, D] -> (flux [B, T] with ``f[:, 0] = 0``, rise mask [B, T-1, D])."""
    d = m[:, 1:] - m[:, :-1]
    rise = d > 0
    f = torch.zeros(m.shape[0], m.shape[1], dtype=m.dtype, device=m.device)
    f[:, 1:] = (d * rise).mean(-1)
    return f, rise


def grid_score(m: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """Correlation [B] in ``[-1, 1]`` of the mean-removed flux of log-mel ``m`` [B, T, D] with ``template`` [T]."""
    f, _ = _flux(m)
    fc = f - f.mean(1, keepdim=True)
    return (fc * template).sum(1) / fc.norm(dim=1).clamp(min=_EPS)


def grid_score_grad(m: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """Gradient [B, T, D] of :func:`grid_score` (summed over the batch) with respect to ``m``, in closed form."""
    f, rise = _flux(m)
    fc = f - f.mean(1, keepdim=True)
    n = fc.norm(dim=1, keepdim=True).clamp(min=_EPS)  # [B, 1]
    score = (fc * template).sum(1, keepdim=True) / n
    # d score / d f: the centring is absorbed because template and fc are both zero-mean
    df = (template - template.mean() - score * fc / n) / n  # [B, T]
    per = rise.to(m.dtype) * (df[:, 1:, None] / m.shape[-1])  # d f[t] / d m[t, d] for t >= 1
    grad = torch.zeros_like(m)
    grad[:, 1:] += per
    grad[:, :-1] -= per
    return grad


def grid_guided_velocity(
    x: torch.Tensor,
    t: float,
    v: torch.Tensor,
    template: torch.Tensor,
    strength: float,
    latent_std: torch.Tensor,
    latent_mean: torch.Tensor,
    free: torch.Tensor | None = None,
    known: torch.Tensor | None = None,
) -> torch.Tensor:
    """The velocity [B, T, D] that points at the grid-guided clean estimate (steps 1-4 of the module docstring).

    ``x``, ``v`` [B, T, D] at flow time ``t`` > 0; ``latent_std`` / ``latent_mean`` [D] undo the latent
    normalisation (the log-mel is ``x * std + mean``); ``free`` [B, T] (1 = generated) limits the move to the frames
    being generated and ``known`` [B, T, D] is the clean latent of the other frames (an edit), both or neither.
    """
    return guided_velocity(
        x, t, v, lambda m: grid_score_grad(m, template), strength, latent_std, latent_mean, free, known
    )


def guided_velocity(
    x: torch.Tensor,
    t: float,
    v: torch.Tensor,
    score_grad: Callable[[torch.Tensor], torch.Tensor],
    strength: float,
    latent_std: torch.Tensor,
    latent_mean: torch.Tensor,
    free: torch.Tensor | None = None,
    known: torch.Tensor | None = None,
) -> torch.Tensor:
    """Steps 1, 3 and 4 of the module docstring for any score: ``score_grad(m [B, T, D]) -> d score / d m`` on the
    log-mel of the clean estimate; arguments otherwise as :func:`grid_guided_velocity`."""
    if strength == 0 or t <= 0:
        return v
    x, v = x.float(), v.float()
    x0 = x - t * v
    if known is not None:
        x0 = torch.where(free[..., None] > 0, x0, known.float())
    grad = score_grad(x0 * latent_std + latent_mean) * latent_std  # d score / d x0
    return (x - (x0 + strength * unit_step(grad, free))) / t


def at_guided_times(
    move: Callable[[torch.Tensor, float, torch.Tensor], torch.Tensor], scale: float = 1.0
) -> Callable[[torch.Tensor, float, torch.Tensor], torch.Tensor]:
    """``(x, t, v) -> v'``: ``move`` at the flow times :func:`in_interval` accepts (``scale``: a remix's strength),
    ``v`` unchanged at the others."""

    def apply(x: torch.Tensor, t: float, v: torch.Tensor) -> torch.Tensor:
        return move(x, t, v) if in_interval(t, scale) else v

    return apply


def unit_step(grad: torch.Tensor, free: torch.Tensor | None = None) -> torch.Tensor:
    """``grad`` [B, T, D] scaled to unit RMS over the frames being generated (``free`` [B, T], 1 = generated; all
    frames when None), zero on the others: the same size of move for a generated clip and for a short inpaint.
    A zero gradient stays zero."""
    if free is not None:
        grad = grad * free[..., None]
        n = free.sum(1).clamp(min=1)[:, None, None] * grad.shape[-1]  # [B, 1, 1] generated values
    else:
        n = grad.shape[1] * grad.shape[2]
    rms = (grad.pow(2).sum(dim=(1, 2), keepdim=True) / n).sqrt()
    return torch.where(rms > 0, grad / rms.clamp(min=1e-12), torch.zeros_like(grad))


def in_interval(t: float, scale: float = 1.0) -> bool:
    """Whether flow time ``t`` is guided (:data:`GRID_INTERVAL` times ``scale``: a remix's strength; inclusive)."""
    lo, hi = (scale * b for b in GRID_INTERVAL)
    return lo - 1e-6 <= t <= hi + 1e-6


def make_grid_guidance(
    phases: torch.Tensor, strength: float, model, scale: float = 1.0, free=None, known=None
) -> Callable[[torch.Tensor, float, torch.Tensor], torch.Tensor] | None:
    """``(x, t, v) -> v'`` applying grid guidance at the guided flow times, or None when ``strength`` is 0.

    ``phases`` [T, 4]; ``model``: the generator (its backbone holds ``latent_std`` / ``latent_mean`` [D]).
    """
    if not strength:
        return None
    template = pulse_template(phases)
    std, mean = model.dit.latent_std.float(), model.dit.latent_mean.float()
    return at_guided_times(
        lambda x, t, v: grid_guided_velocity(x, t, v, template, strength, std, mean, free, known), scale
    )
