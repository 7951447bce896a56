"""Quantized 1-D convolutions with per-window (per-token) A8 activations as one Triton implicit-GEMM int8 kernel.

What: ``conv(x)`` for an :class:`~accelerando.quant.conv.UnfoldConv1d` whose ``linear`` is an A8
:class:`~accelerando.quant.linear.QuantLinear` (``act_scale="token"``) or an
:class:`~accelerando.quant.svd.SVDQuantLinear` with such a residual, computing what the unfold reference computes
(``linear(windows(x))``) without its ``[B * T_out, C_in * k]`` window matrix. Per call, ``x`` [B, C_in, T] ->
[B, C_out, T_out]:

1. window scales [B * T_out] with torch ops: the absmax over channels per (tap, frame) of the (smoothed) input,
   [B, k, T] with SVD smoothing (one pass over ``x`` per tap), else [B, 1, T], then the max over each window's taps,
   with zero padding, stride and dilation: the per-token scale of each unfolded row;
2. one kernel over tiles of output rows ``(b, t_out)`` x output channels: for every tap ``j`` and channel block it
   loads the input frames the tap reads straight from ``x`` (any strides; masked to 0 outside ``[0, T)``), smooths,
   divides by the row's scale, rounds and clamps to int8 in registers, and multiplies with the weight codes at
   ``K = c * k + j`` (``tl.dot``, int32 accumulators); the epilogue applies the weight and window scales, the bias
   and the SVD low-rank branch, and writes [B * T_out, C_out] row-major, returned as the [B, C_out, T_out] view;
3. SVDQuant's low-rank branch as two torch convolutions (``L2 / s`` as a rank-``r`` conv, ``L1`` as a 1x1 conv),
   in the autocast dtype under autocast, like the reference's two Linears.

Status (measured, BENCHMARKS.md "The quantized U-Net on an H100"): opt-in. On an H100 the built-in U-Net's
backbone (one guided call on 30 s, CUDA-graph replay) took 8.10 ms with it against 6.21 ms with unfold + the Triton
GEMM and 5.64 ms in bf16, at the same SQNR. Each frame is quantized once per tap (the window scales differ), the
tiles read channels-first input along time, the window scales take a few torch launches, and :func:`plan` unpacks
and re-lays out the weight codes on every call; those are what a faster version would change.

Why: the unfold path writes and reads the ``k``-fold window copy, then a quantize kernel writes and a GEMM reads
its int8 codes; here neither exists (the quantization is fused into the GEMM's operand load). No library kernel
quantizes per window inside an int8 implicit-GEMM convolution (cuDNN / CUTLASS int8 convs take pre-quantized
per-tensor inputs; ``torch._int_mm`` needs the unfolded rows), so it is written here.

Numerics: the window scales and int8 codes are the reference's bit for bit (``primitives._scale``; IEEE division via
``div_rn``; round half to even via ``1.5 * 2**23``; the smoothing rounded to ``x``'s dtype, to bf16 by integer
bit arithmetic because the interpreter's float32 -> bf16 cast truncates), the int32 sums are exact,
so only the float epilogue's rounding differs (``(acc * w_scale) * x_scale + bias`` in float32, one cast). SVD: the
low-rank branch convolves ``x`` with ``L2 / s`` folded in float32 (the reference first rounds ``x / s`` to ``x``'s
dtype) and is added in float32 before the output cast (the reference adds it after casting both).

Used (:func:`plan`) for CUDA tensors (CPU ones under ``TRITON_INTERPRET=1`` in this module's tests) when Triton is
available, :func:`~accelerando.quant.triton_kernels.use_triton_kernels` and :class:`use_triton_convs` are on
(off by default: ``ACCELERANDO_QUANT_TRITON_CONVS=1`` starts it on), ``x`` is a 3-D float32 / bf16 / float16
tensor without autograd, the layer is A8 per token with one weight scale per output channel (grouped layers keep
the unfold path, whose Triton GEMM applies group scales exactly), and its ``forward`` is not replaced. The weight
codes are re-laid out tap-major ([k, C_out, C_in], one small copy) per call.
"""

import os

import torch
import torch.nn.functional as F

from accelerando.quant import triton_kernels as tk
from accelerando.quant.primitives import _scale, qrange
from accelerando.quant.switches import StateSwitch
from accelerando.quant.triton_kernels import tl, triton

__all__ = ["applies", "conv1d", "plan", "triton_convs_enabled", "use_triton_convs", "window_codes", "window_scales"]

