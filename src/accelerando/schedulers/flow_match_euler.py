"""First-order (Euler) sampler for flow matching, plus the config and output types every flow-match sampler shares.

Time convention (see :mod:`accelerando.schedulers.timesteps`): ``x_t = (1 - t) * x0 + t * noise``, the model predicts
the velocity ``v = noise - x0`` and sampling integrates ``dx/dt = v`` from ``t_max`` down to 0. Shapes: ``sample`` and
``model_output`` share any shape, typically ``[B, T, D]`` (backbone) or ``[B, D, T]`` (codec latent).

Few-step sampling: ``FlowMatchEulerScheduler`` with a small ``n`` (e.g. 4) and the default ``"shifted"`` schedule is
the intended few-step setting; straight trajectories are integrated exactly by Euler, so the fewer steps a model
needs, the straighter its flow.
"""

import math
from dataclasses import asdict, dataclass

import torch

from .timesteps import SCHEDULES, make_timesteps

__all__ = ["FlowMatchConfig", "FlowMatchEulerScheduler", "SchedulerOutput"]

FLOW_MATCH_CONFIG_VERSION = 1


@dataclass
class FlowMatchConfig:
    schedule: str = "shifted"  # time grid: "linear", "shifted" (SD3 shift) or "cosine"
    shift: float = 3.0  # SD3 shift s for "shifted": t' = s t / (1 + (s - 1) t); s > 1 spends more steps near noise
    version: int = FLOW_MATCH_CONFIG_VERSION

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r} is not one of {SCHEDULES}")
        if isinstance(self.shift, bool) or not isinstance(self.shift, (int, float)):
            raise ValueError(f"shift={self.shift!r} must be a number > 0")
        if not (math.isfinite(self.shift) and self.shift > 0):
            raise ValueError(f"shift={self.shift!r} must be a finite number > 0 (1 is linear, SD3 uses 3)")
        if self.version != FLOW_MATCH_CONFIG_VERSION:
            raise ValueError(
                f"version={self.version!r}: flow-match config version not supported "
                f"(expected {FLOW_MATCH_CONFIG_VERSION})"
            )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SchedulerOutput:
    """Result of one ``step``.

    Args:
        prev_sample: the sample at the next (lower) time, same shape and dtype as the input ``sample``.
        pred_original_sample: the model's data estimate ``x0 = x_t - t * v`` at the evaluated point, same shape and
            dtype; for previews.
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # fp16/bf16 -> fp32; fp64 stays fp64
    return torch.promote_types(dtype, torch.float32)


class _FlowMatchBase:
    """Shared state: config, the time grid, index lookup and ``add_noise``."""

    order: int = 1
    n_evals_per_step: int = 1

    def __init__(self, config: FlowMatchConfig | None = None) -> None:
        self.config = config or FlowMatchConfig()
        self.t_grid: torch.Tensor | None = None  # [n + 1] float64 on CPU, t_max -> 0
        self.timesteps: torch.Tensor | None = None  # [n_model_evals] float32, the model-evaluation times
        self._eval_times: list[float] = []  # timesteps as Python floats (float64), for lookup and step sizes
        self._step_index: int | None = None  # index the next step() call is expected at

    @property
    def n_steps(self) -> int:
        if self.t_grid is None:
            raise RuntimeError("call set_timesteps(n) before sampling")
        return len(self.t_grid) - 1

    def n_model_evals(self, n_steps: int) -> int:
        """Model calls a full run of ``n_steps`` takes."""
        return n_steps

    def _set_grid(self, n_steps: int, t_max: float) -> None:
        cfg = self.config
        self.t_grid = make_timesteps(n_steps, cfg.schedule, cfg.shift, t_max, dtype=torch.float64)
        self._step_index = 0

    def _set_eval_times(self, times: list[float], device: torch.device | str | None) -> None:
        self._eval_times = times
        self.timesteps = torch.tensor(times, dtype=torch.float32, device=device)

    def _index(self, t: int | float | torch.Tensor) -> int:
        """Index into ``self.timesteps``: ints (and integer tensors) are indices, floats are times."""
        if self.timesteps is None:
            raise RuntimeError("call set_timesteps(n) before step()")
        n = len(self.timesteps)
        if isinstance(t, torch.Tensor):
            if t.numel() != 1:
                raise ValueError(f"step() takes one timestep, got a tensor of shape {tuple(t.shape)}")
            t = t.item() if t.is_floating_point() else int(t.item())
        if isinstance(t, int) and not isinstance(t, bool):
            if not 0 <= t < n:
                raise ValueError(f"step index {t} is out of range for {n} timesteps")
            return t
        i = self._step_index
        if i is not None and i < n and math.isclose(self._eval_times[i], t, rel_tol=0, abs_tol=1e-6):
            return i  # the expected one (times repeat in Heun's schedule)
        for j, tj in enumerate(self._eval_times):
            if math.isclose(tj, t, rel_tol=0, abs_tol=1e-6):
                return j
        raise ValueError(f"t={t!r} is not one of this scheduler's timesteps; pass the step index instead")

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """``x_t = (1 - t) * x0 + t * noise``, for remix (``t = strength``) and inpainting.

        Args:
            x0: clean data, e.g. ``[B, T, D]``.
            noise: standard normal noise, same shape.
            t: a float, or a tensor ``[]`` or ``[B]`` (one time per batch item).

        Returns:
            ``x_t`` with ``x0``'s shape and dtype, computed in float32 (``t = 0`` returns ``x0``'s values).
        """
        if noise.shape != x0.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} must equal x0 shape {tuple(x0.shape)}")
        dtype = _compute_dtype(x0.dtype)
        t = torch.as_tensor(t, dtype=dtype, device=x0.device)
        if t.ndim == 1:
            t = t.reshape(-1, *([1] * (x0.ndim - 1)))  # [B] -> [B, 1, ...]
        elif t.ndim != 0:
            raise ValueError(f"t must be a float or a tensor of shape [] or [B], got shape {tuple(t.shape)}")
        return ((1 - t) * x0.to(dtype) + t * noise.to(dtype)).to(x0.dtype)


class FlowMatchEulerScheduler(_FlowMatchBase):
    """Euler sampler for flow matching: ``x_{k+1} = x_k + (t_{k+1} - t_k) * v(x_k, t_k)``.

    A full run of ``n`` steps takes exactly ``n`` model calls, at ``timesteps[0..n-1]`` (``t_max`` down to the last
    nonzero time; the model is never called at ``t = 0``).

    Usage::

        scheduler.set_timesteps(n)
        for i, t in enumerate(scheduler.timesteps):
            x = scheduler.step(model(x, t.expand(B)), i, x).prev_sample
    """

    order = 1
    n_evals_per_step = 1

    def set_timesteps(self, n: int, t_max: float = 1.0, *, device: torch.device | str | None = None) -> None:
        """Build the grid ``t_grid [n + 1]`` (float64, CPU) and ``timesteps [n]`` (float32, on ``device``).

        Both run from ``t_max`` down; ``t_grid`` ends at 0, ``timesteps`` at the last nonzero time.
        """
        self._set_grid(n, t_max)
        self._set_eval_times(self.t_grid[:-1].tolist(), device)

    def step(
        self, model_output: torch.Tensor, t_index_or_t: int | float | torch.Tensor, sample: torch.Tensor
    ) -> SchedulerOutput:
        """One Euler step from ``timesteps[i]`` to the next grid time.

        Args:
            model_output: velocity ``v`` at (``sample``, ``timesteps[i]``), same shape as ``sample``.
            t_index_or_t: the step index ``i`` (int or integer tensor) or the time ``timesteps[i]`` (float or
                floating tensor).
            sample: ``x_t``, any shape, e.g. ``[B, T, D]``.

        Returns:
            :class:`SchedulerOutput`; the arithmetic is done in float32 (float64 for float64 input) and cast back to
            ``sample.dtype``.
        """
        i = self._index(t_index_or_t)
        dtype = _compute_dtype(sample.dtype)
        t, t_next = self.t_grid[i].item(), self.t_grid[i + 1].item()
        x, v = sample.to(dtype), model_output.to(dtype)
        prev = x + (t_next - t) * v
        x0 = x - t * v
        self._step_index = i + 1
        return SchedulerOutput(prev_sample=prev.to(sample.dtype), pred_original_sample=x0.to(sample.dtype))
