"""The U-Net's ``silu(frame_norm(x))`` and its per-tensor uint8 codes in one small C++ kernel (CPU, opt-in).

Why: with per-tensor activation scales a U-Net block's convolutions run as oneDNN int8 convolutions
(:mod:`accelerando.quant.int8_conv`) that take under half the time of bf16 ones, and what is left of a W8A8 backbone
call is memory-bound elementwise passes around them. Before each block convolution PyTorch makes five: the frame
norm, the modulation (``conv2`` only), SiLU, the min/max of the result, and the quantize-and-transpose. Inductor's
fusions of those did not run faster here (BENCHMARKS.md, "W8A8 on the CPU: two more layouts and fusions tried").
``csrc/norm_codes.cpp`` does it in two passes (three for an SVDQuant layer: see :func:`_conv_after_norm`): (1) per
frame tile and channel group, the statistics, the normalised, modulated, SiLU-ed (and smoothed) values and their
running min/max; (2) the codes, written channels-last. No library fuses a per-frame GroupNorm with a quantizer, so
this one is written here.

Values: each step rounds where the eager chain rounds (float32 sums in channel order, bf16 after every op under
autocast), so the codes are those of ``quantize_per_tensor_u8(silu(norm(x) * mul + add) * smooth)`` except where
the kernel's ``exp`` (a Cephes polynomial with fused multiply-adds, within 1 ulp) and PyTorch's differ before the
bf16 rounding: a code may move by one (none of 14.2 million did at the tests' and the built-in's shapes, in bf16
and float32: benchmarks/norm_codes_exactness.py; the tests allow one in 10,000).

Use: :func:`fuse_block_norms` points every U-Net residual block whose norms are per-frame
(:class:`~accelerando.models.unet.FrameGroupNorm`) at a forward that feeds its convolutions these codes where
:func:`accelerando.quant.int8_conv.plan` runs them through oneDNN (W8A8 and W4A8 RTN / SmoothQuant / SVDQuant with
``act_scale="tensor"``), or, on a CPU without VNNI, its float32 convolution of the codes
(:func:`frame_norm_silu_float_codes`). An SVDQuant layer's low-rank branch reads the float values of pass 1, so
there pass 1 writes them unsmoothed and the smoothing goes into a min/max pass and the codes pass
(:func:`conv_input_codes`). Everything else runs the block's own ops, and so do blocks whose norms or
convolutions carry forward hooks. :func:`unfuse_block_norms` undoes it.

The same library holds the two small passes around every other oneDNN int8 convolution
(:func:`conv_input_codes`, :func:`conv_output`; :mod:`accelerando.quant.int8_conv` calls them).

Build: at first use, ``g++ -O3 -march=native -fopenmp -ffp-contract=off`` into
``$ACCELERANDO_CACHE/kernels/norm_codes-<hash>.so`` (the hash covers the source, the flags and the CPU's feature
flags; written to a temporary name and renamed, so an interrupted build leaves nothing half-written). It links
against ``libgomp.so.1``, which resolves to the OpenMP runtime PyTorch's CPU wheels already loaded (other builds
may end up with two OpenMP runtimes). Without a compiler, or when the build fails, a warning names
why (once), the blocks run their own ops and :mod:`accelerando.quant.int8_conv` its eager passes.
"""

import ctypes
import hashlib
import math
import os
import shutil
import subprocess
import tempfile
import types
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from accelerando.kernels.modes import dispatch_mode_active
from accelerando.paths import cache_dir

__all__ = [
    "available",
    "frame_norm_silu_codes",
    "frame_norm_silu_float_codes",
    "FUSE_ENV",
    "fuse_block_norms",
    "fuse_on_load",
    "unfuse_block_norms",
    "blocks_fused",
    "status",
]

_SOURCE = Path(__file__).parent / "csrc" / "norm_codes.cpp"
_FLAGS = [
    "-O3",
    "-march=native",
    "-fopenmp",
    "-ffp-contract=off",
    "-fno-trapping-math",
    "-fno-math-errno",
    "-shared",
    "-fPIC",
    "-std=c++17",
]
_ABI = 3  # accel_norm_codes_abi() of the source this module binds
_state: dict = {"lib": None, "broken": None}
_DTYPES = {torch.bfloat16: "bf16", torch.float32: "f32"}


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return ""