_state = {
    # opt-in: on an H100 the built-in U-Net's backbone ran slower with it than with unfold + the Triton GEMM
    "on": os.environ.get("ACCELERANDO_QUANT_TRITON_CONVS", "0").strip().lower() in ("1", "true", "on"),
    # CPU tensors through Triton's interpreter: for this module's own tests only (elsewhere CPU convs keep the unfold
    # path, or oneDNN, even where TRITON_INTERPRET=1 is set)
    "interpret_cpu": False,
}
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class use_triton_convs(StateSwitch):
    """Run per-token A8 convolutions on CUDA as the Triton implicit-GEMM kernel (on) or as unfold + GEMM (off, the
    default; ``ACCELERANDO_QUANT_TRITON_CONVS=1`` starts it on)."""

    _state, _key = _state, "on"


def triton_convs_enabled() -> bool:
    return _state["on"]


def _conv_src(
    x_ptr,  # [B, C, T] float, strides sxb, sxc, sxt
    inv_ptr,  # [C * KS] float32 (1/s rounded to x's dtype, index c * KS + j), read only with HAS_SMOOTH
    sa_ptr,  # [M] float32 window scales, M = B * T_OUT
    w_ptr,  # [KS, N, C] int8 weight codes, tap-major
    ws_ptr,  # [N] float32 weight scales
    bias_ptr,  # [N] float32, read only with HAS_BIAS
    low_ptr,  # [B, N, T_OUT] low-rank output (strides slb, sln, slt), read only with HAS_LOW
    out_ptr,  # [M, N] out
    codes_ptr,  # [M, C * KS] int8 out, written only with WRITE_CODES (tests)
    M,
    N,
    T,
    T_OUT,
    M_BUCKET,  # autotune key only
    sxb,
    sxc,
    sxt,
    slb,
    sln,
    slt,
    QMIN,
    QMAX,
    C: tl.constexpr,
    KS: tl.constexpr,
    STRIDE: tl.constexpr,
    PAD: tl.constexpr,
    DIL: tl.constexpr,
    HAS_SMOOTH: tl.constexpr,
    ROUND: tl.constexpr,  # x's dtype, for rounding the smoothed input: 0 float32, 1 bfloat16, 2 float16
    HAS_BIAS: tl.constexpr,
    HAS_LOW: tl.constexpr,
    WRITE_CODES: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid_m, pid_n = tl.program_id(0), tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mmask, nmask = rm < M, rn < N
    b, t = rm // T_OUT, rm % T_OUT
    sa = tl.load(sa_ptr + rm, mask=mmask, other=1.0)
    iacc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.int32)
    for j in range(KS):
        ti = t * STRIDE - PAD + j * DIL  # the input frame tap j reads, [BLOCK_M]
        tmask = mmask & (ti >= 0) & (ti < T)
        for c0 in range(0, C, BLOCK_C):
            rc = c0 + tl.arange(0, BLOCK_C)
            cmask = rc < C
            amask = tmask[:, None] & cmask[None, :]
            x = tl.load(x_ptr + b[:, None] * sxb + rc[None, :] * sxc + ti[:, None] * sxt, mask=amask, other=0.0)
            x = x.to(tl.float32)
            if HAS_SMOOTH:  # x * (1/s) rounded to x's dtype, as the eager ``x * inv_smooth.to(x.dtype)``
                x = x * tl.load(inv_ptr + rc * KS + j, mask=cmask, other=0.0)[None, :]  # exact for 16-bit x
                if ROUND == 1:  # to bf16, nearest even, by hand (the interpreter's cast truncates)
                    bits = x.to(tl.int32, bitcast=True)
                    x = ((bits + 0x7FFF + ((bits >> 16) & 1)) & -65536).to(tl.float32, bitcast=True)
                elif ROUND == 2:
                    x = x.to(tl.float16).to(tl.float32)
            v = tl.math.div_rn(x, sa[:, None])  # IEEE division, as torch's
            v = (v + 12582912.0) - 12582912.0  # round half to even (|v| < 2**22)
            q = tl.minimum(tl.maximum(v, QMIN), QMAX).to(tl.int8)
            if WRITE_CODES:
                cptr = codes_ptr + rm[:, None] * (C * KS) + rc[None, :] * KS + j
                tl.store(cptr, q, mask=mmask[:, None] & cmask[None, :] & (pid_n == 0))
            w = tl.load(
                w_ptr + j * N * C + rn[:, None] * C + rc[None, :], mask=nmask[:, None] & cmask[None, :], other=0
            )
            iacc += tl.dot(q, tl.trans(w), out_dtype=tl.int32)
    acc = iacc.to(tl.float32) * tl.load(ws_ptr + rn, mask=nmask, other=0.0)[None, :]
    acc = acc * sa[:, None]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=nmask, other=0.0)[None, :]
    omask = mmask[:, None] & nmask[None, :]
    if HAS_LOW:
        low = tl.load(low_ptr + b[:, None] * slb + rn[None, :] * sln + t[:, None] * slt, mask=omask, other=0.0)
        acc += low.to(tl.float32)
    tl.store(out_ptr + rm[:, None] * N + rn[None, :], acc.to(out_ptr.dtype.element_ty), mask=omask)


