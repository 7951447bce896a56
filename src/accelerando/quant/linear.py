"""``QuantLinear``: a Linear whose weights are stored as packed integers plus float scales, run with real int8 GEMMs.

This first step swaps modules instead of storing the weights as tensor subclasses (HOUSE_STYLE habit 5): a module
with plain buffers (``qweight``, ``weight_scale``, ``bias``) serialises to safetensors without a custom flatten /
unflatten protocol and needs no ``__torch_dispatch__`` op coverage. The price is that the state_dict keys of
quantized layers change (``weight`` -> ``qweight`` + ``weight_scale``). Moving to an ``Int8Tensor`` / ``Int4Tensor``
subclass later keeps this file's math: :meth:`QuantLinear.forward` is the ``aten.linear`` implementation it needs.

Execution paths (``x`` [..., K] -> [..., N]):

- ``a_bits=8``: activations quantized per token to int8; ``int8 [M, K] @ int8 [K, N] -> int32`` through
  ``torch._int_mm`` (4-bit weights are unpacked to int8 first); the int32 result is scaled by the activation and
  weight scales in float32. With ``group_size`` and 4-bit weights the group scales are folded into int8 codes with
  one scale per row (:func:`~accelerando.quant.primitives.fold_group_scales`), so one GEMM serves every group; with
  :class:`use_group_folding` off (or ``ACCELERANDO_QUANT_GROUPS=exact``, or 8-bit grouped weights) the K axis is split
  and each group gets its own GEMM and scale.
- ``a_bits=4``: as ``a_bits=8`` with 4-bit per-token activation codes (held in int8 for the same GEMM).
- ``act_scale="tensor"`` (``a_bits=8``): one asymmetric uint8 scale and zero point for the whole input
  (:func:`~accelerando.quant.primitives.quantize_per_tensor_u8`); the codes minus 128 go through the same int8 GEMM
  and the zero point comes back as an exact int32 correction (``u8_offset``). This is the math of oneDNN's int8
  convolution, which runs a quantized :class:`~accelerando.quant.conv.UnfoldConv1d` with these layers on the CPU
  (:mod:`accelerando.quant.int8_conv`); the Linear path here is its reference and runs eagerly (no Triton, no
  fused kernel).
- ``a_bits=16``: weights dequantized to the input's dtype, then a float matmul (bf16 under autocast / bf16 input).

``reduce_range=True`` (ONNX Runtime's name for the same idea) keeps every weight code the A8 GEMM reads within
``[-64, 64]``: 8-bit weights are quantized to 7 bits (``[-63, 63]``) and 4-bit group scales are folded in eighths
instead of sixteenths of a step. A CPU without VNNI (AVX2) multiplies uint8 by int8 in pairs summed in saturating
int16; with weights this small no pair can saturate (``2 * 255 * 64 = 32640 < 2^15``), so such a CPU runs these
layers' per-tensor convolutions through oneDNN's int8 kernels exactly (:mod:`accelerando.quant.int8_conv`).

:meth:`QuantLinear.reference_forward` runs the same math with int32 ``@`` instead of ``torch._int_mm``. With
:func:`accelerando.quant.use_fused_kernels` on, the A8 path on CPU runs as a ``torch.compile``-d kernel of the same
math instead (:mod:`accelerando.quant.fused`; bit-identical output). On CUDA with Triton installed, the A4/A8 path
runs as two Triton kernels (:mod:`accelerando.quant.triton_kernels`: quantize, then one GEMM that unpacks 4-bit
weights in registers and applies scales and bias in its epilogue).
"""

import torch
import torch.nn.functional as F
from torch import nn

from accelerando.quant import fused, triton_kernels
from accelerando.quant.primitives import (
    dequantize_weight,
    fold_group_scales,
    int8_mm,
    int8_mm_reference,
    pack_int4,
    quantize_per_tensor_u8,
    quantize_per_token,
    quantize_weight,
    scale_dtype,
    u8_offset,
    unpack_int4,
)
from accelerando.quant.switches import group_folding_enabled, use_group_folding

__all__ = ["QuantLinear", "autocast_output_dtype", "group_folding_enabled", "use_group_folding"]


def autocast_output_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a quantized layer returns for input ``x``: the autocast dtype when autocast is on for ``x``'s
    device (as ``nn.Linear`` would under it), else ``x``'s own dtype."""
    dev = x.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype


def _forget_packed(module: nn.Module, incompatible_keys) -> None:
    """After ``load_state_dict``: the oneDNN conv path's packed weight of ``module`` is stale (``int8_conv.forget``)."""
    from accelerando.quant import int8_conv

    int8_conv.forget(module)


class QuantLinear(nn.Module):
    """Quantized replacement for ``nn.Linear(in_features=K, out_features=N)``.

    Buffers: ``qweight`` int8 [N, K] (8-bit) or uint8 [N, K/2] (4-bit, two codes per byte), ``weight_scale``
    [N, G] (``G = K / group_size`` or 1; float16 per group, float32 per channel: ``scale_dtype``), ``bias`` float32
    [N] when the source layer had one.
    ``act_scale``: ``"token"`` or ``"tensor"`` (see the module docstring).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        w_bits: int = 8,
        a_bits: int = 8,
        group_size: int | None = None,
        full_range: bool = False,
        act_scale: str = "token",
        reduce_range: bool = False,
    ):
        super().__init__()
        if not isinstance(reduce_range, bool) or (reduce_range and full_range):
            raise ValueError(f"reduce_range={reduce_range!r} with full_range={full_range!r}; use a bool, not both")
        self.reduce_range = reduce_range
        if act_scale not in ("token", "tensor") or (act_scale == "tensor" and a_bits != 8):
            raise ValueError(f"act_scale={act_scale!r} with a_bits={a_bits}; use 'token', or 'tensor' with a_bits=8")
        self.act_scale = act_scale
        if group_size is not None and in_features % group_size:
            raise ValueError(f"group_size={group_size} does not divide in_features={in_features}")
        if w_bits == 4 and in_features % 2:
            raise ValueError(f"4-bit packing needs an even in_features, got {in_features}")
        self.in_features, self.out_features = in_features, out_features
        self.w_bits, self.a_bits, self.group_size, self.full_range = w_bits, a_bits, group_size, full_range
        n_groups = in_features // group_size if group_size else 1
        if w_bits == 4:
            self.register_buffer("qweight", torch.zeros(out_features, in_features // 2, dtype=torch.uint8))
        else:
            self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features, n_groups, dtype=scale_dtype(group_size)))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.register_load_state_dict_post_hook(_forget_packed)

    @classmethod
    def from_float(
        cls,
        linear: nn.Linear,
        w_bits: int,
        a_bits: int,
        group_size: int | None = None,
        full_range: bool = False,
        act_scale: str = "token",
        reduce_range: bool = False,
    ) -> "QuantLinear":
        """Quantize ``linear``'s weight [N, K] (round to nearest) into a new module on the same device."""
        q = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            w_bits,
            a_bits,
            group_size,
            full_range,
            act_scale,
            reduce_range,
        )
        qw, scale = quantize_weight(linear.weight, q.code_bits(), group_size, full_range)
        q.qweight = pack_int4(qw) if w_bits == 4 else qw
        q.weight_scale = scale
        if linear.bias is not None:
            q.bias = linear.bias.detach().float().clone()
        return q.to(linear.weight.device)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"w_bits={self.w_bits}, a_bits={self.a_bits}, group_size={self.group_size}"
            + (", act_scale=tensor" if self.act_scale == "tensor" else "")
            + (", reduce_range=True" if self.reduce_range else "")
        )

    def code_bits(self) -> int:
        """The bits the weight is rounded to: ``w_bits``, or 7 for 8-bit ``reduce_range`` layers."""
        return 7 if self.reduce_range and self.w_bits == 8 else self.w_bits

    def int_weight(self) -> torch.Tensor:
        """Weight codes as int8 [N, K] (4-bit codes unpacked)."""
        return unpack_int4(self.qweight) if self.w_bits == 4 else self.qweight

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight the integers stand for, [N, K] in ``dtype``."""
        return dequantize_weight(self.int_weight(), self.weight_scale, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [..., K] -> [..., N] in ``x``'s dtype (the autocast dtype for weight-only under autocast)."""
        return self._run(x, int8_mm)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`forward` with a pure-torch int32 matmul in place of ``torch._int_mm``."""
        return self._run(x, int8_mm_reference)

    def gemm_weight(self) -> tuple[torch.Tensor, torch.Tensor, int | None]:
        """What the A8 GEMM multiplies by: (int8 codes [N, K], float32 scales [N, G], group size or None). 4-bit
        grouped weights come folded to one scale per row while :func:`group_folding_enabled` (codes within
        ``[-64, 64]`` for ``reduce_range`` layers)."""
        qw = self.int_weight()  # [N, K] int8
        if self.group_size is None or self.w_bits != 4 or not group_folding_enabled():
            return qw, self.weight_scale, self.group_size
        q8, c = fold_group_scales(qw, self.weight_scale, 8 if self.reduce_range else 16)
        return q8, c, None

    def _int_groups(self, x: torch.Tensor, mm, offset: torch.Tensor | None = None):
        """Yield ``(int32 accumulator [M, N], scale [N])`` per GEMM (one, or one per weight group); ``x`` is int8
        [M, K]. ``offset`` (int32 [], per-tensor uint8 inputs: ``u8_offset``) adds ``offset * colsum(W)``."""
        qw, scale, gs = self.gemm_weight()
        spans = [(0, self.in_features)] if gs is None else [(i, i + gs) for i in range(0, self.in_features, gs)]
        for g, (i, j) in enumerate(spans):
            w = qw[:, i:j]  # [N, K_g]
            acc = mm(x if gs is None else x[:, i:j].contiguous(), w.t())
            if offset is not None:
                acc = acc + offset * w.sum(dim=1, dtype=torch.int32)
            yield acc, scale[:, g]

    def quantize_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``x`` [M, K] -> (int8 codes [M, K], activation scale [M, 1] or [], int32 offset [] or None)."""
        if self.act_scale == "tensor":
            q, sa, zp = quantize_per_tensor_u8(x)
            q8, off = u8_offset(q, zp)
            return q8, sa, off
        qa, sa = quantize_per_token(x, self.full_range, self.a_bits)  # [M, K] int8, [M, 1]
        return qa, sa, None

    def int_accumulate(self, x: torch.Tensor, mm=int8_mm) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer part of the A8 path: ``x`` [M, K] -> (int32 accumulators [G', M, N], activation scale [M, 1] or
        []); ``G'`` GEMMs, one per weight group, or 1 (per-channel scales, or folded groups)."""
        qa, sa, off = self.quantize_input(x)
        return torch.stack([acc for acc, _ in self._int_groups(qa, mm, off)]), sa

    def output_dtype(self, x: torch.Tensor) -> torch.dtype:
        """The dtype :meth:`forward` returns for input ``x``: see :func:`autocast_output_dtype`."""
        return autocast_output_dtype(x)

    def _run(self, x: torch.Tensor, mm) -> torch.Tensor:
        out_dtype = self.output_dtype(x)
        if self.a_bits == 16:
            w = self.dequantize(out_dtype)  # [N, K]
            b = None if self.bias is None else self.bias.to(out_dtype)
            return F.linear(x.to(out_dtype), w, b)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)  # [M, K]
        if x2.shape[0] == 0:
            return x.new_zeros(*lead, self.out_features, dtype=out_dtype)
        if self.act_scale == "tensor":  # the reference of accelerando.quant.int8_conv; eager everywhere
            y = self._a8_eager(x2, mm, out_dtype)
        elif (
            mm is int8_mm and triton_kernels.applies(x2) and triton_kernels.supports(self, x2.shape[0])
        ):  # CUDA: two kernels
            y = triton_kernels.a8_linear(self, x2, out_dtype)
        elif mm is int8_mm and fused.applies(x2):  # opt-in compiled path (accelerando.quant.fused), same math
            y = fused.a8_linear_fused(self, x2, out_dtype, lambda: self._a8_eager(x2, mm, out_dtype))
        else:
            y = self._a8_eager(x2, mm, out_dtype)
        return y.reshape(*lead, self.out_features)

    def _a8_eager(self, x2: torch.Tensor, mm, out_dtype: torch.dtype) -> torch.Tensor:
        """A8 math on ``x2`` [M, K] -> [M, N] in ``out_dtype`` (mirrored by ``fused._a8_math``)."""
        qa, sa, off = self.quantize_input(x2)  # [M, K] int8, [M, 1] (or [] per tensor)
        y = None
        for acc, scale in self._int_groups(qa, mm, off):  # acc [M, N] int32; scale by its weight scale [N]
            part = acc.float().mul_(scale)
            y = part if y is None else y.add_(part)
        y.mul_(sa)  # [M, N] * [M, 1] (or [])
        if self.bias is not None:
            y.add_(self.bias)
        return y.to(out_dtype)
