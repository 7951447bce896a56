"""Opt-in fused CPU execution of the A8 quantized linears through ``torch.compile`` (inductor).

The eager A8 path of :class:`~accelerando.quant.linear.QuantLinear` runs four or more memory passes around the
integer GEMM (absmax, quantize, int32 -> float and the scales, bias, cast to the output dtype); at the backbone's
sizes (``M`` ~ 1400 rows, ``K``/``N`` 384..1536) those passes cost more than the GEMM saves. Here the same math is
traced by ``torch.compile``; inductor emits one C++ kernel for the per-token quantization (absmax + round + clamp +
int8 store), calls ``torch._int_mm`` for the GEMM, and one C++ kernel for the whole epilogue (int32 -> fp32, weight
scale, activation scale, bias, cast). For :class:`~accelerando.quant.svd.SVDQuantLinear` the ``1/s`` smoothing is
folded into the quantization kernel, and the low-rank branch is traced in the same graph.

Switch (off by default)::

    from accelerando.quant import use_fused_kernels
    use_fused_kernels(True)            # from now on
    with use_fused_kernels(True):      # or only inside the block (the previous setting comes back on exit)
        pipe(...)

or set ``ACCELERANDO_QUANT_KERNELS=fused`` in the environment (read at import; the CLI needs no flag).

Numerics: the compiled functions below are line-for-line mirrors of the eager ``QuantLinear._run`` /
``SVDQuantLinear.forward`` math (same operations in the same order; inductor does not reassociate float ops, and
``emulate_precision_casts`` keeps every bf16 rounding the eager path does), and the tests check that the outputs
are bit-identical to the eager path, which is itself checked against the pure-torch int32 reference.

Varying ``M`` (clip length): ``shapes="dynamic"`` (default) marks the row count ``M`` dynamic (``K``, ``N``, bits and
dtypes stay compile-time constants), so each layer signature compiles once and a new clip length costs nothing.
``"static"`` compiles one specialised graph per shape, i.e. again for every new clip length (a compile per length,
no measurable speed gain here; see docs/quantization.md).

4-bit weights stay packed in memory: the compiled graph unpacks them into a temporary int8 [N, K] buffer on each
call (one small kernel, ``N*K`` bytes written) rather than keeping an unpacked int8 copy per layer, which would
double the resident weight bytes and give up the point of W4. ``use_fused_kernels(True, cache_int4=True)`` keeps
that copy instead (faster, memory of W8); for grouped 4-bit weights the copy is the folded int8 codes with their
per-row scale (``QuantLinear.gemm_weight``), else the fold is redone on every call.

Used only where it applies: CPU tensors, no input requiring grad (the recovery fine-tune stays eager), ``M > 0``.
If ``torch.compile`` cannot run here (no C++ compiler, unsupported Python / platform), the first call warns once and
every later call runs eagerly.
"""

import os
import time
import types
import warnings

import torch
import torch.nn.functional as F

from accelerando.kernels.modes import dispatch_mode_active
from accelerando.quant.primitives import int_mm_native, quantize_per_token, unpack_int4
from accelerando.quant.switches import group_folding_enabled

__all__ = ["use_fused_kernels", "fused_kernels_enabled", "fused_status", "a8_linear_fused", "svd_linear_fused"]

_SHAPES = ("dynamic", "static")
_ENV = "ACCELERANDO_QUANT_KERNELS"
_RECOMPILE_LIMIT = 256

_state: dict = {
    "enabled": os.environ.get(_ENV, "eager").strip().lower() in ("fused", "compiled", "1", "true"),
    "shapes": "dynamic",
    "cache_int4": False,
    "broken": None,  # the error text once compilation has failed in this process
}
_compiled: dict = {}  # (kind, shapes) -> compiled callable
_stats = {"compile_calls": 0, "first_call_seconds": {}}


class use_fused_kernels:
    """Turn the fused (``torch.compile``) A8 path on or off; usable as a plain call or as a context manager.

    ``shapes``: ``"dynamic"`` (one compile per layer signature, any ``M``) or ``"static"`` (one per shape).
    ``cache_int4``: keep an unpacked int8 copy of 4-bit weights (faster W4A8, W8 resident memory).
    """

    def __init__(self, enabled: bool = True, shapes: str = "dynamic", cache_int4: bool = False):
        if shapes not in _SHAPES:
            raise ValueError(f"shapes must be one of {_SHAPES}, got {shapes!r}")
        self._prev = (_state["enabled"], _state["shapes"], _state["cache_int4"])
        _state.update(enabled=bool(enabled), shapes=shapes, cache_int4=bool(cache_int4))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _state["enabled"], _state["shapes"], _state["cache_int4"] = self._prev
        return False