_TILES = ((128, 128, 64, 8, 3), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4), (64, 64, 64, 4, 4), (64, 64, 32, 4, 4))
_INTERPRET_TILE = (16, 16, 16)


def _tiles() -> list:
    return [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_C": c}, num_warps=w, num_stages=st)
        for m, n, c, w, st in _TILES
    ]


def _kernel():
    """The kernel: autotuned over ``_TILES`` (BLOCK_M, BLOCK_N, BLOCK_C, warps, stages) on CUDA, or interpreted."""
    return tk.kernel(_conv_src, _tiles, ("N", "C", "KS", "STRIDE", "DIL", "M_BUCKET"))


def _layers(conv):
    """(residual QuantLinear, SVDQuantLinear or None), or (None, None) for other layers."""
    from accelerando.quant.linear import QuantLinear
    from accelerando.quant.svd import SVDQuantLinear

    lin = conv.linear
    if isinstance(lin, SVDQuantLinear) and isinstance(lin.residual, QuantLinear):
        return lin.residual, lin
    return (lin, None) if isinstance(lin, QuantLinear) else (None, None)


def _t_out(conv, frames: int) -> int:
    return (frames + 2 * conv.padding - conv.dilation * (conv.kernel_size - 1) - 1) // conv.stride + 1


def plan(conv, x: torch.Tensor) -> tuple | None:
    """What :func:`conv1d` needs to run ``conv`` on ``x`` [B, C_in, T], or None where the unfold path must run:
    (residual, SVD layer or None, weight codes int8 [k, C_out, C_in], weight scales float32 [C_out], output dtype)."""
    if not (tk.available() and tk.triton_kernels_enabled() and triton_convs_enabled()):
        return None
    if x.device.type != "cuda" and not (x.device.type == "cpu" and _state["interpret_cpu"] and tk._interpreting()):
        return None
    if x.dim() != 3 or x.dtype not in _DTYPES or x.shape[1] != conv.in_channels or x.numel() == 0:
        return None
    if (torch.is_grad_enabled() and x.requires_grad) or _t_out(conv, x.shape[2]) < 1:
        return None
    from accelerando.quant.linear import autocast_output_dtype

    res, svd = _layers(conv)
    if res is None or res.a_bits != 8 or res.act_scale != "token" or "forward" in vars(conv.linear):
        return None
    if res.group_size is not None:  # the Triton GEMM applies group scales exactly; folding them would change weights
        return None
    if "forward" in vars(res) or res.qweight.device != x.device:
        return None
    out_dtype = autocast_output_dtype(x)
    rows = x.shape[0] * _t_out(conv, x.shape[2])
    span = sum((n - 1) * abs(s) for n, s in zip(x.shape, x.stride(), strict=True))
    if out_dtype not in _DTYPES or not tk.fits_offsets(rows, res.in_features, res.out_features) or span >= 2**31:
        return None
    qw, scale, _ = res.gemm_weight()  # int8 [N, K], float32 [N, 1] (per-channel scales)
    n, c, k = conv.out_channels, conv.in_channels, conv.kernel_size
    w = qw.reshape(n, c, k).permute(2, 0, 1).contiguous()  # [k, N, C]
    return res, svd, w, scale[:, 0].float().contiguous(), out_dtype


def applies(conv, x: torch.Tensor) -> bool:
    """Whether ``conv(x)`` can run here (:func:`plan` finds one)."""
    return plan(conv, x) is not None


def _inv(svd) -> torch.Tensor | None:
    return None if svd is None else svd.inv_smooth.detach().float().contiguous()


