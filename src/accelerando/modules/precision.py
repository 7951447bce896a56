"""Whether a device computes in bf16 autocast or in float32: bf16 only where the hardware has bf16 arithmetic.

bf16 autocast halves the bytes every layer moves and, on CPUs with AVX512-BF16 (or AMX), runs GEMMs several times
faster than float32 (the dev CPU: 4.7x). On CPUs without native bf16 (AVX2 laptops and servers) PyTorch converts
each bf16 operand to float32 and back inside its kernels, and the same work ran many times slower than in float32
(BENCHMARKS.md, "Generation on a CPU without bf16 arithmetic"). So :func:`use_bf16` decides per device:

- CUDA: bf16 on GPUs with bf16 tensor cores (compute capability 8.0, Ampere, or newer; ROCm GPUs);
- CPU: bf16 where the CPU has AVX512-BF16 or AMX tiles (``torch.cpu._is_avx512_bf16_supported`` /
  ``_is_amx_tile_supported``), else float32 (ARM CPUs with bf16 instructions included: not detected yet);
- anything else: float32.

``ACCELERANDO_BF16=1`` (or ``0``) forces the choice; unset or ``auto`` decides as above. Outputs at one seed differ
between the two precisions by bf16 rounding, as between two machines.
"""

import functools
import os

import torch

from accelerando.errors import UserError

__all__ = ["BF16_ENV", "use_bf16", "autocast"]

BF16_ENV = "ACCELERANDO_BF16"
_ON, _OFF = ("1", "true", "on", "yes"), ("0", "false", "off", "no")


@functools.cache  # asked at every backbone call; the CPU does not change
def _cpu_has_bf16() -> bool:
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(bool(f()) for f in checks if f is not None)


def use_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether computations on ``device`` run under bf16 autocast (see the module doc); ``UserError`` naming a bad
    ``ACCELERANDO_BF16`` value."""
    value = os.environ.get(BF16_ENV, "auto").strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    if value not in ("", "auto"):
        raise UserError(f"{BF16_ENV}={value!r}; use 1 (bf16), 0 (float32) or auto")
    dev = torch.device(device)
    if dev.type == "cuda":
        return _cuda_has_bf16(dev)
    return dev.type == "cpu" and _cpu_has_bf16()


def _cuda_has_bf16(dev: torch.device) -> bool:
    """bf16 tensor cores: compute capability 8.0 (Ampere) or newer, or a ROCm GPU. ``torch.cuda.is_bf16_supported()``
    also says yes for older GPUs that only emulate bf16, and checks the current device rather than ``dev``."""
    if not torch.cuda.is_available():
        return False
    if torch.version.hip is not None:
        return True
    return torch.cuda.get_device_capability(dev)[0] >= 8


def autocast(device: str | torch.device = "cpu") -> torch.autocast:
    """``torch.autocast`` to bf16 on ``device`` where :func:`use_bf16` says so, else a disabled one (float32)."""
    dev = torch.device(device)
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16(dev))
