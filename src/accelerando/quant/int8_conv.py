"""Quantized convolutions as oneDNN int8 convolutions on the CPU (per-tensor uint8 activations, int8 weights).

Why: a quantized :class:`~accelerando.quant.conv.UnfoldConv1d` otherwise runs as unfold + int8 GEMM, which pays a
``k``-fold copy of its input and was slower than oneDNN's bf16 convolution on the dev CPU; with one activation
scale per frame the ``k`` taps cannot be summed in int32 at all (BENCHMARKS.md, "Int8 convolutions without the
unfold copy"). With one scale and zero point for the whole input (``act_scale="tensor"`` in the configs), the
convolution is exactly what PyTorch's own x86 int8 path lowers to: ``torch.ops.onednn.qconv_pointwise`` (uint8
activations with a zero point, int8 weights with one scale per output channel, AVX512-VNNI, bias and the output
cast in its epilogue). No hand-written kernel: this module only feeds that library op.

Per call, ``x`` [B, C_in, T] -> [B, C_out, T_out]:

1. ``q, scale, zp = quantize_per_tensor_u8(x * inv_smooth)`` (the smoothing only for SmoothQuant / SVD layers),
   the codes written channels-last, the layout oneDNN reads without a reorder;
2. the oneDNN convolution of the codes with the layer's int8 weight, prepacked once per layer, without the zero
   point: ``zp`` times the weight codes' sum is folded into the bias, and the zero padding (code ``zp`` in the
   reference, code 0 for oneDNN here) is put back on the few edge frames (:func:`conv_codes`). With a source zero
   point oneDNN's kernels took 1.1-1.5x longer on the AVX2 CPU of BENCHMARKS.md;
3. for :class:`~accelerando.quant.svd.SVDQuantLinear`, the 16-bit low-rank branch as a rank-``r`` convolution of
   the input with ``L2 / s`` followed by a 1x1 convolution with ``L1`` (``L1 L2`` is never formed);
4. oneDNN's channels-last float32 output (plus the low-rank branch, plus a residual block's skip connection when
   :mod:`accelerando.quant.norm_codes` runs the block) back to the channels-first layout and dtype the backbone
   reads, in one pass.

Steps 1 and 4 run as small C++ kernels (a min/max pass and a codes pass; a tiled transpose) from the library of
:mod:`accelerando.quant.norm_codes`, built at first use; they give the eager ops' values (tests compare them code
for code and bit for bit), where the eager ops run if the library cannot be built. Until 2026-11-27 inductor
compiled them instead: as fast per call, but its first call cost about 6.5 s per process even with a warm disk
cache, more than a single 30 s generation saved (BENCHMARKS.md, "W8A8 on a CPU without VNNI, second pass").

Weights: the layer's codes as :meth:`~accelerando.quant.linear.QuantLinear.gemm_weight` gives them (4-bit codes
unpacked; grouped 4-bit folded to one scale per row), reshaped to ``[C_out, C_in, k]``. The prepacked copy lives in
a cache keyed by the layer object and is rebuilt when the layer's codes, scales or smoothing are replaced or changed
in place (low-rank recovery assigns new scales). It holds int8 bytes, so a W4A8 layer's resident weight is 8-bit
on this path, as with ``use_fused_kernels(cache_int4=True)``.

Used when all of these hold, else the unfold path runs (the reference, same integer math):

- :func:`~accelerando.quant.switches.use_int8_convs` is on (the default; ``ACCELERANDO_QUANT_CONVS=unfold``);
- CPU tensors, ``torch.ops.onednn.qconv_pointwise`` present (oneDNN builds of PyTorch) and a CPU with VNNI. On a
  CPU without VNNI (AVX2) oneDNN multiplies uint8 by int8 in pairs summed in saturating int16 (``vpmaddubsw``),
  which is exact only while no pair passes ``2^15 - 1``: layers whose weight codes all lie within ``[-64, 64]``
  (``2 * 255 * 64 = 32640``) still run through oneDNN there, 2.1-3.8x faster than a float32 convolution on the
  AVX2 CPU of BENCHMARKS.md. That holds for ``reduce_range`` layers (7-bit codes, or 4-bit groups folded in eighths:
  :class:`~accelerando.quant.linear.QuantLinear`) and 4-bit layers with one scale per channel. Other layers (and
  every layer under ``ACCELERANDO_QUANT_INT_MM=float``) run as one float32 convolution of the codes ``q - zp``
  with the weight codes: the same integer sums (exact in float32) and the reference's epilogue, about a float32
  convolution's cost where unfold + GEMM cost 2.4x that;
- float32 or bfloat16 input and output (autocast included), and windows that read every input frame (so that the
  input's min/max is the windows' min/max: strided convolutions that skip frames take the unfold path);
- the layer is A8 with ``act_scale="tensor"``, and its groups are folded (``use_group_folding``, the default);
- SmoothQuant / SVD: one smoothing factor per input channel (``layer_smoothing`` ties the taps for these configs);
- no autograd through the input and the layer's ``forward`` not replaced (low-rank recovery trains through unfold).

Numerics: the integer codes and int32 sums are those of the unfold reference (zero padding is a zero code offset,
and the per-tensor range includes zero in both), so only the float epilogue's rounding differs. The folded zero
point moves some integer arithmetic into that epilogue, where ``-scale zp w_scale sum(w)`` in the bias cancels
against the sums: about 1e-7 relative per layer on the built-in (tests: SQNR of this path against the reference
above 100 dB). Per-tensor scales are coarser than per-token ones; what that costs in audio is
measured in BENCHMARKS.md ("W8A8 convolutions through oneDNN"). One scale covers the whole call, so every row of a
batch (the guidance branches, batched prompts) shares it: outputs depend on what is batched together.
"""

