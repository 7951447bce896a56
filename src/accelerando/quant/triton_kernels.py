"""Triton kernels for the quantized linears on CUDA: two launches per layer (three with SVDQuant's low-rank branch)
instead of eager PyTorch's six or more.

1. :func:`quantize_rows` -- per-token dynamic quantization of ``x`` [M, K] to int8 codes and a float32 scale per
   row, with SVDQuant's ``1/s`` smoothing and the low-rank down-projection ``(x/s) @ L2^T`` [M, r] fused in (the
   layout nunchaku uses: the down-projection reads the same activation tile the quantizer reads).
2. :func:`int8_gemm` -- an int8 x int8 -> int32 tensor-core GEMM whose weight operand is int8 [N, K] or 4-bit codes
   packed two per byte [N, K/2], unpacked to int8 in registers (never written to memory). The epilogue applies the
   per-group weight scales, the per-token activation scale, the bias and adds the low-rank branch's output
   ``lx @ L1^T`` (a rank-r bf16 cuBLAS GEMM run just before), then casts once to the output dtype.

Why hand-written: no library kernel takes packed 4-bit weights with int8 activations and a low-rank branch into one
GEMM (``torch._int_mm`` takes int8 x int8 only and returns raw int32, so the scales, bias and low-rank branch are
extra passes over [M, N]; torchao's int4 kernels are weight-only bf16). ``torch._int_mm`` remains the baseline this
kernel is measured against (``benchmarks/quant_gpu.py``).

Numerics (checked by ``tests/quant/test_triton_kernels.py`` against :mod:`accelerando.quant.primitives`):

- The integer codes equal :func:`~accelerando.quant.primitives.quantize_per_token`'s (same scale formula, IEEE
  division through ``div_rn``: Triton's plain ``/`` on CUDA is an approximate division that changed scales and codes
  on an H200; round half to even through the ``1.5 * 2**23`` trick, exact for ``|v| < 2**22``), and the int32
  products are exact, so per-channel layers differ from the eager path only in the float epilogue's rounding.
- With weight groups, each K block's int32 partial sum is scaled and added in float32 (the eager path sums each
  group's int32 first); the block size divides the group size, so only float rounding differs.
- The SVDQuant low-rank branch multiplies bf16 operands with float32 accumulation (the eager CUDA path under bf16
  autocast does the same); its bf16 output is added in float32 before the single cast to the output dtype.

Execution: CUDA tensors run compiled kernels (autotuned over a few tile shapes per ``(N, K, M bucket)``). With
``TRITON_INTERPRET=1`` set before Triton is first imported, CPU tensors run the same kernel source through Triton's
interpreter (slow; for tests: its bf16 products are wrong, so there the low-rank down-projection multiplies the
bf16-rounded operands in float32); without it a CPU tensor gets a one-line RuntimeError. The quantized
layers call into this module on CUDA when Triton is importable (:func:`applies`); ``use_triton_kernels(False)`` or
``ACCELERANDO_QUANT_TRITON=0`` keeps them on the eager ``torch._int_mm`` path.
"""

import os

import torch

from accelerando.quant.switches import StateSwitch

__all__ = [
    "available",
    "applies",
    "use_triton_kernels",
    "triton_kernels_enabled",
    "quantize_rows",
    "int8_gemm",
    "a8_linear",
    "svd_linear",
    "kernel",
]

_state = {"enabled": os.environ.get("ACCELERANDO_QUANT_TRITON", "1").strip().lower() not in ("0", "false", "off")}
_EPS = float(torch.finfo(torch.float32).eps)

try:  # Triton is optional: CPU installs run the eager / torch.compile paths
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the environment
    import types

    triton = None
    tl = types.SimpleNamespace(constexpr=None)  # the kernel sources' annotations still evaluate


def available() -> bool:
    """Whether Triton is importable (the kernels can then run on CUDA, or on CPU through the interpreter)."""
    return triton is not None


class use_triton_kernels(StateSwitch):
    """Turn the Triton path of the quantized linears on CUDA on or off; a plain call or a context manager."""

    _state, _key = _state, "enabled"


def triton_kernels_enabled() -> bool:
    return _state["enabled"] and available()


def applies(x: torch.Tensor) -> bool:
    """Whether a quantized linear should run its A4/A8 forward here: CUDA input, Triton on, no autograd, rows."""
    if not triton_kernels_enabled() or x.device.type != "cuda" or x.numel() == 0:
        return False
    return not (torch.is_grad_enabled() and x.requires_grad)


# ---- kernel sources (plain functions; compiled or interpreted on first use) -------------------------------------