def _build(so: Path, compiler: str, source: Path | None = None, extra: tuple = ()) -> None:
    so.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=so.parent)
    os.close(fd)
    try:
        cmd = [compiler, *_FLAGS, *extra, str(source or _SOURCE), "-o", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {(done.stderr.strip().splitlines() or ['?'])[-1][:200]}")
        os.replace(tmp, so)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def build_source(source: Path | None = None, extra_flags: tuple = ()) -> ctypes.CDLL:
    """A version of the kernel's source (default: the package's) built with the package's flags plus
    ``extra_flags`` into a temporary directory and loaded (not bound: older versions have other signatures), for
    benchmarks that time one version against another and for tests of the paths another CPU compiles (e.g.
    ``("-mno-avx2",)``: the scalar transposes). Raises ``RuntimeError`` naming the compiler's last message if it
    does not build."""
    folder = tempfile.mkdtemp(prefix="norm-codes-")
    try:
        so = Path(folder) / "norm_codes.so"
        _build(so, os.environ.get("CXX", "g++"), None if source is None else Path(source), tuple(extra_flags))
        return ctypes.CDLL(str(so))  # loaded: the file can go
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def load_source(source: Path) -> ctypes.CDLL:
    """Another version of the kernel's source, built (:func:`build_source`), checked to be of this module's ABI and
    bound for calls in place of the package's (benchmarks swap it into ``_state["lib"]``). ``RuntimeError`` naming
    the problem: no such file, a failed build, another ABI."""
    if not Path(source).is_file():
        raise RuntimeError("no such file")
    lib = build_source(Path(source))
    if lib.accel_norm_codes_abi() != _ABI:
        raise RuntimeError(f"ABI {lib.accel_norm_codes_abi()}, where this version calls ABI {_ABI}")
    return _bind(lib)


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, i64, f32, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
    for name in ("bf16", "f32"):
        fn = getattr(lib, f"accel_norm_silu_{name}")
        fn.argtypes = [p, p, i64, i64, i64, i64, f32, p, p, p, p, p, p, i32]
        fn.restype = None
        fn = getattr(lib, f"accel_codes_{name}")
        fn.argtypes = [p, p, p, i64, i64, i64, f32, f32, i32]
        fn.restype = None
        fn = getattr(lib, f"accel_minmax_{name}")
        fn.argtypes = [p, p, i64, i64, i64, p, i32]
        fn.restype = None
        fn = getattr(lib, f"accel_finish_{name}")
        fn.argtypes = [p, p, p, p, i64, i64, i64, i32]
        fn.restype = None
        fn = getattr(lib, f"accel_float_codes_{name}")
        fn.argtypes = [p, p, i64, f32, f32, i32]
        fn.restype = None
    lib.accel_exp_f32.argtypes = [p, p, i64]
    lib.accel_exp_f32.restype = None
    return lib


def _library() -> ctypes.CDLL | None:
    """The loaded kernel, building it on first use; None (with ``status()["broken"]`` saying why) if it cannot."""
    if _state["lib"] is not None or _state["broken"] is not None:
        return _state["lib"]
    try:
        compiler = os.environ.get("CXX", "g++")
        if shutil.which(compiler) is None:
            raise RuntimeError(f"no C++ compiler {compiler!r} on PATH")
        key = hashlib.sha256("\n".join([_SOURCE.read_text(), compiler, *_FLAGS, _cpu_flags()]).encode()).hexdigest()
        so = cache_dir("kernels") / f"norm_codes-{key[:16]}.so"
        if not so.exists():
            _build(so, compiler)
        lib = ctypes.CDLL(str(so))
        if lib.accel_norm_codes_abi() != _ABI:
            raise RuntimeError(f"{so} is from another version")
        _state["lib"] = _bind(lib)
    except Exception as err:  # no compiler, no OpenMP, a read-only cache, ...
        _state["broken"] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        warnings.warn(
            f"C++ quantization kernels unavailable ({_state['broken']}); quantized U-Net blocks and int8 convolutions "
            "run slower eager ops",
            stacklevel=3,
        )
    return _state["lib"]


def available() -> bool:
    """Whether the kernel is built (or builds now) and loads."""
    return _library() is not None


def status() -> dict:
    """Whether the kernel loaded, and why not (``broken``), for reports."""
    return {"available": _state["lib"] is not None, "broken": _state["broken"]}


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _per_channel(v: torch.Tensor, dtype: torch.dtype, shape: tuple) -> torch.Tensor:
    """``v`` rounded to ``dtype`` as the eager chain uses it, as contiguous float32 of ``shape``."""
    return v.detach().to(dtype).float().reshape(shape).contiguous()


def frame_norm_silu_codes(
    x: torch.Tensor,
    norm: nn.Module,
    mul: torch.Tensor | None = None,
    add: torch.Tensor | None = None,
    smooth: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``quantize_per_tensor_u8(silu(norm(x) * mul + add) * smooth)`` with the codes laid out channels-last.

    ``x`` [B, C, T] float32 or bfloat16; ``norm`` a :class:`~accelerando.models.unet.FrameGroupNorm` over ``C``;
    ``mul``, ``add`` [B, C, 1] in ``x``'s dtype (both or neither); ``smooth`` [C] (the SmoothQuant factor 1/s, used
    in ``x``'s dtype). Returns (codes uint8 [B, C, T] with strides [T C, 1, C], scale fp32 [], zero point int64 []).
    Raises ``RuntimeError`` if the kernel is not available (check :func:`available`).
    """
    lib, y, scale, zp, threads = _normalised(x, norm, mul, add, smooth)
    return _codes(lib, y, None, scale, zp, threads), scale, zp


def _codes(lib, y: torch.Tensor, smooth: torch.Tensor | None, scale, zp, threads: int) -> torch.Tensor:
    """The codes pass: ``y`` [B, C, T] contiguous (times ``smooth`` [C] float32, if given) -> uint8 codes [B, C, T]
    laid out channels-last. A NaN in the values makes the scale NaN: the codes are then left at 0 (every output of
    the convolution is NaN through the scale, as eagerly)."""
    b, c, t = y.shape
    step = float(scale)
    if not math.isfinite(step):
        return torch.zeros(b, t, c, dtype=torch.uint8).transpose(1, 2)
    q = torch.empty(b, t, c, dtype=torch.uint8)  # every code is written
    getattr(lib, f"accel_codes_{_DTYPES[y.dtype]}")(_ptr(y), _ptr(smooth), _ptr(q), b, c, t, step, float(zp), threads)
    return q.transpose(1, 2)


def frame_norm_silu_float_codes(
    x: torch.Tensor,
    norm: nn.Module,
    mul: torch.Tensor | None = None,
    add: torch.Tensor | None = None,
    smooth: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """As :func:`frame_norm_silu_codes`, with the codes minus the zero point as float32 [B, C, T] (channels-first):
    what a float32 convolution of the codes reads on a CPU without VNNI (``int8_conv``'s ``"float"`` mode)."""
    lib, y, scale, zp, threads = _normalised(x, norm, mul, add, smooth)
    out = torch.zeros(x.shape, dtype=torch.float32)
    if torch.isfinite(scale):  # NaN values: a NaN scale (every output NaN, as eagerly)
        getattr(lib, f"accel_float_codes_{_DTYPES[x.dtype]}")(
            _ptr(y), _ptr(out), y.numel(), float(scale), float(zp), threads
        )
    return out, scale, zp


def _normalised(x, norm, mul, add, smooth):
    """Pass 1: (library, ``silu(norm(x) * mul + add) * smooth`` [B, C, T] in ``x``'s dtype, scale, zero point,
    threads)."""
    from accelerando.quant.primitives import u8_params_of

    if x.dim() != 3 or x.dtype not in _DTYPES:
        raise ValueError(f"x must be [B, C, T] float32 or bfloat16, got {x.dtype} of shape {tuple(x.shape)}")
    if x.shape[1] != norm.weight.numel() or x.shape[1] % norm.num_groups:
        raise ValueError(f"{x.shape[1]} channels for a norm over {norm.weight.numel()} in {norm.num_groups} groups")
    if (mul is None) != (add is None):
        raise ValueError("give both mul and add (the modulation) or neither")
    lib = _library()
    if lib is None:
        raise RuntimeError(f"fused norm kernel unavailable: {_state['broken']}")
    b, c, t = x.shape
    kind = _DTYPES[x.dtype]
    x = x.contiguous()
    w = _per_channel(norm.weight, x.dtype, (c,))
    bias = _per_channel(norm.bias, x.dtype, (c,))
    m = None if mul is None else _per_channel(mul, x.dtype, (b, c))
    a = None if add is None else _per_channel(add, x.dtype, (b, c))
    s = None if smooth is None else _per_channel(smooth, x.dtype, (c,))
    y = torch.empty_like(x)
    lo_hi = torch.zeros(2)
    threads = torch.get_num_threads()
    args = (b, c, t, norm.num_groups, norm.eps, _ptr(w), _ptr(bias), _ptr(m), _ptr(a), _ptr(s), _ptr(lo_hi), threads)
    getattr(lib, f"accel_norm_silu_{kind}")(_ptr(x), _ptr(y), *args)
    scale, zp = u8_params_of(*lo_hi.tolist())
    return lib, y, scale, zp, threads


def _fused_plan(conv, norm, x: torch.Tensor, mul: torch.Tensor | None):
    """``int8_conv``'s plan for ``conv`` (oneDNN or float32 codes) when the kernel can produce its input codes from
    ``x``, else None."""
    from accelerando.models.unet import FrameGroupNorm
    from accelerando.quant import int8_conv
    from accelerando.quant.conv import UnfoldConv1d

    if type(norm) is not FrameGroupNorm or not isinstance(conv, UnfoldConv1d) or x.dtype not in _DTYPES:
        return None
    if any(m._forward_hooks or m._forward_pre_hooks for m in (norm, conv)):  # hooks see the module calls: keep them
        return None
    if x.dim() != 3 or x.device.type != "cpu" or dispatch_mode_active():
        return None
    if mul is not None and (mul.dtype != x.dtype or mul.shape != (*x.shape[:2], 1)):  # [B, C, 1], no broadcasting
        return None
    if torch.is_grad_enabled() and (x.requires_grad or norm.weight.requires_grad):
        return None
    how = int8_conv.plan(conv, x)
    if how is None or not available():
        return None
    return how


def _conv_after_norm(conv, norm, x: torch.Tensor, mul=None, add=None, residual=None) -> torch.Tensor:
    """``residual + conv(silu(norm(x) * mul + add))`` (without ``residual`` when None), through the fused codes where
    :func:`_fused_plan` finds a plan (oneDNN then adds the residual in the pass that makes its output channels-first).

    A layer with a low-rank branch (SVDQuant) reads the float input ``h = silu(norm(x) * mul + add)`` as well as the
    codes of ``h / s``: pass 1 then writes ``h`` unsmoothed (its min/max goes unused), and the min/max and codes
    passes of :func:`conv_input_codes` apply the smoothing. Both inputs are those of the block's own ops except
    where the kernel's ``exp`` is an ulp off PyTorch's: in float32 the low-rank branch passes that on, so the output
    moves by float32 rounding, where RTN layers, which read only the codes, rarely move.
    """
    from accelerando.quant import int8_conv

    how = _fused_plan(conv, norm, x, mul)
    if how is not None and how[1].low is not None:
        h = _normalised(x, norm, mul, add, None)[1]
        if how[1].mode == "float":
            y = int8_conv.int8_conv1d(conv, h, how)
            return y if residual is None else residual + y
        q, scale, zp = int8_conv._run(int8_conv._quantize, h, how[1].inv)
        return int8_conv.conv_codes(conv, q, scale, zp, how, x=h, residual=residual)
    if how is not None and how[1].mode != "float":
        q, scale, zp = frame_norm_silu_codes(x, norm, mul, add, how[1].inv)
        return int8_conv.conv_codes(conv, q, scale, zp, how, residual=residual)
    if how is None:
        h = norm(x)
        y = conv(F.silu(h if mul is None else h * mul + add))
    else:  # a CPU without VNNI: a float32 convolution of the codes
        codes, scale, _ = frame_norm_silu_float_codes(x, norm, mul, add, how[1].inv)
        y = int8_conv.float_codes_conv(conv, codes, scale, how)
    return y if residual is None else residual + y


def _block_forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``_ResBlock.forward`` with its two norm -> SiLU -> conv chains through :func:`_conv_after_norm`."""
    h = _conv_after_norm(self.conv1, self.norm1, x)
    scale, shift = self.mod(c).unsqueeze(-1).chunk(2, dim=1)  # [B, C_out, 1] each
    return _conv_after_norm(self.conv2, self.norm2, h, 1 + scale, shift, residual=self.skip(x))


def _blocks(model: nn.Module) -> list[nn.Module]:
    from accelerando.models.unet import FrameGroupNorm, _ResBlock

    return [m for m in model.modules() if isinstance(m, _ResBlock) and isinstance(m.norm1, FrameGroupNorm)]


def fuse_block_norms(model: nn.Module) -> int:
    """Point every per-frame-norm residual block of a U-Net at the fused forward (in place); returns how many.
    Outputs change only by the codes the kernel's ``exp`` moves (see the module doc)."""
    blocks = _blocks(model)
    for m in blocks:
        m.forward = types.MethodType(_block_forward, m)
    return len(blocks)


def kernel_exp(x: torch.Tensor) -> torch.Tensor:
    """The kernels' ``exp`` (the SiLU of pass 1) on float32 ``x`` (any shape), for accuracy checks. Raises
    ``RuntimeError`` if the kernel is not available."""
    if _library() is None:
        raise RuntimeError(f"fused norm kernel unavailable: {_state['broken']}")
    x = x.detach().float().contiguous()
    y = torch.empty_like(x)
    _state["lib"].accel_exp_f32(_ptr(x), _ptr(y), x.numel())
    return y


def conv_input_codes(x: torch.Tensor, inv: torch.Tensor | None) -> tuple | None:
    """``int8_conv._quantize`` in two C++ passes (min/max, then the codes written channels-last): ``x`` [B, C, T]
    contiguous float32 or bfloat16 (times ``inv`` [C] in ``x``'s dtype, if given) -> (codes uint8 [B, C, T] with
    strides [T C, 1, C], scale fp32 [], zero point int64 []), equal to the eager ones; None where the kernel does
    not apply (another dtype or layout, or no kernel)."""
    from accelerando.quant.primitives import u8_params_of

    if x.dtype not in _DTYPES or x.dim() != 3 or not x.is_contiguous() or x.numel() == 0 or _library() is None:
        return None
    b, c, t = x.shape
    kind, threads = _DTYPES[x.dtype], torch.get_num_threads()
    s = None if inv is None else _per_channel(inv, x.dtype, (c,))
    lo_hi = torch.zeros(2)
    getattr(_state["lib"], f"accel_minmax_{kind}")(_ptr(x), _ptr(s), b, c, t, _ptr(lo_hi), threads)
    scale, zp = u8_params_of(*lo_hi.tolist())
    return _codes(_state["lib"], x, s, scale, zp, threads), scale, zp


def conv_output(y: torch.Tensor, low, dtype: torch.dtype, residual=None) -> torch.Tensor | None:
    """``int8_conv._finish`` in one C++ pass: ``y`` float32 [B, C, T] channels-last (strides [T C, 1, C]), ``low``
    and ``residual`` [B, C, T] contiguous in ``dtype`` or None -> ``residual + (y + low).to(dtype)`` contiguous,
    rounded as the eager expression rounds; None where the kernel does not apply."""
    b, c, t = y.shape if y.dim() == 3 else (0, 0, 0)
    if y.dtype != torch.float32 or y.dim() != 3 or y.stride() != (t * c, 1, c) or dtype not in _DTYPES:
        return None
    for v in (low, residual):
        if v is not None and (v.dtype != dtype or v.shape != y.shape or not v.is_contiguous()):
            return None
    if y.numel() == 0 or _library() is None:
        return None
    out = torch.empty(b, c, t, dtype=dtype)
    fn = getattr(_state["lib"], f"accel_finish_{_DTYPES[dtype]}")
    fn(_ptr(y), _ptr(low), _ptr(residual), _ptr(out), b, c, t, torch.get_num_threads())
    return out


FUSE_ENV = "ACCELERANDO_QUANT_FUSED_NORMS"


def fuse_on_load(model: nn.Module) -> int:
    """What loading a quantized generator does (:func:`accelerando.pretrained.load_generator`): when ``model`` has
    per-tensor A8 layers (``act_scale="tensor"``, whose convolutions read the kernel's codes), point its
    per-frame-norm residual blocks at the fused forward; returns how many. ``ACCELERANDO_QUANT_FUSED_NORMS=off``
    leaves every model alone (``on``, the default, or unset: fuse); another value is a ``UserError``. Per call, a
    block without a fused plan (no kernel, a GPU, hooks) still runs its own ops."""
    from accelerando.errors import env_choice
    from accelerando.quant.api import has_per_tensor_layers

    fuse = env_choice(FUSE_ENV, ("on", "off"), "on") == "on"
    return fuse_block_norms(model) if fuse and has_per_tensor_layers(model) else 0


def unfuse_block_norms(model: nn.Module) -> int:
    """Undo :func:`fuse_block_norms`; returns how many blocks went back to their own forward."""
    blocks = [m for m in _blocks(model) if "forward" in vars(m)]
    for m in blocks:
        del m.forward
    return len(blocks)


def blocks_fused(model: nn.Module) -> bool:
    """Whether any residual block of ``model`` runs the fused forward."""
    return any("forward" in vars(m) for m in _blocks(model))
