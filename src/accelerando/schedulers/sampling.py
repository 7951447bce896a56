"""A sampling loop that drives any flow-match scheduler with a velocity model.

Shapes: ``noise`` / ``x_init`` / result ``[B, ...]`` (e.g. ``[B, T, D]``); the model gets ``t_batch [B]``.
"""

from collections.abc import Callable

import torch

from .flow_match_euler import FlowMatchEulerScheduler
from .flow_match_heun import FlowMatchHeunScheduler

__all__ = ["ModelFn", "sample"]

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x [B, ...], t [B]) -> velocity [B, ...]


def sample(
    model_fn: ModelFn,
    noise: torch.Tensor,
    scheduler: FlowMatchEulerScheduler | FlowMatchHeunScheduler,
    n_steps: int,
    t_max: float = 1.0,
    x_init: torch.Tensor | None = None,
    callback: Callable[[int, float, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Integrate ``dx/dt = model_fn(x, t)`` from ``t_max`` down to 0.

    Args:
        model_fn: ``(x [B, ...], t_batch [B] float32) -> velocity [B, ...]``, the predicted ``noise - x0``.
        noise: starting noise ``[B, ...]``, drawn with :func:`~accelerando.schedulers.randn_tensor`.
        scheduler: a :class:`FlowMatchEulerScheduler` (``n_steps`` model calls) or :class:`FlowMatchHeunScheduler`
            (``2 * n_steps - 1`` model calls); ``scheduler.n_model_evals(n_steps)`` says which.
        n_steps: integration steps, ``>= 1`` (few-step: Euler with e.g. 4 and the ``"shifted"`` schedule).
        t_max: start time in ``[0, 1]``. 1 starts from pure noise; ``< 1`` (remix, ``strength = t_max``) starts from
            ``add_noise(x_init, noise, t_max)`` and needs ``x_init``. ``t_max = 0`` returns a copy of ``x_init``
            without calling the model.
        x_init: data to remix ``[B, ...]``, same shape as ``noise``; with ``t_max = 1`` it has no effect.
        callback: called after each model call as ``callback(i, t, x)`` with the ``timesteps`` index, its time and
            the sample the scheduler returned.

    Returns:
        The sample at ``t = 0``, shape and dtype of ``noise`` (of ``x_init`` when given).

    The loop does not disable autograd; wrap it in ``torch.inference_mode()`` for inference.
    """
    if x_init is None and t_max < 1:
        raise ValueError(f"t_max={t_max!r} < 1 starts from a partly noised input; pass x_init (or use t_max=1)")
    if x_init is not None and x_init.shape != noise.shape:
        raise ValueError(f"x_init shape {tuple(x_init.shape)} must equal noise shape {tuple(noise.shape)}")
    scheduler.set_timesteps(n_steps, t_max=t_max, device=noise.device)  # validates n_steps and t_max
    if x_init is None:
        x = noise
    elif t_max == 0:
        return x_init.clone()
    else:
        x = scheduler.add_noise(x_init, noise, t_max)
    batch = x.shape[0]
    for i, t in enumerate(scheduler.timesteps):
        v = model_fn(x, t.expand(batch))
        x = scheduler.step(v, i, x).prev_sample
        if callback is not None:
            callback(i, float(t), x)
    return x