def fused_kernels_enabled() -> bool:
    """Whether quantized linears currently take the fused path (switched on and compilation not failed)."""
    return _state["enabled"] and _state["broken"] is None


def fused_status() -> dict:
    """Setting, failure text (``broken``) and the first-call latency of each compiled kernel (compile included)."""
    return {
        "enabled": _state["enabled"],
        "shapes": _state["shapes"],
        "cache_int4": _state["cache_int4"],
        "broken": _state["broken"],
        "first_call_seconds": dict(_stats["first_call_seconds"]),
    }


def applies(x: torch.Tensor) -> bool:
    """Whether the fused path should run for input ``x`` (the switch, CPU, no autograd, rows present, and a CPU whose
    ``torch._int_mm`` is fast: ``primitives.int_mm_native``; elsewhere the eager path's float32 GEMM of the codes)."""
    if not fused_kernels_enabled() or x.device.type != "cpu" or x.numel() == 0 or dispatch_mode_active():
        return False  # (under a dispatch mode: see accelerando.kernels.modes)
    if not int_mm_native(x.device):
        return False
    return not (torch.is_grad_enabled() and x.requires_grad)


# ---- the traced math: mirrors of the eager code, keep them in step (tests check bit-identity) -------------------


def _a8_math(x2, qw, weight_scale, bias, bits: int, full_range: bool, group_size, out_dtype: torch.dtype):
    """``QuantLinear._run``'s A8 branch. ``x2`` [M, K]; ``qw`` int8 [N, K] -> [M, N] in ``out_dtype``."""
    qa, sa = quantize_per_token(x2, full_range, bits)  # [M, K] int8, [M, 1]
    if group_size is None:
        y = torch._int_mm(qa, qw.t()).float() * weight_scale[:, 0]
    else:
        y = None
        for g, i in enumerate(range(0, qw.shape[1], group_size)):
            acc = torch._int_mm(qa[:, i : i + group_size].contiguous(), qw[:, i : i + group_size].t())
            part = acc.float() * weight_scale[:, g]
            y = part if y is None else y + part
    y = y * sa
    if bias is not None:
        y = y + bias
    return y.to(out_dtype)


def _a8_kernel(x2, qweight, weight_scale, bias, w4: bool, bits: int, full_range: bool, group_size, out_dtype):
    qw = unpack_int4(qweight) if w4 else qweight
    return _a8_math(x2, qw, weight_scale, bias, bits, full_range, group_size, out_dtype)


def _svd_kernel(x, inv_smooth, down, up, qweight, weight_scale, bias, w4, bits, full_range, group_size, out_dtype):
    """``SVDQuantLinear.forward`` (residual A8 + low-rank branch). ``x`` [M, K] -> [M, N].

    ``down`` / ``up``: the low-rank factors already in the dtype the eager branch multiplies them in (fp32, or the
    autocast dtype under autocast), converted outside the graph and multiplied with autocast off: a cast inside the
    graph lets inductor materialise the factor transposed, and the GEMM then sums in another order than eager.
    Returns ``(residual, low-rank)``; the caller adds them outside the graph (inside it, inductor fuses the sum with
    the residual's bf16 cast and skips that rounding, so the result would differ from eager by an ulp).
    """
    xs = x * inv_smooth.to(x.dtype)
    qw = unpack_int4(qweight) if w4 else qweight
    y = _a8_math(xs, qw, weight_scale, bias, bits, full_range, group_size, out_dtype)
    if down is None:
        return y, None
    with torch.autocast("cpu", enabled=False):
        low = F.linear(F.linear(xs.float().to(down.dtype), down), up)
    return y, low.to(y.dtype)


# ---- compilation, dispatch, fallback ----------------------------------------------------------------------------


def _get(kind: str):
    key = (kind, _state["shapes"])
    fn = _compiled.get(key)
    if fn is None:
        raw = {"a8": _a8_kernel, "svd": _svd_kernel}[kind]
        if _state["shapes"] == "static":  # own code object, so dynamo keeps its graphs apart from the dynamic ones
            raw = types.FunctionType(raw.__code__.replace(), raw.__globals__, raw.__name__ + "_static")
        # static by default; "dynamic" marks only the row dim M dynamic (K, N, bits stay compile-time constants)
        fn = torch.compile(raw, dynamic=False, options={"emulate_precision_casts": True})
        _compiled[key] = fn
    return fn


