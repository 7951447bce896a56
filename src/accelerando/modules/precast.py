"""Cast a backbone's Conv1d / Linear weights to bf16 once, instead of at every call under autocast.

Under ``torch.autocast(dtype=torch.bfloat16)`` every convolution and matmul casts its float32 weight and bias to
bf16 on every call. Autocast caches those casts only while autograd records; under ``no_grad`` or
``inference_mode`` it casts them again at every call. For one sampler step on a short stretch of frames, the casts
are a large part of the work: a U-Net window of 584 frames ran about 11% faster with the weights already in bf16
(BENCHMARKS.md, "The per-frame U-Net becomes the built-in").

:class:`WeightCastCache` keeps one bf16 copy of each float32 ``nn.Conv1d`` / ``nn.Linear`` weight and bias. The
copy is made again when the parameter changes (another tensor, or an in-place update that bumps its version), and
dropped when the parameter is freed.
:meth:`WeightCastCache.swap` puts the copies in place for the duration of a ``with`` block. The result is
bit-identical to autocast's own cast, which rounds the same float32 values to bf16 the same way; a test checks
this.
"""

import weakref
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["WeightCastCache"]

_KINDS = (nn.Conv1d, nn.Linear)


class WeightCastCache:
    """bf16 copies of a module tree's float32 Conv1d / Linear parameters, for calls under bf16 autocast.

    A copy is tied to its parameter object (a weak reference; the copy is dropped when the parameter is freed) and
    to the parameter's storage and version counter, so ``load_state_dict``, in-place optimiser steps and ``.to()``
    are seen. Writes through ``param.data`` do not bump the version counter: call :meth:`clear` after them.
    """

    def __init__(self, dtype: torch.dtype = torch.bfloat16):
        self.dtype = dtype
        # id(param) -> (weak reference to the param, stamp, bf16 copy)
        self._copies: dict[int, tuple[weakref.ref, tuple, torch.Tensor]] = {}

    def clear(self) -> None:
        """Drop every copy (they are made again on the next call)."""
        self._copies.clear()

    def __len__(self) -> int:
        return len(self._copies)

    @staticmethod
    def _stamp(p: torch.Tensor) -> tuple:
        # inference tensors (made under torch.inference_mode) have no version counter
        version = -1 if p.is_inference() else p._version
        return (p.data_ptr(), version, p.device.type, p.device.index)

    def _copy(self, p: torch.Tensor) -> torch.Tensor:
        key, stamp = id(p), self._stamp(p)
        hit = self._copies.get(key)
        if hit is not None and hit[0]() is p and hit[1] == stamp:
            return hit[2]
        if hit is None or hit[0]() is not p:  # a new parameter: forget its copy when it is freed
            weakref.finalize(p, self._copies.pop, key, None)
        copy = p.detach().to(self.dtype)
        self._copies[key] = (weakref.ref(p), stamp, copy)
        return copy

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
