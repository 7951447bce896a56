"""Pure-torch reference primitives: symmetric weight / activation quantization, int4 packing, int8 GEMM.

Dims: ``N`` output features, ``K`` input features, ``M`` tokens (all leading dims of an activation flattened),
``G`` groups per row (``K // group_size``, or 1 for per-channel scales).
"""

import functools
import struct

import torch

from accelerando.errors import env_choice

__all__ = [
    "qrange",
    "quantize_weight",
    "scale_dtype",
    "dequantize_weight",
    "fold_group_scales",
    "pack_int4",
    "unpack_int4",
    "quantize_per_token",
    "quantize_per_tensor_u8",
    "u8_offset",
    "int8_mm",
    "int8_mm_reference",
    "int8_mm_float",
    "int_mm_supported",
    "int_mm_native",
    "int_mm_setting",
    "INT_MM_ENV",
]

_EPS = torch.finfo(torch.float32).eps


def qrange(bits: int, full_range: bool = False) -> tuple[int, int]:
    """Integer range of a signed ``bits`` code: restricted ``[-(2^(b-1)-1), 2^(b-1)-1]`` or full ``[-2^(b-1), ...]``."""
    hi = 2 ** (bits - 1) - 1
    return (-hi - 1 if full_range else -hi), hi


def _scale(amax: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    # restricted range: amax / qmax; full range (torchao): amax / ((qmax - qmin) / 2)
    return (amax / ((qmax - qmin) / 2)).clamp(min=_EPS)


def scale_dtype(group_size: int | None) -> torch.dtype:
    """The dtype weight scales are stored in: float16 per group (one scale per ``group_size`` weights, where fp32
    would add 4 bytes per 32 bytes of 4-bit codes at group 64; float16's 11-bit significand keeps the scales
    low-rank recovery trains finer than bfloat16 would), float32 per output channel (4 bytes a row)."""
    return torch.float16 if group_size else torch.float32


def quantize_weight(
    w: torch.Tensor, bits: int, group_size: int | None = None, full_range: bool = False, clip: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric round-to-nearest of ``w`` [N, K] -> (``q`` int8 [N, K], ``scale`` [N, G] in :func:`scale_dtype`).

    ``q`` holds ``bits``-bit values in int8 (pack 4-bit codes with :func:`pack_int4`). ``clip`` < 1 shrinks each
    group's range to ``clip * absmax`` (finer steps; the largest values are clamped). The codes are rounded against
    the stored (float16 for groups) scale, so ``q * scale`` is exactly the weight the layer stands for.
    """
    n, k = w.shape
    g = group_size or k
    if k % g:
        raise ValueError(f"group_size={group_size} does not divide in_features={k}")
    qmin, qmax = qrange(bits, full_range)
    wg = w.detach().float().reshape(n, k // g, g)  # [N, G, g]
    dtype = scale_dtype(group_size)
    scale = _scale(wg.abs().amax(dim=-1, keepdim=True) * clip, qmin, qmax)  # [N, G, 1]
    if dtype == torch.float16:  # never zero (float16's smallest subnormal), never infinite (its largest finite)
        scale = scale.clamp(min=2.0**-24, max=65504.0)
    scale = scale.to(dtype).float()
    q = torch.clamp(torch.round(wg / scale), qmin, qmax).to(torch.int8).reshape(n, k)
    return q, scale.squeeze(-1).to(dtype)


def dequantize_weight(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``q`` int8 [N, K] and ``scale`` [N, G] -> weight [N, K] in ``dtype``."""
    n, k = q.shape
    g = scale.shape[1]
    w = q.float().reshape(n, g, k // g) * scale.float().unsqueeze(-1)  # [N, G, K/G]
    return w.reshape(n, k).to(dtype)


def fold_group_scales(q: torch.Tensor, scale: torch.Tensor, steps: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """4-bit codes with per-group scales -> int8 codes with one scale per row, for a single int8 GEMM.

    ``q`` int8 [N, K] holding codes in ``[-8, 7]``, ``scale`` [N, G] -> (``q8`` int8 [N, K], ``c`` float32 [N, 1]) with
    ``c = max_g scale / steps`` and ``q8 = round(q * scale_g / c)``, so ``|q8| <= 8 * steps``: 128 (fits int8) for
    the default 16, 64 for ``steps=8`` (reduced-range layers, see ``QuantLinear``). Codes of the groups with the
    row's largest scale are exact (times ``steps``); the others are rounded to ``c``, a ``steps``-th of a 4-bit step
    of the row's coarsest group: small against that group's 4-bit error, though a group with a much smaller scale
    keeps fewer levels (tests: SQNR against the exact grouped product).
    """
    if steps not in (8, 16):
        raise ValueError(f"steps={steps!r}; use 16 (int8 codes) or 8 (codes within [-64, 64])")
    n, k = q.shape
    g = scale.shape[1]
    c = (scale.float().amax(dim=1, keepdim=True) / steps).clamp(min=_EPS)  # [N, 1]
    ratio = (scale.float() / c).unsqueeze(-1)  # [N, G, 1], each at most steps
    q8 = torch.round(q.float().reshape(n, g, k // g) * ratio).clamp_(-128, 127).to(torch.int8)
    return q8.reshape(n, k), c


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """int8 codes in ``[-8, 7]`` [N, K] (K even) -> uint8 [N, K/2]; element ``2j`` in the low nibble."""
    if q.shape[-1] % 2:
        raise ValueError(f"pack_int4 needs an even last dim, got {q.shape[-1]}")
    if q.numel() and (q.min() < -8 or q.max() > 7):
        raise ValueError("pack_int4 needs values in [-8, 7]")
    u = (q.to(torch.int16) & 0xF).to(torch.uint8)  # two's-complement nibbles
    return u[..., 0::2] | (u[..., 1::2] << 4)


def unpack_int4(p: torch.Tensor) -> torch.Tensor:
    """uint8 [N, K/2] from :func:`pack_int4` -> int8 [N, K] in ``[-8, 7]``."""
    nib = torch.stack((p & 0xF, p >> 4), dim=-1).to(torch.int8)  # [N, K/2, 2]
    nib = (nib ^ 8) - 8  # sign-extend the 4-bit two's complement
    return nib.reshape(*p.shape[:-1], p.shape[-1] * 2)


def quantize_per_token(x: torch.Tensor, full_range: bool = False, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic symmetric ``bits``-bit (8 or 4) quantization of ``x`` [M, K], one scale per row.

    Returns (``q`` int8 [M, K] holding ``bits``-bit codes, ``scale`` fp32 [M, 1]); 4-bit codes go through the
    same int8 GEMM as 8-bit ones.
    """
    qmin, qmax = qrange(bits, full_range)
    x = x.float()
    scale = _scale(x.abs().amax(dim=-1, keepdim=True), qmin, qmax)  # [M, 1]
    q = torch.clamp(torch.round(x / scale), qmin, qmax).to(torch.int8)
    return q, scale


def quantize_per_tensor_u8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dynamic asymmetric uint8 quantization of the whole of ``x`` (any shape, not empty): one scale, one zero point.

    The range ``[min(x, 0), max(x, 0)]`` maps onto ``[0, 255]`` (zero is exact, as in oneDNN / PyTorch's x86
    quantization). Returns (``q`` uint8 like ``x``, ``scale`` fp32 [], ``zero_point`` int64 [] in ``[0, 255]``);
    ``x ~ (q - zero_point) * scale``.
    """
    xf = x.float()
    scale, zp = u8_params(xf.amin(), xf.amax())
    q = torch.clamp(torch.round(xf / scale) + zp, 0, 255).to(torch.uint8)
    return q, scale, zp


def u8_params(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The scale (fp32 []) and zero point (int64 [] in ``[0, 255]``) of :func:`quantize_per_tensor_u8` for a tensor
    whose min and max are ``lo`` and ``hi`` (fp32 [] each; the range is widened to include zero)."""
    lo, hi = lo.float().clamp(max=0), hi.float().clamp(min=0)
    scale = ((hi - lo) / 255).clamp(min=_EPS)
    zp = torch.round(-lo / scale).clamp(0, 255)
    return scale, zp.to(torch.int64)


_F32 = struct.Struct("f")


def _f32(v: float) -> float:
    """``v`` rounded to the nearest float32 (returned as a Python float)."""
    return _F32.unpack(_F32.pack(v))[0]


def u8_params_of(lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`u8_params` for a min and a max given as Python floats holding float32 values (a C++ pass's result):
    the same scale and zero point bit for bit, in Python arithmetic rounded to float32 after every step (rounding
    a float64 sum or quotient of float32 values to float32 gives the correctly rounded float32 result), instead of
    eight tensor ops (about 60 us a call on the AVX2 CPU of BENCHMARKS.md, a tenth of a short convolution's time).
    NaN, infinities and ranges wider than float32 go through :func:`u8_params`."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    span = hi - lo
    if span < 3.4e38:  # (float32 inputs, as ``torch.tensor(lo)`` would take them)
        lo, hi = _f32(lo), _f32(hi)
        span = hi - lo
    if not span < 3.4e38:  # NaN, inf, or a width float32 cannot hold
        return u8_params(torch.tensor(lo), torch.tensor(hi))
    scale = max(_f32(_f32(span) / 255.0), _EPS)
    zp = min(max(round(_f32(-lo / scale)), 0), 255)  # round(): half to even, as torch.round
    return torch.scalar_tensor(scale), torch.scalar_tensor(zp, dtype=torch.int64)


def u8_offset(q: torch.Tensor, zero_point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 codes -> (``q - 128`` as int8, ``128 - zero_point`` int32 []), so an int8 GEMM serves uint8 inputs.

    ``(q - zp) @ W = (q - 128) @ W + (128 - zp) * colsum(W)``, exact in int32.
    """
    return (q.to(torch.int16) - 128).to(torch.int8), (128 - zero_point).to(torch.int32)


def int8_mm_reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact int32 product of ``a`` int8 [M, K] and ``b`` int8 [K, N] -> int32 [M, N] (pure torch, int32 math)."""
    return a.to(torch.int32) @ b.to(torch.int32)


def int_mm_supported(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``torch._int_mm(a, b)`` accepts these operands.

    CPU (checked with torch 2.13, AVX512-VNNI): any 2-D int8 shapes, ``b`` may be a transposed view. CUDA: M > 16
    and K, N multiples of 8 (torch's documented constraints).
    """
    if not hasattr(torch, "_int_mm") or a.dtype != torch.int8 or b.dtype != torch.int8 or a.dim() != 2:
        return False
    if b.dim() != 2 or a.shape[1] != b.shape[0] or a.shape[0] == 0 or a.device != b.device:
        return False
    if a.device.type == "cpu":
        return True
    if a.device.type == "cuda":
        m, k = a.shape
        return m > 16 and k % 8 == 0 and b.shape[1] % 8 == 0
    return False


INT_MM_ENV = "ACCELERANDO_QUANT_INT_MM"


@functools.cache
def _cpu_has_vnni() -> bool:
    check = getattr(torch.cpu, "_is_vnni_supported", None)
    return bool(check and check())


def int_mm_setting() -> str:
    """``ACCELERANDO_QUANT_INT_MM`` as ``"native"``, ``"float"`` or ``"auto"`` (unset or empty); ``UserError`` for
    anything else."""
    return env_choice(INT_MM_ENV, ("native", "float", "auto"), "auto")


def int_mm_native(device: torch.device | str = "cpu") -> bool:
    """Whether :func:`int8_mm` calls ``torch._int_mm`` on ``device`` (else a float32 GEMM of the codes).

    On a CPU, ``torch._int_mm`` is fast with AVX512-VNNI (the dev CPU: 1.7x a bf16 GEMM). Without VNNI, PyTorch 2.13
    ran the built-in's W8A8 backbone 23x slower than float32 on an AVX2 CPU (BENCHMARKS.md, "Generation on a CPU
    without bf16 arithmetic"), so there the codes are multiplied in float32 instead. ``ACCELERANDO_QUANT_INT_MM``:
    ``native`` or ``float`` forces one, ``auto`` (the default) decides by the CPU. CUDA always runs ``_int_mm``.
    """
    if torch.device(device).type != "cpu":
        return True
    value = int_mm_setting()
    return value == "native" or (value == "auto" and _cpu_has_vnni())


def int8_mm_float(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``int8_mm`` as a float32 GEMM of the integer codes. Products of int8 codes are exact in float32, and so is
    every partial sum while it stays below 2^24 in magnitude: guaranteed for any codes when ``K * 128 * 128 < 2^24``
    (K <= 1023), and for larger K unless the products add up to more than 2^24 (on the built-in U-Net the largest
    sum of |products| seen was about 10x below that). Past it the result is a nearby integer, not the exact sum."""
    with torch.autocast(a.device.type, enabled=False):  # autocast would round the operands and sums to bf16
        return torch.mm(a.float(), b.float()).to(torch.int32)


def int8_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a`` int8 [M, K] @ ``b`` int8 [K, N] -> int32 [M, N] through ``torch._int_mm``, a float32 GEMM of the codes
    on CPUs where ``_int_mm`` is slow (:func:`int_mm_native`), else the reference."""
    if not int_mm_native(a.device) and a.dim() == 2 and b.dim() == 2:
        return int8_mm_float(a, b)
    if int_mm_supported(a, b):
        return torch._int_mm(a, b)
    return int8_mm_reference(a, b)
