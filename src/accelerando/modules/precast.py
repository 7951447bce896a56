"""Cast a backbone's Conv1d / Linear weights to bf16 once, instead of at every call under autocast.

Under ``torch.autocast(dtype=torch.bfloat16)`` every convolution and matmul casts its float32 weight and bias to
bf16 on every call. Autocast caches those casts only while autograd records; under ``no_grad`` or
``inference_mode`` it casts them again at every call. For one sampler step on a short stretch of frames, the casts
are a large part of the work: a U-Net window of 584 frames ran about 11% faster with the weights already in bf16
(BENCHMARKS.md, "The per-frame U-Net becomes the built-in").

:class:`WeightCastCache` keeps one bf16 copy of each float32 ``nn.Conv1d`` / ``nn.Linear`` weight and bias. The
copy is made again when the parameter changes (another tensor, or an in-place update that bumps its version).
:meth:`WeightCastCache.swap` puts the copies in place for the duration of a ``with`` block. The result is
bit-identical to autocast's own cast, which rounds the same float32 values to bf16 the same way; a test checks
this.
"""

from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["WeightCastCache"]

_KINDS = (nn.Conv1d, nn.Linear)


class WeightCastCache:
    """bf16 copies of a module tree's float32 Conv1d / Linear parameters, for calls under bf16 autocast."""

    def __init__(self, dtype: torch.dtype = torch.bfloat16):
        self.dtype = dtype
        self._copies: dict[int, tuple[int, int, int, torch.Tensor]] = {}  # id -> (data_ptr, version, device, copy)

    def _copy(self, p: torch.Tensor) -> torch.Tensor:
        key = id(p)
        stamp = (p.data_ptr(), p._version, p.device.index or 0)
        hit = self._copies.get(key)
        if hit is None or hit[:3] != stamp:
            hit = (*stamp, p.detach().to(self.dtype))
            self._copies[key] = hit
        return hit[3]

    @contextmanager
    def swap(self, module: nn.Module, enabled: bool = True):
        """Inside: each float32 weight / bias of ``module``'s ``nn.Conv1d`` and ``nn.Linear`` layers is its bf16 copy.
        Only for calls under bf16 autocast (which would cast them anyway); ``enabled=False`` does nothing."""
        swapped: list[tuple[nn.Module, str, torch.Tensor]] = []
        try:
            for m in module.modules() if enabled else ():
                if type(m) not in _KINDS:
                    continue
                for name in ("weight", "bias"):
                    p = m._parameters.get(name)
                    if p is not None and p.dtype == torch.float32:
                        copy = self._copy(p)
                        swapped.append((m, name, p))
                        m._parameters[name] = copy
            yield module
        finally:
            for m, name, p in swapped:
                m._parameters[name] = p