import weakref
from typing import NamedTuple

import torch
import torch.nn.functional as F

from accelerando.kernels.modes import dispatch_mode_active
from accelerando.quant.primitives import _cpu_has_vnni, quantize_per_tensor_u8
from accelerando.quant.switches import group_folding_enabled, int8_convs_enabled

__all__ = [
    "PAIR_SAFE_CODE",
    "available",
    "applies",
    "conv_codes",
    "float_codes_conv",
    "forget",
    "int8_conv1d",
    "op_available",
    "plan",
    "status",
]

# cpp: the C++ twins of _quantize / _finish (False: eager only); fold_zp: False gives oneDNN the activation zero
# point (the path before the fold; benchmarks compare the two)
_state: dict = {"cpp": True, "fold_zp": True}
_packed: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # QuantLinear -> (sources, packed weight, ...)


def op_available() -> bool:
    """Whether this PyTorch build has oneDNN's int8 convolution op (any x86 CPU runs it)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qconv_pointwise")


def available() -> bool:
    """Whether oneDNN's int8 convolution runs every per-tensor layer exactly here: the op exists and the CPU has
    VNNI (without it oneDNN's uint8 x int8 kernels sum pairs in saturating int16, exact only for weight codes
    within ``[-64, 64]``: :data:`PAIR_SAFE_CODE`)."""
    return op_available() and _cpu_has_vnni()


# Without VNNI a uint8 code (at most 255) times an int8 weight code is summed with its neighbour in int16 before the
# int32 accumulation: |w| <= 64 keeps every pair within 2 * 255 * 64 = 32640 < 2^15, so the int32 sums are exact.
PAIR_SAFE_CODE = 64


_DTYPES = (torch.float32, torch.bfloat16)  # what oneDNN's int8 convolution reads and writes here


def _covers_input(conv, frames: int) -> bool:
    """Whether the windows of ``conv`` read every input frame, so that the min/max over the input (this path) equals
    the min/max over the unfolded windows (the reference)."""
    k, s, p, d = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    span = d * (k - 1) + 1
    t_out = (frames + 2 * p - span) // s + 1
    if t_out < 1:
        return False
    if d > 1:  # taps d apart: consecutive stride-1 windows fill the gaps once there are at least d of them
        return s == 1 and t_out >= d
    return s <= span and (t_out - 1) * s + span >= frames + p


def status() -> dict:
    """Switch, oneDNN availability, the mode per-tensor convs run in and the state of the two small C++ passes
    (``cpp_kernels``: enabled, built, and why not), for reports."""
    return {
        "enabled": int8_convs_enabled(),
        "available": available(),
        # "onednn" (VNNI), "auto" (no VNNI: oneDNN for layers whose weight codes fit PAIR_SAFE_CODE, else a float32
        # conv of the codes), "float" (forced by ACCELERANDO_QUANT_INT_MM=float) or None (unfold)
        "mode": _mode(),
        "cpp_kernels": _cpp_status(),
    }


def _quantize(x: torch.Tensor, inv: torch.Tensor | None):
    """``x`` [B, C, T] (times ``inv`` [C] per channel) -> ``quantize_per_tensor_u8``'s (codes, scale, zero point),
    the codes laid out channels-last (strides ``[T C, 1, C]``), the layout oneDNN's kernel reads without a reorder."""
    if inv is not None:
        x = x * inv.to(x.dtype)[:, None]  # the dtype the reference path smooths in
    q, scale, zp = quantize_per_tensor_u8(x)
    return q.transpose(1, 2).contiguous().transpose(1, 2), scale, zp


