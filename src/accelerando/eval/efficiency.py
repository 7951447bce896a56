"""Efficiency measurements: wall time and real-time factor, peak memory, FLOPs, and the machine's GEMM peak.

Definitions (version ``eff-v1``):
- RTF = seconds of audio produced / wall seconds (higher is faster); the wall time is the median of ``repeats``
  runs after ``warmup`` runs.
- Peak memory: the process's peak resident set size (``getrusage``, MB) on CPU; ``torch.cuda.max_memory_allocated``
  (MB) on a GPU.
- FLOPs: counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and convolutions, 2 per
  multiply-add; element-wise work is not counted). MACs = FLOPs / 2.
- GEMM peak: the best of ``repeats`` square ``n x n`` matrix products in ``dtype`` on this machine, in FLOP/s; the
  yardstick for "achieved FLOP/s".
- Throughput at batch B: audio seconds produced per wall second by one call that generates B items of
  ``item_seconds`` each (median wall time as above): ``B * item_seconds / wall``.
- Energy (GPU only): the NVML total-energy counter of the device (``nvmlDeviceGetTotalEnergyConsumption``, mJ)
  read before and after the call, in joules; ``None`` with a reason where there is no CUDA device or no
  ``pynvml`` module (package ``nvidia-ml-py``).
"""

import resource
import statistics
import time
from collections.abc import Callable

import torch

__all__ = [
    "EFFICIENCY_VERSION",
    "time_call",
    "time_interleaved",
    "rtf",
    "throughput",
    "gpu_energy_joules",
    "peak_memory_mb",
    "count_flops",
    "gemm_peak_flops",
]

EFFICIENCY_VERSION = "eff-v1"


def time_call(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs (CUDA synchronised)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats={repeats} must be >= 1 and warmup={warmup} >= 0")
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def time_interleaved(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Wall seconds of each named call over ``repeats`` rounds, one call of each per round (round-robin), so that
    machine noise hits every variant alike; no warm-up (do it before). CUDA synchronised."""
    if repeats < 0:
        raise ValueError(f"repeats={repeats} must be >= 0")
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeats):
        for k, fn in calls.items():
            sync()
            t = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t)
    return times


def rtf(audio_seconds: float, wall_seconds: float) -> float:
    """Real-time factor: audio seconds per wall second."""
    if wall_seconds <= 0:
        raise ValueError(f"wall_seconds={wall_seconds} must be positive")
    return audio_seconds / wall_seconds


def throughput(fn: Callable[[], object], batch: int, item_seconds: float, repeats: int = 3, warmup: int = 1) -> float:
    """Audio seconds per wall second of ``fn()``, a call that generates ``batch`` items of ``item_seconds`` each."""
    if batch < 1 or item_seconds <= 0:
        raise ValueError(f"batch={batch} must be >= 1 and item_seconds={item_seconds} positive")
    return batch * item_seconds / time_call(fn, repeats=repeats, warmup=warmup)


def gpu_energy_joules(fn: Callable[[], object], device: int = 0) -> tuple[float | None, str]:
    """Energy of one call of ``fn`` on CUDA ``device`` from NVML's energy counter: ``(joules, "")``, or
    ``(None, reason)`` without a CUDA device, without pynvml, or on a GPU without the counter."""
    if not torch.cuda.is_available():
        return None, "no CUDA device"
    try:
        import pynvml
    except ImportError:
        return None, "pynvml is not installed (pip install nvidia-ml-py)"
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device)
        torch.cuda.synchronize()
        before = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        fn()
        torch.cuda.synchronize()
        after = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except pynvml.NVMLError as err:
        return None, f"NVML: {err}"
    return (after - before) / 1000.0, ""


def peak_memory_mb(device: str = "cpu") -> float:
    """Peak resident memory of this process (CPU) or peak allocated CUDA memory, in MB."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` as counted by FlopCounterMode (matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def gemm_peak_flops(dtype: torch.dtype = torch.bfloat16, n: int = 2048, repeats: int = 5, device: str = "cpu") -> float:
    """Best measured FLOP/s of an ``n x n x n`` matrix product in ``dtype`` on ``device``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = min(time_call(lambda: a @ b, repeats=1, warmup=1 if i == 0 else 0) for i in range(repeats))
    return 2 * n**3 / best
