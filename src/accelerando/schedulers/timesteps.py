"""Timestep schedules for flow matching (rectified flow).

Convention, used by every scheduler here: ``t`` in ``[0, 1]``, ``t = 1`` is pure noise and ``t = 0`` is data,

    x_t = (1 - t) * x0 + t * noise,        v = noise - x0,        dx/dt = v.

A schedule is an increasing map ``f: [0, 1] -> [0, 1]`` with ``f(0) = 0`` and ``f(1) = 1`` applied to a uniform grid
``u``; sampling walks the grid from ``t_max`` down to 0. Schedules:

- ``"linear"``: ``t = u``.
- ``"shifted"``: the SD3 shift ``t = s * u / (1 + (s - 1) * u)``; ``s > 1`` spends more steps near noise, ``s = 1``
  is linear.
- ``"cosine"``: the cosine (VP) schedule mapped to rectified-flow time by matching signal-to-noise ratio,
  ``t = sin(pi u / 2) / (sin(pi u / 2) + cos(pi u / 2))``; denser at mid noise levels.
"""

import math

import torch

__all__ = ["SCHEDULES", "make_timesteps", "shift_time"]

SCHEDULES = ("linear", "shifted", "cosine")


def shift_time(t: torch.Tensor | float, shift: float) -> torch.Tensor | float:
    """SD3 time shift ``t' = s * t / (1 + (s - 1) * t)`` for ``t`` of any shape; maps 0 -> 0 and 1 -> 1."""
    return shift * t / (1 + (shift - 1) * t)


def _forward(u: torch.Tensor, schedule: str, shift: float) -> torch.Tensor:
    if schedule == "linear":
        return u
    if schedule == "shifted":
        return shift_time(u, shift)
    s, c = torch.sin(u * math.pi / 2), torch.cos(u * math.pi / 2)
    return s / (s + c)


def _inverse(t: float, schedule: str, shift: float) -> float:
    if schedule == "linear":
        return t
    if schedule == "shifted":
        return t / (shift - (shift - 1) * t)
    return 2 / math.pi * math.atan2(t, 1 - t)


def _check(n_steps: int, schedule: str, shift: float, t_max: float) -> None:
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps={n_steps!r} must be an int >= 1")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r} is not one of {SCHEDULES}")
    if not (math.isfinite(shift) and shift > 0):
        raise ValueError(f"shift={shift!r} must be a finite number > 0 (1 is linear, SD3 uses 3)")
    if not (0.0 <= t_max <= 1.0):
        raise ValueError(f"t_max={t_max!r} must be in [0, 1] (1 samples from pure noise, < 1 remixes an input)")


def make_timesteps(
    n_steps: int,
    schedule: str = "shifted",
    shift: float = 3.0,
    t_max: float = 1.0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Decreasing time grid ``[n_steps + 1]`` from ``t_max`` to 0 (both endpoints exact).

    With ``t_max < 1`` (audio-to-audio remix, ``strength = t_max``) the grid is the schedule's own curve cut at
    ``t_max``: ``u`` runs uniformly from ``f^-1(t_max)`` to 0, so the step density matches a full run's near 0.
    ``t_max = 0`` gives all zeros. ``shift`` only affects ``"shifted"``. Computed in float64, returned in ``dtype``.
    """
    _check(n_steps, schedule, shift, t_max)
    u_max = _inverse(float(t_max), schedule, shift)
    u = torch.linspace(u_max, 0.0, n_steps + 1, dtype=torch.float64)
    t = _forward(u, schedule, shift)
    t[0], t[-1] = t_max, 0.0
    return t.to(dtype=dtype, device=device)