def _finish(
    y: torch.Tensor, low: torch.Tensor | None, dtype: torch.dtype, residual: torch.Tensor | None = None
) -> torch.Tensor:
    """oneDNN's channels-last float32 output [B, C_out, T] (plus the low-rank branch) -> a channels-first tensor of
    ``dtype``, added to ``residual`` [B, C_out, T] (of ``dtype``) if given: one pass for the transpose and a residual
    block's skip connection."""
    if low is not None:
        y = y + low.to(y.dtype)
    y = y.to(dtype)
    return (y if residual is None else residual + y).contiguous()


def _run(fn, *args):
    """``fn(*args)`` (:func:`_quantize` or :func:`_finish`) through its C++ twin in the norm-codes library
    (:func:`accelerando.quant.norm_codes.conv_input_codes` / :func:`~accelerando.quant.norm_codes.conv_output`:
    the same values, a tiled transpose several times faster than ``Tensor.contiguous``, no compile step), or
    eagerly where the twin does not apply (a layout or dtype it does not take, no C++ compiler, or a
    ``TorchDispatchMode`` active: :mod:`accelerando.kernels.modes`)."""
    if _state["cpp"] and not dispatch_mode_active():
        from accelerando.quant import norm_codes

        out = (norm_codes.conv_input_codes if fn is _quantize else norm_codes.conv_output)(*args)
        if out is not None:
            return out
    return fn(*args)


def _cpp_status() -> dict:
    from accelerando.quant import norm_codes

    return {"enabled": _state["cpp"], **norm_codes.status()}


def _layers(conv):
    """(the A8 QuantLinear holding the residual codes, the SVD / SmoothQuant layer or None) of ``conv.linear``."""
    from accelerando.quant.linear import QuantLinear
    from accelerando.quant.svd import SVDQuantLinear

    lin = conv.linear
    if isinstance(lin, SVDQuantLinear):
        return lin.residual, lin
    if isinstance(lin, QuantLinear):
        return lin, None
    return None, None


def plan(conv, x: torch.Tensor) -> tuple | None:
    """What :func:`int8_conv1d` needs to run ``conv`` (an :class:`~accelerando.quant.conv.UnfoldConv1d`) through
    oneDNN for input ``x``: (residual QuantLinear, cached entry, output dtype), or None where the unfold path runs.
    Looked up once per call."""
    if not int8_convs_enabled() or x.device.type != "cpu" or x.dtype not in _DTYPES or x.numel() == 0:
        return None
    from accelerando.quant.linear import autocast_output_dtype

    out_dtype = autocast_output_dtype(x)
    if out_dtype not in _DTYPES or x.dim() != 3 or not _covers_input(conv, x.shape[-1]):
        return None
    res, svd = _layers(conv)
    if res is None or res.a_bits != 8 or res.act_scale != "tensor" or "forward" in vars(conv.linear):
        return None
    if res.group_size is not None and not (res.w_bits == 4 and group_folding_enabled()):
        return None  # exact per-group scales: one GEMM per group, unfold only
    if torch.is_grad_enabled() and x.requires_grad:
        return None
    mode = _mode()
    if mode is None:
        return None
    entry = _entry(conv, res, svd, mode)
    return None if entry is None else (res, entry, out_dtype)