def _quant_rows_src(
    x_ptr,  # [M, K] float, row stride stride_xm, unit column stride
    inv_s_ptr,  # [K] float32 (1/s), read only with HAS_SMOOTH
    down_ptr,  # [R, K] bf16 (L2), read only with RANK_PAD > 0
    q_ptr,  # [M, K] int8 out
    scale_ptr,  # [M] float32 out
    lx_ptr,  # [M, RANK_PAD] bf16 out (columns >= R are zero)
    M,
    R,
    stride_xm,
    QMIN,
    QMAX,
    DIVISOR,
    EPS,
    K: tl.constexpr,  # compile-time: a model has a handful of widths, and loop bounds stay Python ints
    FP8: tl.constexpr,  # float8 e4m3 codes (round to nearest even by the cast) instead of integers
    HAS_SMOOTH: tl.constexpr,
    RANK_PAD: tl.constexpr,
    DOT_BF16: tl.constexpr,  # bf16 tensor-core dot for the low-rank branch; False: the same bf16-rounded operands
    # multiplied in float32 (Triton's interpreter cannot multiply bf16)
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    mmask = rm < M
    amax = tl.zeros([BLOCK_M], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):  # pass 1: row absmax of the (smoothed) activation
        rk = k0 + tl.arange(0, BLOCK_K)
        kmask = rk < K
        x = tl.load(x_ptr + rm[:, None] * stride_xm + rk[None, :], mask=mmask[:, None] & kmask[None, :], other=0.0)
        if HAS_SMOOTH:  # x * (1/s) rounded to x's dtype, as the eager ``x * inv_smooth.to(x.dtype)``
            s = tl.load(inv_s_ptr + rk, mask=kmask, other=0.0).to(x.dtype)
            x = (x.to(tl.float32) * s.to(tl.float32)).to(x.dtype)
        amax = tl.maximum(amax, tl.max(tl.abs(x.to(tl.float32)), axis=1))
    scale = tl.maximum(tl.math.div_rn(amax, DIVISOR), EPS)  # IEEE division, as torch's (``/`` is approximate)
    tl.store(scale_ptr + rm, scale, mask=mmask)
    if RANK_PAD > 0:
        rr = tl.arange(0, RANK_PAD)
        lx = tl.zeros([BLOCK_M, RANK_PAD], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):  # pass 2: codes (and the low-rank down-projection)
        rk = k0 + tl.arange(0, BLOCK_K)
        kmask = rk < K
        x = tl.load(x_ptr + rm[:, None] * stride_xm + rk[None, :], mask=mmask[:, None] & kmask[None, :], other=0.0)
        if HAS_SMOOTH:
            s = tl.load(inv_s_ptr + rk, mask=kmask, other=0.0).to(x.dtype)
            x = (x.to(tl.float32) * s.to(tl.float32)).to(x.dtype)
        v = tl.math.div_rn(x.to(tl.float32), scale[:, None])
        if FP8:  # round to e4m3's grid in float32 first (nearest, ties to even), so the cast itself is exact
            v = tl.minimum(tl.maximum(v, QMIN), QMAX)
            b = v.to(tl.int32, bitcast=True)
            sign = b & -2147483648  # the sign bit alone
            b = (b + 0x7FFFF + ((b >> 20) & 1)) & -1048576  # keep 3 of float32's 23 mantissa bits
            normal = b.to(tl.float32, bitcast=True)
            mag = (tl.abs(v) + 24576.0) - 24576.0  # below 2**-6 e4m3 is subnormal: multiples of 2**-9
            sub = (mag.to(tl.int32, bitcast=True) | sign).to(tl.float32, bitcast=True)  # -0 stays -0, as in torch
            v = tl.where(tl.abs(v) < 0.015625, sub, normal)
            tl.store(q_ptr + rm[:, None] * K + rk[None, :], v.to(tl.float8e4nv), mask=mmask[:, None] & kmask[None, :])
        else:
            v = (v + 12582912.0) - 12582912.0
            v = tl.minimum(tl.maximum(v, QMIN), QMAX)
            tl.store(q_ptr + rm[:, None] * K + rk[None, :], v.to(tl.int8), mask=mmask[:, None] & kmask[None, :])
        if RANK_PAD > 0:
            d = tl.load(down_ptr + rr[None, :] * K + rk[:, None], mask=kmask[:, None] & (rr < R)[None, :], other=0.0)
            xb = x.to(tl.bfloat16)
            if DOT_BF16:
                lx += tl.dot(xb, d, out_dtype=tl.float32)
            else:
                lx += tl.dot(xb.to(tl.float32), d.to(tl.float32), out_dtype=tl.float32)
    if RANK_PAD > 0:
        tl.store(lx_ptr + rm[:, None] * RANK_PAD + rr[None, :], lx.to(tl.bfloat16), mask=mmask[:, None])


def _gemm_src(
    a_ptr,  # [M, K] int8 activation codes
    sa_ptr,  # [M] float32 activation scales
    w_ptr,  # [N, K] int8, or [N, K/2] uint8 (W4: element 2j in the low nibble)
    ws_ptr,  # [N, G] float32 weight scales
    bias_ptr,  # [N] float32, read only with HAS_BIAS
    low_ptr,  # [M, N] bf16: the low-rank branch's output, added in the epilogue; read only with HAS_LOW
    out_ptr,  # [M, N] out
    M,
    N,
    G,
    M_BUCKET,  # next power of two of M: an autotune key only
    K: tl.constexpr,  # compile-time, as in the quantize kernel
    W4: tl.constexpr,
    GROUP: tl.constexpr,  # input features per weight scale; 0 = one scale per output channel
    HAS_BIAS: tl.constexpr,
    HAS_LOW: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    tl.static_assert(GROUP == 0 or GROUP % BLOCK_K == 0)  # a K block never straddles two weight groups
    pid = tl.program_id(0)  # grouped launch order: GROUP_M row tiles share each weight tile while it is in L2
    n_m = tl.cdiv(M, BLOCK_M)
    n_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * n_n
    first_m = (pid // per_group) * GROUP_M
    size_m = tl.minimum(n_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % size_m
    pid_n = (pid % per_group) // size_m
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mmask = rm < M
    nmask = rn < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    iacc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(a_ptr + rm[:, None] * K + rk[None, :], mask=mmask[:, None] & (rk < K)[None, :], other=0)
        if W4:
            rh = k0 // 2 + tl.arange(0, BLOCK_K // 2)
            p = tl.load(w_ptr + rn[:, None] * (K // 2) + rh[None, :], mask=nmask[:, None] & (rh < K // 2)[None, :])
            lo = ((p & 15).to(tl.int8) ^ 8) - 8  # sign-extended low nibble: element 2j
            hi = ((p >> 4).to(tl.int8) ^ 8) - 8  # high nibble: element 2j + 1
            w = tl.reshape(tl.join(lo, hi), (BLOCK_N, BLOCK_K))
        else:
            w = tl.load(w_ptr + rn[:, None] * K + rk[None, :], mask=nmask[:, None] & (rk < K)[None, :], other=0)
        part = tl.dot(a, tl.trans(w), out_dtype=tl.int32)
        if GROUP > 0:
            ws = tl.load(ws_ptr + rn * G + k0 // GROUP, mask=nmask, other=0.0)
            acc += part.to(tl.float32) * ws[None, :]
        else:
            iacc += part
    if GROUP == 0:
        acc = iacc.to(tl.float32) * tl.load(ws_ptr + rn * G, mask=nmask, other=0.0)[None, :]
    acc = acc * tl.load(sa_ptr + rm, mask=mmask, other=0.0)[:, None]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=nmask, other=0.0)[None, :]
    if HAS_LOW:
        low = tl.load(low_ptr + rm[:, None] * N + rn[None, :], mask=mmask[:, None] & nmask[None, :], other=0.0)
        acc += low.to(tl.float32)
    tl.store(
        out_ptr + rm[:, None] * N + rn[None, :], acc.to(out_ptr.dtype.element_ty), mask=mmask[:, None] & nmask[None, :]
    )


# ---- compilation and launch -------------------------------------------------------------------------------------

_GEMM_TILES = (  # (BLOCK_M, BLOCK_N, warps, stages): small tiles fill 132 SMs at the backbone's sizes
    (128, 128, 8, 3),
    (128, 64, 4, 4),
    (64, 128, 4, 4),
    (64, 64, 4, 4),
    (128, 256, 8, 3),
)
_BLOCK_K = 128  # K per iteration (int8: 128 bytes per row); smaller when a weight group is smaller
_INTERPRET_TILE = (32, 32, 32)
_cache: dict = {}


def _interpreting() -> bool:
    return bool(triton.knobs.runtime.interpret)


def kernel(src, tiles: tuple = (), key: tuple = ()):
    """The Triton kernel of the plain function ``src``, built once per mode: jitted and autotuned over the
    ``triton.Config`` list ``tiles()`` returns (keyed on the argument names ``key``) for CUDA, or jitted alone for
    Triton's interpreter (``TRITON_INTERPRET=1``), where callers pass fixed tiles. Shared by this module and
    :mod:`accelerando.quant.triton_conv`."""
    mode = (src, _interpreting())
    if mode not in _cache:
        kern = triton.jit(src)
        if tiles and not _interpreting():
            kern = triton.autotune(tiles(), key=list(key))(kern)
        _cache[mode] = kern
    return _cache[mode]


def _gemm_tiles() -> list:
    return [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "GROUP_M": 8}, num_warps=w, num_stages=st)
        for m, n, w, st in _GEMM_TILES
    ]


def _kernels():
    """(quantize kernel, GEMM kernel): compiled and autotuned for CUDA, or interpreted (``TRITON_INTERPRET=1``)."""
    gemm_key = ("N", "K", "M_BUCKET", "W4", "GROUP", "HAS_LOW", "BLOCK_K")
    return kernel(_quant_rows_src), kernel(_gemm_src, _gemm_tiles, gemm_key)


def _check_device(t: torch.Tensor) -> None:
    if not available():
        raise RuntimeError("accelerando.quant.triton_kernels needs Triton (pip install triton)")
    if t.device.type != "cuda" and not _interpreting():
        raise RuntimeError(
            f"the Triton kernels run on CUDA tensors (got {t.device}), or anywhere with TRITON_INTERPRET=1"
        )


def _rank_pad(r: int) -> int:
    return 0 if r == 0 else max(16, triton.next_power_of_2(r))


def quantize_rows(
    x: torch.Tensor,
    bits: int = 8,
    full_range: bool = False,
    inv_smooth: torch.Tensor | None = None,
    down: torch.Tensor | None = None,
    fp8: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``x`` [M, K] -> (codes int8 [M, K], scale float32 [M, 1], ``(x/s) @ down^T`` bf16 [M, r_pad] or None).

    ``fp8``: float8 e4m3 codes with ``scale = absmax / 448`` instead, equal to
    :func:`accelerando.quant.fp8.fp8_rows` (``bits`` and ``full_range`` are then unused).

    ``inv_smooth`` [K]: multiply by ``1/s`` first (rounded to ``x``'s dtype, as SVDQuant's eager forward does).
    ``down`` [r, K]: the low-rank down-projection of the smoothed ``x``; its output is zero-padded to ``r_pad``
    columns (a power of two, at least 16) for the GEMM's epilogue.
    """
    _check_device(x)
    if x.dim() != 2 or x.stride(1) != 1:
        raise ValueError(f"quantize_rows needs a row-major 2-D activation, got shape {tuple(x.shape)}")
    m, k = x.shape
    if fp8:
        from accelerando.quant.fp8 import FP8_EPS, FP8_MAX

        lo, hi, divisor, eps = -FP8_MAX, FP8_MAX, FP8_MAX, FP8_EPS
    else:
        hi = 2 ** (bits - 1) - 1
        lo = -hi - 1 if full_range else -hi
        divisor, eps = (hi - lo) / 2.0, _EPS
    rank = 0 if down is None else down.shape[0]
    rp = _rank_pad(rank)
    q = torch.empty(m, k, dtype=torch.float8_e4m3fn if fp8 else torch.int8, device=x.device)
    scale = torch.empty(m, dtype=torch.float32, device=x.device)
    lx = torch.empty(m, rp, dtype=torch.bfloat16, device=x.device) if rp else None
    quant, _ = _kernels()
    block_m = 16
    block_k = _INTERPRET_TILE[2] if _interpreting() else min(256, max(16, triton.next_power_of_2(k)))
    dummy = scale
    quant[(triton.cdiv(m, block_m),)](
        x,
        inv_smooth.float().contiguous() if inv_smooth is not None else dummy,
        down.to(torch.bfloat16).contiguous() if rank else dummy,
        q,
        scale,
        lx if rp else dummy,
        m,
        rank,
        x.stride(0),
        float(lo),
        float(hi),
        float(divisor),
        float(eps),
        K=k,
        FP8=fp8,
        HAS_SMOOTH=inv_smooth is not None,
        RANK_PAD=rp,
        DOT_BF16=not _interpreting(),
        BLOCK_M=block_m,
        BLOCK_K=block_k,
    )
    return q, scale[:, None], lx


def int8_gemm(
    q: torch.Tensor,
    scale: torch.Tensor,
    qweight: torch.Tensor,
    weight_scale: torch.Tensor,
    bias: torch.Tensor | None,
    w_bits: int,
    group_size: int | None,
    out_dtype: torch.dtype,
    lx: torch.Tensor | None = None,
    up: torch.Tensor | None = None,
) -> torch.Tensor:
    """``q`` int8 [M, K] (per-row ``scale`` [M, 1]) times the quantized weight -> [M, N] in ``out_dtype``.

    ``qweight``: int8 [N, K] (``w_bits=8``) or packed uint8 [N, K/2] (``w_bits=4``); ``weight_scale`` [N, G];
    ``lx`` [M, r_pad] and ``up`` [N, r]: adds ``lx @ up^T`` (the SVDQuant up-projection) in the epilogue.
    """
    _check_device(q)
    m, k = q.shape
    n = qweight.shape[0]
    if (w_bits == 4 and qweight.shape[1] * 2 != k) or (w_bits == 8 and qweight.shape[1] != k):
        raise ValueError(f"weight codes {tuple(qweight.shape)} do not match {w_bits}-bit weights for K={k}")
    group = group_size or 0
    out = torch.empty(m, n, dtype=out_dtype, device=q.device)
    rank = 0 if up is None else up.shape[1]
    rp = _rank_pad(rank)
    if rp and (lx is None or lx.shape != (m, rp)):
        raise ValueError(f"lx must be [M, {rp}] for a rank-{rank} up-projection")
    # the up-projection [M, r] x [r, N] is a bf16 cuBLAS GEMM; its output is added in the epilogue, before the one
    # cast. (A tl.dot of lx and L1 in the epilogue read shared memory out of bounds for some tile shapes with
    # Triton 3.6 on sm_90, as compute-sanitizer showed; see docs/quantization.md.)
    low = torch.mm(lx[:, :rank], up.to(torch.bfloat16).t()) if rp else None
    _, gemm = _kernels()
    scale_flat = scale.reshape(-1).float().contiguous()
    args = (
        q.contiguous(),
        scale_flat,
        qweight.contiguous(),
        weight_scale.float().contiguous(),
        bias.float().contiguous() if bias is not None else scale_flat,
        low if low is not None else scale_flat,
        out,
        m,
        n,
        weight_scale.shape[1],
        triton.next_power_of_2(m),
    )
    flags = {"K": k, "W4": w_bits == 4, "GROUP": group, "HAS_BIAS": bias is not None, "HAS_LOW": low is not None}
    if _interpreting():
        bm, bn, bk = _INTERPRET_TILE
        flags["BLOCK_K"] = min(bk, group) if group else bk
        grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn),)
        gemm[grid](*args, **flags, BLOCK_M=bm, BLOCK_N=bn, GROUP_M=8)
    else:
        flags["BLOCK_K"] = min(_BLOCK_K, group) if group else _BLOCK_K

        def grid(meta):
            return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)

        gemm[grid](*args, **flags)
    return out


def fits_offsets(rows: int, in_features: int, out_features: int) -> bool:
    """Whether ``rows`` x either width stays under 2**31 (the kernels index with 32-bit offsets)."""
    return rows * max(in_features, out_features) < 2**31


def supports(layer, rows: int = 0) -> bool:
    """Whether a :class:`~accelerando.quant.linear.QuantLinear`'s layout fits the GEMM kernel: group sizes that
    are powers of two of at least 32 (a K block never straddles two groups), and :func:`fits_offsets`."""
    g = layer.group_size
    if not fits_offsets(rows, layer.in_features, layer.out_features):
        return False
    return g is None or (g >= 32 and g & (g - 1) == 0)


def a8_linear(layer, x2: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """A4/A8 forward of a ``QuantLinear`` on ``x2`` [M, K] -> [M, N]: quantize kernel + fused GEMM."""
    q, sa, _ = quantize_rows(x2.contiguous(), layer.a_bits, layer.full_range)
    return int8_gemm(q, sa, layer.qweight, layer.weight_scale, layer.bias, layer.w_bits, layer.group_size, out_dtype)


def svd_linear(layer, x2: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """Forward of an ``SVDQuantLinear`` (A4/A8 residual) on ``x2`` [M, K] -> [M, N]: smoothing and the low-rank
    down-projection fused into the quantize kernel, the up-projection into the GEMM's epilogue."""
    res = layer.residual
    down = layer.lora_down if layer.rank else None
    q, sa, lx = quantize_rows(x2.contiguous(), res.a_bits, res.full_range, layer.inv_smooth, down)
    up = layer.lora_up if layer.rank else None
    return int8_gemm(q, sa, res.qweight, res.weight_scale, res.bias, res.w_bits, res.group_size, out_dtype, lx, up)
