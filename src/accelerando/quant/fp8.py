"""``Float8Linear``: float8 (e4m3) weights and per-token dynamic float8 activations through ``torch._scaled_mm``.

With ``x`` [M, K] and weight ``W`` [N, K]: ``s_w[n] = max|W[n]| / 448``, ``s_x[m] = max|x[m]| / 448`` (448 is e4m3's
largest finite value), codes ``W / s_w`` and ``x / s_x`` rounded to e4m3, and

    y = (Q(x) @ Q(W)^T) * s_x * s_w^T + b

as one ``torch._scaled_mm`` with row-wise scales and the bias in its epilogue: Hopper's FP8 tensor cores on CUDA
(sm_89 and newer), PyTorch's reference kernel on CPU (correct, not fast). On CUDA with Triton, the per-token
quantization is one kernel (:func:`accelerando.quant.triton_kernels.quantize_rows` with ``fp8=True``).
:meth:`Float8Linear.reference_forward` computes the same product from the dequantized codes in float32, and the
tests compare the two against an SQNR floor. Measured on an H200: ``benchmarks/quant_gpu.py`` (BENCHMARKS.md).
"""

import torch
import torch.nn.functional as F
from torch import nn

from accelerando.quant import triton_kernels
from accelerando.quant.api import register_handler, require_linear
from accelerando.quant.configs import Float8DynamicConfig
from accelerando.quant.linear import autocast_output_dtype

__all__ = ["Float8Linear", "fp8_rows", "FP8_MAX", "FP8_EPS"]

FP8_MAX = float(torch.finfo(torch.float8_e4m3fn).max)  # 448
FP8_EPS = 1e-12  # smallest scale (an all-zero row)


def fp8_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise e4m3 quantization: ``x`` [R, C] -> (codes float8_e4m3fn [R, C], scale float32 [R, 1])."""
    xf = x.float()
    scale = (xf.abs().amax(dim=1, keepdim=True) / FP8_MAX).clamp(min=FP8_EPS)
    return (xf / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), scale


class Float8Linear(nn.Module):
    """FP8 replacement for ``nn.Linear(K, N)``. Buffers: ``qweight`` float8_e4m3fn [N, K], ``weight_scale`` float32
    [N, 1], ``bias`` float32 [N] when the source layer had one."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.float8_e4m3fn))
        self.register_buffer("weight_scale", torch.ones(out_features, 1))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_float(cls, linear: nn.Linear) -> "Float8Linear":
        q = cls(linear.in_features, linear.out_features, linear.bias is not None)
        q.qweight, q.weight_scale = fp8_rows(linear.weight.detach())
        if linear.bias is not None:
            q.bias = linear.bias.detach().float().clone()
        return q.to(linear.weight.device)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight [N, K] the codes stand for."""
        return (self.qweight.float() * self.weight_scale).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [..., K] -> [..., N] in ``x``'s dtype (the autocast dtype under autocast)."""
        out_dtype = autocast_output_dtype(x)
        x2 = x.reshape(-1, self.in_features)  # [M, K]
        if not len(x2):
            return x.new_zeros(*x.shape[:-1], self.out_features, dtype=out_dtype)
        if x2.is_cuda and (self.in_features % 16 or self.out_features % 16):
            return self.reference_forward(x)  # CUDA's FP8 GEMM needs K and N in multiples of 16
        fits = triton_kernels.fits_offsets(len(x2), self.in_features, self.out_features)
        if triton_kernels.applies(x2) and fits:  # CUDA: one Triton kernel instead of four PyTorch ones
            qx, sx, _ = triton_kernels.quantize_rows(x2.contiguous(), fp8=True)
        else:  # row-major codes: cuBLASLt refuses other layouts, and fp8_rows keeps its input's strides
            qx, sx = fp8_rows(x2.contiguous())
        # row-wise scaling needs a bf16 output; the bias goes into the GEMM's epilogue, rounded to bf16
        bias = None if self.bias is None else self.bias.to(torch.bfloat16)
        y = torch._scaled_mm(
            qx, self.qweight.t(), scale_a=sx, scale_b=self.weight_scale.t(), bias=bias, out_dtype=torch.bfloat16
        )
        return y.to(out_dtype).reshape(*x.shape[:-1], self.out_features)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same quantized product in float32 from dequantized codes (no ``_scaled_mm``)."""
        qx, sx = fp8_rows(x.reshape(-1, self.in_features))
        y = F.linear(qx.float() * sx, self.dequantize(), self.bias)
        return y.to(autocast_output_dtype(x)).reshape(*x.shape[:-1], self.out_features)


@register_handler(Float8DynamicConfig)
def _float8_dynamic(module: nn.Module, config: Float8DynamicConfig) -> nn.Module:
    linear = require_linear(module, config)
    return Float8Linear.from_float(linear)