def _run(kind: str, sig: tuple, eager, *args):
    """Call the compiled ``kind`` kernel; on a compilation failure warn once, switch off and run ``eager()``."""
    fn = _get(kind)
    first = (kind, _state["shapes"]) + sig not in _stats["first_call_seconds"]
    if _state["shapes"] == "dynamic" and args[0].shape[0] > 1:  # sizes 0 / 1 are always specialised
        torch._dynamo.mark_dynamic(args[0], 0)
    t0 = time.perf_counter()
    try:
        # every layer signature (dtypes, bits, K, N, autocast) is one graph of the same function: lift dynamo's
        # per-function recompile limit (8) so that a model's handful of signatures all stay compiled
        with torch._dynamo.config.patch(recompile_limit=max(_RECOMPILE_LIMIT, torch._dynamo.config.recompile_limit)):
            out = fn(*args)
    except Exception as err:  # noqa: BLE001 -- any inductor / C++ toolchain failure means: run eagerly
        _state["broken"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:500]
        warnings.warn(
            f"accelerando.quant: fused kernels unavailable ({_state['broken']}); running the eager quantized path",
            RuntimeWarning,
            stacklevel=3,
        )
        return eager()
    if first:
        _stats["first_call_seconds"][(kind, _state["shapes"]) + sig] = time.perf_counter() - t0
    return out


def _cached(layer, name: str, stamp: tuple, compute):
    """``compute()``, kept on ``layer`` under ``name`` until ``stamp`` (data pointers and versions) changes."""
    cache = layer.__dict__.get(name)
    if cache is None or cache[0] != stamp:
        cache = (stamp, compute())
        layer.__dict__[name] = cache
    return cache[1]


def _weight(layer) -> tuple[torch.Tensor, bool]:
    """(weight codes to hand the kernel, whether they are still packed 4-bit)."""
    if layer.w_bits != 4:
        return layer.qweight, False
    if not _state["cache_int4"]:
        return layer.qweight, True
    stamp = (layer.qweight.data_ptr(), layer.qweight._version)
    return _cached(layer, "_int4_cache", stamp, lambda: unpack_int4(layer.qweight)), False


def _gemm_args(layer) -> tuple[torch.Tensor, bool, torch.Tensor, int | None]:
    """(weight codes, whether still packed 4-bit, scales [N, G], group size) to hand the kernel: 4-bit grouped
    weights as ``QuantLinear.gemm_weight`` gives them (folded to one scale per row, or unpacked with their groups),
    kept per layer under ``cache_int4``."""
    if layer.group_size is not None and layer.w_bits == 4:
        if not _state["cache_int4"]:
            qw, scale, gs = layer.gemm_weight()
        else:
            stamp = tuple((t.data_ptr(), t._version) for t in (layer.qweight, layer.weight_scale))
            stamp += (group_folding_enabled(),)
            qw, scale, gs = _cached(layer, "_gemm_cache", stamp, layer.gemm_weight)
        return qw, False, scale, gs
    qw, w4 = _weight(layer)
    return qw, w4, layer.weight_scale, layer.group_size


def a8_linear_fused(layer, x2: torch.Tensor, out_dtype: torch.dtype, eager) -> torch.Tensor:
    """Fused A8 forward of ``QuantLinear`` ``layer`` on ``x2`` [M, K] -> [M, N]; ``eager()`` is the fallback."""
    qw, w4, scale, gs = _gemm_args(layer)
    sig = (x2.dtype, out_dtype, layer.w_bits, layer.a_bits, layer.full_range, gs, tuple(qw.shape), w4)
    args = (x2, qw, scale, layer.bias, w4, layer.a_bits, layer.full_range, gs, out_dtype)
    return _run("a8", sig, eager, *args)


def svd_linear_fused(layer, x2: torch.Tensor, out_dtype: torch.dtype, eager) -> torch.Tensor:
    """Fused forward of ``SVDQuantLinear`` ``layer`` (A8 residual) on ``x2`` [M, K] -> [M, N]."""
    res = layer.residual
    qw, w4, scale, gs = _gemm_args(res)
    down = up = None
    if layer.rank:  # eager: F.linear on .float() factors, i.e. in the autocast dtype when autocast is on
        lr_dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32
        down, up = layer.lora_down.to(lr_dtype), layer.lora_up.to(lr_dtype)
    sig = (x2.dtype, out_dtype, res.w_bits, res.a_bits, res.full_range, gs, tuple(qw.shape), layer.rank, w4)
    args = (x2, layer.inv_smooth, down, up, qw, scale, res.bias, w4, res.a_bits, res.full_range)
    out = _run("svd", sig, eager, *args, gs, out_dtype)
    if isinstance(out, torch.Tensor):  # the eager fallback ran
        return out
    y, low = out
    return y if low is None else y + low
