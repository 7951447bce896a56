"""Quantizing 1-D convolutions: run each chosen ``nn.Conv1d`` as an unfold (im2col) followed by an ``nn.Linear``.

A ``Conv1d(C_in, C_out, k)`` is a Linear over windows: with the input padded and cut into ``T_out`` windows of
``k`` taps, ``y[b, :, t] = W [C_out, C_in*k] @ window[b, t] [C_in*k] + bias``. :class:`UnfoldConv1d` computes
exactly that with a real ``nn.Linear`` submodule named ``linear``, so everything built for Linears applies to conv
backbones unchanged: ``quantize_`` swaps ``<conv>.linear`` for a :class:`~accelerando.quant.linear.QuantLinear` or
:class:`~accelerando.quant.svd.SVDQuantLinear` (int8 ``torch._int_mm`` over ``K = C_in * k``), calibration hooks
see one activation row per output frame, smoothing factors are per (input channel, tap), and the low-rank branch
is the SVD of the ``[C_out, C_in*k]`` weight matrix.

No library does this for us: torchao and nunchaku quantize Linears only, and PyTorch's quantized ``Conv1d``
(``torch.ao``) is an FBGEMM/QNNPACK module with static activation scales, no low-rank branch and no 4-bit weights.
The unfolded form is the reference and the calibration view. At run time, layers with per-tensor activation scales
(``act_scale="tensor"``) run as oneDNN's own int8 convolution on the CPU (:mod:`accelerando.quant.int8_conv`), and
weight-only layers as native convolutions on the dequantized weight (below). On CUDA, per-token layers can opt in to
a Triton implicit-GEMM kernel (:mod:`accelerando.quant.triton_conv`, off by default).

:func:`unfold_convs_` converts a model's convolutions in place and returns their names; quantized files record those
names (``accelerando.quant.io``), so loading converts the same convolutions before it rebuilds the quantized layers.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UnfoldConv1d", "fold_convs_", "unfold_convs_", "unfolded_convs"]


class UnfoldConv1d(nn.Module):
    """``nn.Conv1d`` (``groups=1``, zero padding) computed as unfold + ``self.linear`` ([C_out, C_in * k]).

    ``x`` [B, C_in, T] -> [B, C_out, T_out] with ``T_out = (T + 2 p - d (k - 1) - 1) // s + 1``, as the conv.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride=1, padding=0, dilation=1):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self.linear = nn.Linear(in_channels * kernel_size, out_channels)
        self.linear.conv_taps = kernel_size  # read by quant.svd.layer_smoothing (per-channel smoothing)

    @classmethod
    def from_conv(cls, conv: nn.Conv1d) -> "UnfoldConv1d":
        """The same map as ``conv``; ValueError for grouped convolutions, non-zero padding modes or string padding."""
        if conv.groups != 1:
            raise ValueError(f"groups={conv.groups}: only ungrouped convolutions unfold into one GEMM")
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"padding={conv.padding!r}, padding_mode={conv.padding_mode!r}; use integer zero padding")
        m = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.stride[0], conv.padding[0], conv.dilation[0]
        )
        m.linear.weight = nn.Parameter(conv.weight.detach().reshape(conv.out_channels, -1).clone())
        if conv.bias is None:
            m.linear.bias = None
        else:
            m.linear.bias = nn.Parameter(conv.bias.detach().clone())
        return m.to(conv.weight.device)

    def to_conv(self) -> nn.Conv1d:
        """The ``nn.Conv1d`` this module computes (its ``linear`` must still be a float ``nn.Linear``)."""
        if type(self.linear) is not nn.Linear:
            raise ValueError(f"linear is a {type(self.linear).__name__}, not a float nn.Linear: it cannot fold back")
        w = self.linear.weight
        conv = nn.Conv1d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            bias=self.linear.bias is not None,
            device=w.device,
            dtype=w.dtype,
        )
        conv.weight = nn.Parameter(w.detach().reshape(self.out_channels, self.in_channels, self.kernel_size).clone())
        if self.linear.bias is not None:
            conv.bias = nn.Parameter(self.linear.bias.detach().clone())
        return conv

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}"
        )

    def windows(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B, C_in, T] -> the unfolded windows [B, T_out, C_in * k], taps fastest (the weight's layout)."""
        k, d = self.kernel_size, self.dilation
        if self.padding:
            x = F.pad(x, (self.padding, self.padding))
        w = x.unfold(2, d * (k - 1) + 1, self.stride)  # [B, C_in, T_out, span]
        if d > 1:
            w = w[..., ::d]
        return w.permute(0, 2, 1, 3).reshape(x.shape[0], w.shape[2], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B, C_in, T] -> [B, C_out, T_out].

        A weight-only quantized ``linear`` (activations in float: ``a_bits=16``) runs as a native convolution with
        its dequantized weight instead: no unfold copy, the backend's own conv kernel, the same math. An A8 layer
        with per-tensor activation scales runs as oneDNN's int8 convolution where it applies (``int8_conv``). Opt-in
        (``use_triton_convs``): one with per-token scales on CUDA as a Triton implicit-GEMM kernel that quantizes
        each window in registers (``triton_conv``; the same codes as the unfold path, slower on an H100 so far).
        """
        from accelerando.quant import int8_conv, triton_conv

        how = int8_conv.plan(self, x)
        if how is not None:
            return int8_conv.int8_conv1d(self, x, how)
        how = triton_conv.plan(self, x)
        if how is not None:
            return triton_conv.conv1d(self, x, how)
        y = _weight_only_conv(self, x)
        if y is not None:
            return y
        return self.linear(self.windows(x)).transpose(1, 2)


def _weight_only_conv(conv: UnfoldConv1d, x: torch.Tensor) -> torch.Tensor | None:
    """``conv(x)`` as native convolutions when its ``linear`` is weight-only quantized (16-bit activations), else None.

    ``QuantLinear``: one conv with the dequantized weight. ``SVDQuantLinear``: the residual conv with ``Q(R) / s`` and
    the low-rank branch as a rank-``r`` conv with ``L2 / s`` followed by a 1x1 conv with ``L1``, so ``L1 L2`` is never
    formed. Under autocast the convs run in its dtype, like a float conv.
    """
    from accelerando.quant.linear import QuantLinear
    from accelerando.quant.svd import SVDQuantLinear

    lin, shape = conv.linear, (-1, conv.in_channels, conv.kernel_size)
    args = (conv.stride, conv.padding, conv.dilation)
    if isinstance(lin, QuantLinear) and lin.a_bits == 16:
        return F.conv1d(x, lin.dequantize(torch.float32).reshape(shape), lin.bias, *args)
    if isinstance(lin, SVDQuantLinear) and lin.residual.a_bits == 16:
        inv = lin.inv_smooth.float()  # [K], the smoothing folded into the weights (activations stay float)
        res = lin.residual
        y = F.conv1d(x, (res.dequantize(torch.float32) * inv).reshape(shape), res.bias, *args)
        if lin.rank:
            z = F.conv1d(x, (lin.lora_down.float() * inv).reshape(shape), None, *args)  # [B, r, T_out]
            y = y + F.conv1d(z, lin.lora_up.float()[:, :, None])
        return y
    return None


def unfold_convs_(model: nn.Module, filter_fn: Callable[[nn.Module, str], bool] | None = None) -> list[str]:
    """Replace every ``nn.Conv1d`` that ``filter_fn(module, name)`` accepts (default: all) by :class:`UnfoldConv1d`,
    in place; returns the replaced names. ValueError naming a conv that cannot unfold."""
    names = [n for n, m in model.named_modules() if type(m) is nn.Conv1d and (filter_fn is None or filter_fn(m, n))]
    for name in names:
        try:
            new = UnfoldConv1d.from_conv(model.get_submodule(name))
        except ValueError as err:
            raise ValueError(f"cannot unfold conv {name!r}: {err}") from None
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
    return names


def fold_convs_(model: nn.Module) -> list[str]:
    """Undo :func:`unfold_convs_` in place where it can: every :class:`UnfoldConv1d` whose ``linear`` is still a float
    ``nn.Linear`` becomes its ``nn.Conv1d`` again (quantized ones stay); returns the folded names."""
    names = [n for n, m in model.named_modules() if isinstance(m, UnfoldConv1d) and type(m.linear) is nn.Linear]
    for name in names:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, model.get_submodule(name).to_conv())
    return names


def unfolded_convs(model: nn.Module) -> list[str]:
    """Names of ``model``'s :class:`UnfoldConv1d` modules."""
    return [n for n, m in model.named_modules() if isinstance(m, UnfoldConv1d)]
