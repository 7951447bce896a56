"""Efficiency probes for the runner: per-clip peak memory and FLOPs of one backbone call.

- Peak RSS: on Linux the kernel's high-water mark ``VmHWM`` is reset before each clip (``/proc/self/clear_refs``
  = 5), so each clip reports the peak resident memory of the process while it was generated (the model, the
  activations and whatever else the process holds), and ``rss_start_mb`` the resident memory when it started, so
  ``peak - start`` is what the generation itself added. Elsewhere ``getrusage`` gives the peak since the process
  started (``rss_scope = "process"``). On CUDA, ``torch.cuda.max_memory_allocated`` after a peak reset.
- FLOPs: the first call of ``pipeline.model.dit`` is recorded (inputs and autocast state) by a forward pre-hook;
  the same call is then replayed once under ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions,
  2 FLOPs per multiply-add, as in ``accelerando.eval.efficiency``). The hook also counts backbone calls per clip.
"""

import resource
from pathlib import Path

import torch

__all__ = ["PeakMemory", "BackboneProbe", "model_size"]

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _status_mb(field: str) -> float | None:
    """A ``/proc/self/status`` memory field (``VmHWM``, ``VmRSS``) in MB, or None off Linux."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB -> MB
    except (OSError, ValueError):
        return None
    return None


class PeakMemory:
    """``reset()`` before a clip, ``read()`` after it: peak RSS (and CUDA memory) during the clip."""

    def __init__(self) -> None:
        self.scope = "clip"
        self.start = None

    def reset(self) -> None:
        try:
            _CLEAR_REFS.write_text("5")
            self.scope = "clip"
        except OSError:
            self.scope = "process"
        self.start = _status_mb("VmRSS")
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats()

    def read(self) -> dict:
        rss = _status_mb("VmHWM") if self.scope == "clip" else None
        if rss is None:
            self.scope = "process"
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        cuda = None
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            cuda = torch.cuda.max_memory_allocated() / 2**20
        return {"peak_rss_mb": rss, "rss_start_mb": self.start, "rss_scope": self.scope, "cuda_max_mb": cuda}


def _backbone(pipeline):
    model = getattr(pipeline, "model", None)
    dit = getattr(model, "dit", None)
    return dit if isinstance(dit, torch.nn.Module) else None


class BackboneProbe:
    """Counts backbone calls and their batch rows, and keeps the first call's inputs for one FLOP-counted replay.

    Calls differ in rows when guidance runs on some steps only (``guidance_interval``): the backbone's FLOPs are
    linear in the rows, so :attr:`flop_rows` scales the replayed call's count to the clip's."""

    def __init__(self, pipeline) -> None:
        self.module = _backbone(pipeline)
        self.calls = 0
        self.rows: list[int] = []  # batch rows of each call
        self.first = None
        self._handle = None

    @property
    def flop_rows(self) -> float:
        """Total rows of all calls over the first call's rows: ``flops_per_clip = flops_of_first_call * this``."""
        if not self.rows or not self.rows[0]:
            return float(self.calls)
        return sum(self.rows) / self.rows[0]

    @property
    def available(self) -> bool:
        return self.module is not None

    def __enter__(self):
        if self.module is not None:
            self._handle = self.module.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _hook(self, module, args, kwargs):
        self.calls += 1
        x = next((a for a in args if isinstance(a, torch.Tensor)), None)
        self.rows.append(int(x.shape[0]) if x is not None and x.dim() > 0 else 1)
        if self.first is None:
            dev = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
            autocast = torch.is_autocast_enabled(dev)
            dtype = torch.get_autocast_dtype(dev) if autocast else None
            self.first = (args, kwargs, dev, autocast, dtype)

    def count_flops(self) -> dict | None:
        """Replay the first recorded call under FlopCounterMode: ``{"flops", "macs", "batch", "frames"}``."""
        if self.module is None or self.first is None:
            return None
        from torch.utils.flop_counter import FlopCounterMode

        args, kwargs, dev, autocast, dtype = self.first
        x = next((a for a in args if isinstance(a, torch.Tensor)), None)
        self.__exit__()
        with torch.inference_mode(), torch.autocast(dev, dtype=dtype, enabled=autocast):
            with FlopCounterMode(display=False) as counter:
                self.module(*args, **kwargs)
        flops = int(counter.get_total_flops())
        return {
            "flops": flops,
            "macs": flops // 2,
            "batch": int(x.shape[0]) if x is not None and x.dim() > 0 else None,
            "frames": int(x.shape[1]) if x is not None and x.dim() > 1 else None,
        }


def model_size(pipeline) -> dict:
    """Parameter count and bytes (parameters + buffers) of ``pipeline.model`` (the generator)."""
    model = getattr(pipeline, "model", None)
    if not isinstance(model, torch.nn.Module):
        return {"params": None, "model_bytes": None}
    params = sum(p.numel() for p in model.parameters())
    nbytes = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    return {"params": int(params), "model_bytes": int(nbytes)}