def _mode() -> str | None:
    """``"onednn"`` (VNNI: oneDNN's int8 convolution), ``"auto"`` (no VNNI, where ``int8_mm`` multiplies codes in
    float32: oneDNN for the layers whose weight codes lie within ``[-64, 64]``, one float32 convolution of the codes
    for the others), ``"float"`` (``ACCELERANDO_QUANT_INT_MM=float``: the float32 convolution for every layer) or
    None (``ACCELERANDO_QUANT_INT_MM=native`` without VNNI: the unfold path with ``torch._int_mm``)."""
    from accelerando.quant.primitives import int_mm_native, int_mm_setting

    if int_mm_native("cpu"):
        return "onednn" if available() else None
    # not native: either forced to float, or "auto" on a CPU without VNNI
    return "auto" if int_mm_setting() == "auto" and op_available() else "float"


def applies(conv, x: torch.Tensor) -> bool:
    """Whether ``conv`` runs through oneDNN for input ``x`` (:func:`plan` finds one)."""
    return plan(conv, x) is not None


def _sources(res, svd) -> tuple:
    """The tensors a packed weight is built from, with their in-place version counters."""
    ts = (res.qweight, res.weight_scale) + (() if svd is None else (svd.inv_smooth, svd.lora_down, svd.lora_up))
    return tuple((t, -1 if t.is_inference() else t._version) for t in ts)  # inference tensors have no counter


def forget(layer) -> None:
    """Drop the packed weight of ``layer`` (a QuantLinear, or an SVDQuantLinear's residual's): its buffers were
    loaded. Registered as a load-state-dict hook, because buffers made inside ``torch.inference_mode()`` have no
    version counter to show the change (in-place edits of such buffers are not seen)."""
    _packed.pop(getattr(layer, "residual", layer), None)


