"""Second-order (Heun, trapezoidal) sampler for flow matching.

The predictor-corrector of diffusers' ``FlowMatchHeunDiscreteScheduler``. For each step ``t_k -> t_{k+1}``:

    predictor:  x' = x_k + h * v(x_k, t_k)                             (Euler, h = t_{k+1} - t_k)
    corrector:  x_{k+1} = x_k + h * (v(x_k, t_k) + v(x', t_{k+1})) / 2

The last step (to ``t = 0``) is a plain Euler step: the corrector would evaluate the model at ``t = 0``, where the
velocity of a sharp data distribution is singular. A full run of ``n`` steps therefore takes ``2 * n - 1`` model calls.
Shapes: ``sample`` and ``model_output`` share any shape, typically ``[B, T, D]``.
"""

import torch

from .flow_match_euler import FlowMatchConfig, SchedulerOutput, _compute_dtype, _FlowMatchBase

__all__ = ["FlowMatchHeunScheduler"]


class FlowMatchHeunScheduler(_FlowMatchBase):
    """Heun sampler: two model calls per step, one for the final step, ``2 * n - 1`` in all.

    ``timesteps`` holds the ``2n - 1`` evaluation times ``[t_0, t_1, t_1, t_2, t_2, ..., t_{n-1}, t_{n-1}]``: even
    indices are predictor calls (from ``t_k``), odd indices corrector calls (at ``t_{k+1}``, on the predicted
    sample). The scheduler keeps the predictor's ``x_k``, ``v(x_k, t_k)`` and ``h`` (upcast, like the arithmetic)
    until the corrector call, which ignores the ``sample`` it is passed in favour of that stored ``x_k``. Call
    ``step`` once per entry of ``timesteps``, in order, exactly as with :class:`FlowMatchEulerScheduler`::

        scheduler.set_timesteps(n)
        for i, t in enumerate(scheduler.timesteps):
            x = scheduler.step(model(x, t.expand(B)), i, x).prev_sample
    """

    order = 2
    n_evals_per_step = 2

    def __init__(self, config: FlowMatchConfig | None = None) -> None:
        super().__init__(config)
        self._reset_state()

    def _reset_state(self) -> None:
        self._x: torch.Tensor | None = None  # x_k, upcast to the compute dtype
        self._v: torch.Tensor | None = None  # v(x_k, t_k), upcast
        self._dt: float | None = None  # h = t_{k+1} - t_k
        self._pred_index: int | None = None  # timesteps index of the stored predictor

    @property
    def state_in_first_order(self) -> bool:
        """True when the next ``step`` is a predictor (no stored state), as in diffusers."""
        return self._dt is None

    def n_model_evals(self, n_steps: int) -> int:
        """Model calls a full run of ``n_steps`` takes: ``2 * n_steps - 1``."""
        return 2 * n_steps - 1

    def set_timesteps(self, n: int, t_max: float = 1.0, *, device: torch.device | str | None = None) -> None:
        """Build ``t_grid [n + 1]`` (float64, CPU) and ``timesteps [2n - 1]`` (float32, on ``device``)."""
        self._set_grid(n, t_max)
        grid = self.t_grid.tolist()
        times = [grid[0]]
        for t in grid[1:-1]:
            times += [t, t]
        self._set_eval_times(times, device)
        self._reset_state()

    def step(
        self, model_output: torch.Tensor, t_index_or_t: int | float | torch.Tensor, sample: torch.Tensor
    ) -> SchedulerOutput:
        """One predictor or corrector call (the index decides which).

        Args:
            model_output: velocity at (``sample``, ``timesteps[i]``), same shape as ``sample``.
            t_index_or_t: the index ``i`` into ``timesteps`` (int or integer tensor), or the time (float or floating
                tensor; a repeated time resolves to the next expected index).
            sample: the current sample, any shape, e.g. ``[B, T, D]``; at a corrector call, the predictor's output.

        Returns:
            :class:`SchedulerOutput`. After a predictor, ``prev_sample`` is the Euler prediction at ``t_{k+1}`` (for
            the last step, the final sample); after a corrector, the Heun sample at ``t_{k+1}``. Arithmetic in
            float32 (float64 for float64 input), cast back to ``sample.dtype``.
        """
        i = self._index(t_index_or_t)
        k = i // 2
        dtype = _compute_dtype(sample.dtype)
        v = model_output.to(dtype)
        x0 = sample.to(dtype) - self._eval_times[i] * v
        if i % 2 == 0:  # predictor from t_k (the last one, k = n - 1, is the final Euler step)
            x = sample.to(dtype)
            dt = self.t_grid[k + 1].item() - self.t_grid[k].item()
            prev = x + dt * v
            if k < self.n_steps - 1:
                self._x, self._v, self._dt, self._pred_index = x, v, dt, i
            else:
                self._reset_state()
        else:  # corrector at t_{k+1}
            if self._pred_index != i - 1:
                raise RuntimeError(
                    f"Heun corrector step {i} needs the predictor step {i - 1} just before it; "
                    "call step() once per timestep, in order"
                )
            prev = self._x + self._dt * (self._v + v) / 2
            self._reset_state()
        self._step_index = i + 1
        return SchedulerOutput(prev_sample=prev.to(sample.dtype), pred_original_sample=x0.to(sample.dtype))
