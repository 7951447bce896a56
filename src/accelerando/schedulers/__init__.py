"""Flow-matching (rectified-flow) samplers: time schedules, Euler and Heun steppers, the noise helper and a loop.

Convention: ``x_t = (1 - t) * x0 + t * noise`` with ``t = 1`` pure noise and ``t = 0`` data; models predict the
velocity ``v = noise - x0``. Dims in docstrings: ``B`` batch, ``T`` frames, ``D`` latent channels. No model code here.
"""

from .flow_match_euler import FlowMatchConfig, FlowMatchEulerScheduler, SchedulerOutput
from .flow_match_heun import FlowMatchHeunScheduler
from .randomness import randn_tensor
from .sampling import ModelFn, sample
from .timesteps import SCHEDULES, make_timesteps, shift_time

__all__ = [
    "SCHEDULES",
    "FlowMatchConfig",
    "FlowMatchEulerScheduler",
    "FlowMatchHeunScheduler",
    "ModelFn",
    "SchedulerOutput",
    "make_timesteps",
    "randn_tensor",
    "sample",
    "shift_time",
]