def _same(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(t1 is t2 and v1 == v2 for (t1, v1), (t2, v2) in zip(a, b, strict=True))


class _Entry(NamedTuple):
    """A layer's cached convolution weights (see :func:`_entry`)."""

    weight: object  # oneDNN's packed weight, or for mode "float" the codes as a float32 conv weight [C_out, C_in, k]
    w_scale: torch.Tensor  # [C_out]
    zeros: torch.Tensor  # int64 [C_out] weight zero points
    inv: torch.Tensor | None  # [C_in] per-channel 1/s (SmoothQuant / SVD) or None
    low: tuple | None  # the low-rank branch as conv weights (down [r, C_in, k], up [C_out, r, 1]) or None
    mode: str  # "onednn" or "float": how this layer runs
    asked: str  # the mode it was built for (``_mode()``: "onednn", "auto" or "float")
    taps: torch.Tensor | None  # "onednn": fp32 [C_out, k], w_scale times the weight codes summed over C_in per tap
    w_sum: torch.Tensor | None  # "onednn": fp32 [C_out], ``taps`` summed over the taps
    edges: dict | None  # "onednn": (T_in, T_out) -> (n_left, n_right, fp32 [C_out, n_left + n_right]): see _edges


def _entry(conv, res, svd, mode: str = "onednn"):
    """The cached :class:`_Entry` of a layer for ``mode``, rebuilt when a source or the mode changed; None when the
    smoothing differs between the taps of a channel (no native conv exists)."""
    src = _sources(res, svd)
    hit = _packed.get(res)
    if hit is not None and _same(hit[0], src) and (hit[1] is None or hit[1].asked == mode):
        return hit[1]
    k, c_in = conv.kernel_size, conv.in_channels
    inv = None
    if svd is not None:
        taps = svd.inv_smooth.detach().float().reshape(c_in, k)
        if not torch.equal(taps, taps[:, :1].expand(-1, k)):
            _packed[res] = (src, None)
            return None
        inv = taps[:, 0].contiguous()
    low = None
    if svd is not None and svd.rank:  # L2 / s as a rank-r conv [r, C_in, k] (1/s folded in), L1 as a 1x1 conv
        down = svd.lora_down.detach().float().reshape(svd.rank, c_in, k) * inv[None, :, None]
        low = (down, svd.lora_up.detach().float()[:, :, None])
    qw, scale, _ = res.gemm_weight()  # int8 [C_out, C_in * k], fp32 [C_out, 1]
    w_scale = scale[:, 0].float().contiguous()
    weight = qw.reshape(conv.out_channels, c_in, k).contiguous()
    zeros = torch.zeros(conv.out_channels, dtype=torch.int64)
    run = mode
    if mode == "auto":  # no VNNI: oneDNN only where no pair of products can saturate int16
        small = -PAIR_SAFE_CODE <= int(weight.min()) and int(weight.max()) <= PAIR_SAFE_CODE  # no int8 abs: -128
        run = "onednn" if small else "float"
    if run == "float":
        entry = _Entry(weight.float(), w_scale, zeros, inv, low, run, mode, None, None, None)
    else:
        args = ([conv.stride], [conv.padding], [conv.dilation])
        packed = torch.ops.onednn.qconv_prepack(weight, w_scale, 1.0, 0, *args, 1, None)
        taps = weight.float().sum(1) * w_scale[:, None]  # [C_out, k]
        entry = _Entry(packed, w_scale, zeros, inv, low, run, mode, taps, taps.sum(1), {})
    _packed[res] = (src, entry)
    return entry


def int8_conv1d(conv, x: torch.Tensor, how: tuple) -> torch.Tensor:
    """``conv(x)`` through oneDNN, ``x`` [B, C_in, T] -> [B, C_out, T_out], with ``how`` from :func:`plan`."""
    if how[1].mode == "float":
        return _float_codes_conv(conv, x, how)
    q, scale, zp = _run(_quantize, x, how[1].inv)
    return conv_codes(conv, q, scale, zp, how, x)


def _float_codes_conv(conv, x: torch.Tensor, how: tuple) -> torch.Tensor:
    """The per-tensor A8 convolution on a CPU without VNNI: the codes ``q - zp`` [B, C_in, T] and the weight codes
    as float32 through one native float32 convolution. The sums equal the unfold reference's int32 ones while every
    partial sum stays below 2^24 in magnitude (guaranteed up to K = C_in * k = 514 for codes within +-255; see
    ``primitives.int8_mm_float`` for the built-in's margin), and the epilogue is the reference's, in its order
    (``QuantLinear._a8_eager``): tests compare the two bit for bit."""
    inv = how[1].inv
    q, scale, zp = quantize_per_tensor_u8(x if inv is None else x * inv.to(x.dtype)[:, None])
    return float_codes_conv(conv, q.float() - zp.float(), scale, how, x)


def float_codes_conv(conv, codes: torch.Tensor, scale, how: tuple, x: torch.Tensor | None = None) -> torch.Tensor:
    """The rest of the ``"float"`` mode from the codes: ``codes`` float32 [B, C_in, T] holding ``q - zp``, ``scale``
    fp32 [] -> [B, C_out, T_out]. ``x`` (the float input) is needed only by a low-rank branch."""
    res, entry, out_dtype = how
    with torch.autocast("cpu", enabled=False):  # float32 sums of integers: exact (autocast would round to bf16)
        acc = F.conv1d(codes, entry.weight, None, conv.stride, conv.padding, conv.dilation)
    y = acc.mul_(entry.w_scale[:, None]).mul_(scale)
    if res.bias is not None:
        y.add_(res.bias[:, None])
    y = y.to(out_dtype)
    low = _low_rank(conv, entry, x)  # added after the cast, as the unfold reference adds its branch
    return y if low is None else y + low.to(y.dtype)


def _padded_taps(conv, frames: int, frames_out: int) -> tuple[int, int, torch.Tensor]:
    """(n_left, n_right, mask): the first ``n_left`` and last ``n_right`` output frames of ``conv`` on ``frames``
    input frames are those whose windows reach into the zero padding, and ``mask`` fp32 [k, n_left + n_right] is 1
    where a tap of such a frame reads padding. (Tap positions grow with the frame, so padded taps only occur in a
    prefix and a suffix of the output frames.)"""
    k, s, p, d = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    pos = torch.arange(frames_out)[:, None] * s - p + torch.arange(k)[None, :] * d  # [T_out, k]
    pad = (pos < 0) | (pos >= frames)
    inside = (~pad.any(1)).nonzero()[:, 0]
    if inside.numel() == 0:  # every frame reads padding (a very short input)
        return frames_out, 0, pad.T.float()
    n_left, n_right = int(inside[0]), frames_out - 1 - int(inside[-1])
    rows = torch.cat([torch.arange(n_left), torch.arange(frames_out - n_right, frames_out)])
    return n_left, n_right, pad[rows].T.float()


def _edges(conv, entry: _Entry, frames: int, frames_out: int) -> tuple[int, int, torch.Tensor]:
    """(n_left, n_right, padded tap sums fp32 [C_out, n_left + n_right]) of a layer for one input length, cached in
    its entry: the weight codes (times their scales) that the padding multiplies at each edge frame."""
    hit = entry.edges.get((frames, frames_out))
    if hit is None:
        if len(entry.edges) >= 64:  # many clip lengths (edit windows): keep the cache small
            entry.edges.clear()
        n_left, n_right, mask = _padded_taps(conv, frames, frames_out)
        hit = entry.edges[(frames, frames_out)] = (n_left, n_right, entry.taps @ mask)
    return hit


def conv_codes(
    conv, q: torch.Tensor, scale, zp, how: tuple, x: torch.Tensor | None = None, residual: torch.Tensor | None = None
) -> torch.Tensor:
    """The rest of :func:`int8_conv1d` from its input's codes: ``q`` uint8 [B, C_in, T] channels-last (strides
    ``[T C, 1, C]``), ``scale`` fp32 [] and ``zp`` int64 [] (``x ~ (q - zp) scale``) -> [B, C_out, T_out]. ``x``
    (the float input) is needed only by a low-rank branch. ``residual`` [B, C_out, T_out] of the output dtype, if given,
    is added to the output (``residual + conv(x)``) in the pass that makes it channels-first.

    The zero point is not given to oneDNN: with a source zero point its kernels took 1.1-1.5x longer per
    convolution on the AVX2 CPU of BENCHMARKS.md ("W8A8 on a CPU without VNNI, second pass"). Instead oneDNN sums
    ``q w`` and the offset ``zp sum(w)`` is folded into the bias, ``b - scale zp w_scale sum(w)``; the padding,
    which oneDNN reads as code 0 where the reference reads code ``zp``, is put back on the few edge frames
    afterwards. The integer sums are the same; the epilogue rounds in float32 in another order (oneDNN writes
    float32 here and the final cast to bf16 comes after the edge fix)."""
    res, entry, out_dtype = how
    args = ([conv.stride], [conv.padding], [conv.dilation], 1)
    if not _state["fold_zp"]:
        y = torch.ops.onednn.qconv_pointwise.tensor(
            q, scale, zp, entry.weight, entry.w_scale, entry.zeros, res.bias, *args, 1.0, 0, out_dtype, "none", [], ""
        )
        return _run(_finish, y, _low_rank(conv, entry, x), out_dtype, residual)
    shift = scale * zp  # fp32 []: the real value of code 0 is -shift
    bias = -shift * entry.w_sum if res.bias is None else torch.addcmul(res.bias, entry.w_sum, -shift)
    y = torch.ops.onednn.qconv_pointwise.tensor(
        q,
        scale,
        zp.new_zeros(()),
        entry.weight,
        entry.w_scale,
        entry.zeros,
        bias.float(),
        *args,
        1.0,
        0,
        torch.float32,
        "none",
        [],
        "",
    )  # channels-last
    if conv.padding:
        n_left, n_right, padded = _edges(conv, entry, q.shape[-1], y.shape[-1])
        fix = padded * shift  # [C_out, n_left + n_right]
        if n_left:
            y[..., :n_left] += fix[:, :n_left]
        if n_right:
            y[..., y.shape[-1] - n_right :] += fix[:, n_left:]
    return _run(_finish, y, _low_rank(conv, entry, x), out_dtype, residual)


def _low_rank(conv, entry: _Entry, x: torch.Tensor | None) -> torch.Tensor | None:
    """The low-rank branch of an SVD layer, [B, C_out, T_out] (None without one)."""
    if entry.low is None:
        return None
    down, up = entry.low
    z = F.conv1d(x, down.to(x.dtype), None, conv.stride, conv.padding, conv.dilation)  # [B, r, T_out]
    return F.conv1d(z, up.to(z.dtype))
