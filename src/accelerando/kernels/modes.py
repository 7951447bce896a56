"""When not to call a ``torch.compile``-d kernel: while a ``TorchDispatchMode`` is active.

Under a dispatch mode (``FlopCounterMode``, as the benchmark runner uses to count a backbone call's FLOPs) dynamo
does not run the compiled graph, and after one such call the compiled frame norms ran at eager speed for the rest of
the process (torch 2.13; this made the bench runner's compiled variants look no faster than eager ones). The
compiled kernels here therefore run their eager twin while a mode is active, so dynamo never sees those calls. The
C++ passes of :mod:`accelerando.quant.int8_conv` do the same: a mode sees no ctypes call, so it would miss them.
"""

from torch.utils._python_dispatch import is_in_torch_dispatch_mode

__all__ = ["dispatch_mode_active"]


def dispatch_mode_active() -> bool:
    """Whether a ``TorchDispatchMode`` is active (compiled kernels should run eagerly now)."""
    return bool(is_in_torch_dispatch_mode())