def window_scales(conv, x: torch.Tensor, inv: torch.Tensor | None = None, full_range: bool = False) -> torch.Tensor:
    """``x`` [B, C_in, T] (times ``inv`` [C_in * k], index ``c * k + j``) -> the per-token scale of every unfolded
    window row, float32 [B * T_out], equal to ``quantize_per_token(windows(x * inv))``'s."""
    k, s, p, d = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    if inv is None:
        taps = x.abs().amax(dim=1, keepdim=True)  # [B, 1, T]
    else:
        per_tap = inv.reshape(-1, k).t()  # [k, C]: one smoothed absmax per tap (no host sync to spot tied taps)
        taps = torch.stack([(x * f.to(x.dtype)[:, None]).abs().amax(dim=1) for f in per_tap], dim=1)
    taps = F.pad(taps, (p, p))  # [B, k or 1, T + 2p]; zero padding reads as 0
    t_out = _t_out(conv, x.shape[2])
    amax = None
    for j in range(k):
        a = taps[:, j if taps.shape[1] > 1 else 0, j * d : j * d + (t_out - 1) * s + 1 : s]  # [B, T_out]
        amax = a if amax is None else torch.maximum(amax, a)
    qmin, qmax = qrange(8, full_range)
    return _scale(amax.float(), qmin, qmax).reshape(-1)


def _launch(conv, x, how, codes: torch.Tensor | None = None, low: torch.Tensor | None = None) -> torch.Tensor:
    res, svd, w, ws, out_dtype = how
    inv = _inv(svd)
    sa = window_scales(conv, x, inv, res.full_range).contiguous()
    bsz, n, c = x.shape[0], conv.out_channels, conv.in_channels
    t_out = _t_out(conv, x.shape[2])
    m = bsz * t_out
    out = torch.empty(m, n, dtype=out_dtype, device=x.device)
    qmin, qmax = qrange(8, res.full_range)
    bias = res.bias.float().contiguous() if res.bias is not None else ws
    lows = low.stride() if low is not None else (0, 0, 0)
    inv_k = inv.to(x.dtype).float() if inv is not None else ws  # ``inv_smooth.to(x.dtype)``, as the reference
    args = (x, inv_k, sa, w, ws, bias, low if low is not None else ws, out)
    args += (codes if codes is not None else w, m, n, x.shape[2], t_out, triton.next_power_of_2(m), *x.stride())
    args += (*lows, float(qmin), float(qmax))
    flags = {"C": c, "KS": conv.kernel_size, "STRIDE": conv.stride, "PAD": conv.padding, "DIL": conv.dilation}
    flags["ROUND"] = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}[x.dtype]
    flags.update(HAS_SMOOTH=inv is not None, HAS_BIAS=res.bias is not None, HAS_LOW=low is not None)
    flags["WRITE_CODES"] = codes is not None
    kern = _kernel()
    if tk._interpreting():
        bm, bn, bc = _INTERPRET_TILE
        kern[(triton.cdiv(m, bm), triton.cdiv(n, bn))](*args, **flags, BLOCK_M=bm, BLOCK_N=bn, BLOCK_C=bc)
    else:
        kern[lambda meta: (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(n, meta["BLOCK_N"]))](*args, **flags)
    return out.view(bsz, t_out, n).transpose(1, 2)


def _lowrank(conv, x: torch.Tensor, svd) -> torch.Tensor:
    """SVDQuant's branch ``((x / s) @ L2^T) @ L1^T`` as two convolutions -> [B, C_out, T_out] (float32, or the
    autocast dtype under autocast, as the reference's ``F.linear`` pair)."""
    down = (svd.lora_down.float() * svd.inv_smooth.float()).reshape(svd.rank, conv.in_channels, conv.kernel_size)
    z = F.conv1d(x.float(), down, None, conv.stride, conv.padding, conv.dilation)  # [B, r, T_out]
    return F.conv1d(z, svd.lora_up.float()[:, :, None])


def conv1d(conv, x: torch.Tensor, how: tuple) -> torch.Tensor:
    """``conv(x)``: ``x`` [B, C_in, T] -> [B, C_out, T_out] in the output dtype (a transposed view of a row-major
    [B, T_out, C_out] tensor, the reference's layout), with ``how`` from :func:`plan`."""
    svd = how[1]
    low = _lowrank(conv, x, svd) if svd is not None and svd.rank else None
    return _launch(conv, x, how, low=low)


def window_codes(conv, x: torch.Tensor, how: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 codes [B * T_out, C_in * k], scales float32 [B * T_out]) as the kernel quantizes the windows in
    registers (written out only here, for tests)."""
    m = x.shape[0] * _t_out(conv, x.shape[2])
    codes = torch.zeros(m, conv.in_channels * conv.kernel_size, dtype=torch.int8, device=x.device)
    _launch(conv, x, how, codes=codes)
    return codes, window_scales(conv, x, _inv(how[1]), how[0].full_range)
