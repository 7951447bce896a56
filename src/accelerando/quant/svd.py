"""SmoothQuant and SVDQuant layers: per-input-channel smoothing, a 16-bit low-rank branch, a quantized residual.

One module, :class:`SVDQuantLinear`, serves both methods (SmoothQuant is ``rank=0``). With ``x`` [..., K],
weight ``W`` [N, K], smoothing factors ``s`` [K] and ``W' = W * s``:

    y = Q_a(x / s) @ Q_w(R)^T + ((x / s) @ L2^T) @ L1^T + b,    R = W' - L1 @ L2,  L1 [N, r], L2 [r, K]

``L1 L2`` is the top-``r`` SVD of ``W'`` (``L1 = U sqrt(S)``, ``L2 = sqrt(S) V^T``), stored in bf16; ``R`` is computed
against the bf16-rounded factors, so the rounding goes into the residual. ``Q_w``/``Q_a`` are the RTN machinery of
:class:`~accelerando.quant.linear.QuantLinear` (``residual`` submodule: per-channel or per-group weights, per-token
dynamic activations, ``torch._int_mm`` when ``a_bits`` is 4 or 8).

Where the ``1/s`` goes: :meth:`SVDQuantLinear.forward` multiplies ``x`` by the stored ``inv_smooth`` (= ``1/s``)
immediately before the per-token activation quantization of the residual GEMM, and the same smoothed ``x`` feeds
the low-rank branch; so ``1/s`` costs one elementwise op that a fused quantize kernel absorbs (or that can be folded
offline into a preceding LayerNorm / affine's weights, not done here). The weights carry ``s`` already (``W * s``).

Smoothing factors: ``s_j = max|X_j|^alpha / max|W_j|^(1-alpha)`` (``X_j``: input channel ``j`` over the calibration
tokens, ``W_j``: weight column ``j``); channels never active in calibration (or with an all-zero column) get
``s_j = 1``.
"""

import itertools
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from accelerando.quant import fused, triton_kernels
from accelerando.quant.api import is_building_skeleton, register_handler, require_linear
from accelerando.quant.configs import MSE_ALPHA_GRID, STFT_CLIP_GRID, SmoothQuantConfig, SVDQuantConfig
from accelerando.quant.linear import QuantLinear, _forget_packed
from accelerando.quant.primitives import pack_int4, quantize_weight

__all__ = ["SVDQuantLinear", "smoothing_factors", "layer_smoothing", "lowrank_split", "smoothed_split"]

_EPS = 1e-8


def smoothing_factors(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """``s`` [K] from activation absmax [K] and weight [N, K]: ``max|X_j|^alpha / max|W_j|^(1 - alpha)``."""
    a = act_absmax.detach().float()
    w = weight.detach().float().abs().amax(dim=0)  # [K]
    s = a.clamp(min=_EPS).pow(alpha) / w.clamp(min=_EPS).pow(1 - alpha)
    return torch.where((a > 0) & (w > 0), s, torch.ones_like(s))


def layer_smoothing(
    linear: nn.Linear, act_absmax: torch.Tensor, alpha: float, act_scale: str = "token"
) -> torch.Tensor:
    """:func:`smoothing_factors` for ``linear``; with per-tensor activations (``act_scale="tensor"``) the Linear of an
    unfolded convolution (``linear.conv_taps = k``, set by :class:`~accelerando.quant.conv.UnfoldConv1d`) gets one
    factor per input channel, shared by its ``k`` taps (activation and weight maxima taken over the taps), so
    ``x / s`` is a per-channel signal a native int8 convolution can take."""
    taps = getattr(linear, "conv_taps", 1) if act_scale == "tensor" else 1
    if taps == 1:
        return smoothing_factors(act_absmax.to(linear.weight.device), linear.weight, alpha)
    n, k = linear.weight.shape
    a = act_absmax.to(linear.weight.device).float().reshape(k // taps, taps).amax(dim=1)  # [C_in]
    w = linear.weight.detach().float().abs().reshape(n, k // taps, taps).amax(dim=2)  # [N, C_in]
    return smoothing_factors(a, w, alpha).repeat_interleave(taps)  # [K], taps fastest (the unfold layout)


def lowrank_split(
    w: torch.Tensor, rank: int, row_weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``rank`` SVD of ``w`` [N, K] -> (``L1`` bf16 [N, r], ``L2`` bf16 [r, K], residual fp32 [N, K]).

    ``row_weights`` [N] (positive): the rank-``r`` ``L1 L2`` minimising ``sum_n row_weights[n] ||w[n] - (L1 L2)[n]||²``
    instead (the SVD of ``diag(sqrt(row_weights)) w``, unscaled; Fisher-weighted SVD when the weights are output
    sensitivities), so the branch absorbs the rows whose error costs most."""
    w = w.detach().float()
    if rank == 0:
        return w.new_zeros(w.shape[0], 0).bfloat16(), w.new_zeros(0, w.shape[1]).bfloat16(), w.clone()
    if row_weights is not None and (
        row_weights.shape != (w.shape[0],) or not bool(torch.isfinite(row_weights).all() and (row_weights > 0).all())
    ):
        raise ValueError(
            f"row_weights must be {w.shape[0]} positive finite values, got shape {tuple(row_weights.shape)}"
        )
    r = None if row_weights is None else row_weights.detach().double().to(w.device).sqrt()[:, None]  # [N, 1]
    u, sv, vh = torch.linalg.svd(w.double() if r is None else w.double() * r, full_matrices=False)
    root = sv[:rank].sqrt()
    u = u if r is None else u / r
    l1 = (u[:, :rank] * root).float().bfloat16()  # [N, r]
    l2 = (root[:, None] * vh[:rank]).float().bfloat16()  # [r, K]
    return l1, l2, w - l1.float() @ l2.float()


def smoothed_split(
    linear: nn.Linear,
    act_absmax: torch.Tensor,
    alpha: float,
    act_scale: str,
    rank: int,
    row_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`lowrank_split` of ``linear``'s weight smoothed at ``alpha`` (:func:`layer_smoothing`): the ``split``
    :meth:`SVDQuantLinear.from_float` takes, for callers that try several candidates per split."""
    s = layer_smoothing(linear, act_absmax, alpha, act_scale)
    return lowrank_split(linear.weight.detach().float() * s, rank, row_weights)


class SVDQuantLinear(nn.Module):
    """Smoothed, low-rank-plus-quantized replacement for ``nn.Linear(K, N)``.

    Buffers: ``inv_smooth`` fp32 [K] (``1/s``), ``lora_up`` bf16 [N, r] (``L1``), ``lora_down`` bf16 [r, K] (``L2``),
    ``alpha`` fp32 [] (the smoothing strength used, for reports); submodule ``residual``: a :class:`QuantLinear`
    holding ``Q_w(R)`` and the bias.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        w_bits: int = 4,
        a_bits: int = 8,
        group_size: int | None = None,
        rank: int = 0,
        act_scale: str = "token",
        reduce_range: bool = False,
    ):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.residual = QuantLinear(
            in_features, out_features, bias, w_bits, a_bits, group_size, act_scale=act_scale, reduce_range=reduce_range
        )
        self.register_buffer("inv_smooth", torch.ones(in_features))
        self.register_buffer("lora_up", torch.zeros(out_features, rank, dtype=torch.bfloat16))
        self.register_buffer("lora_down", torch.zeros(rank, in_features, dtype=torch.bfloat16))
        self.register_buffer("alpha", torch.tensor(float("nan")))
        self.register_load_state_dict_post_hook(_forget_packed)  # new smoothing / factors: repack (int8_conv)

    @classmethod
    def from_float(
        cls,
        linear: nn.Linear,
        act_absmax: torch.Tensor,
        alpha: float,
        w_bits: int,
        a_bits: int,
        group_size: int | None = None,
        rank: int = 0,
        w_clip: float = 1.0,
        split: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
        act_scale: str = "token",
        reduce_range: bool = False,
    ) -> "SVDQuantLinear":
        """Smooth ``linear`` with calibration ``act_absmax`` [K], split off the rank-``rank`` branch, quantize.

        ``w_clip``: residual weight clipping ratio (see ``quantize_weight``). ``split``: a precomputed
        ``lowrank_split`` of the smoothed weight at this ``alpha`` and ``rank`` (the stft search caches them).
        ``act_scale``: the residual's activation scales (:func:`layer_smoothing` ties a conv's taps for "tensor").
        ``reduce_range``: the residual's weight codes stay within [-64, 64] (see ``QuantLinear``).
        """
        k, n = linear.in_features, linear.out_features
        rank = min(rank, k, n)
        q = cls(k, n, linear.bias is not None, w_bits, a_bits, group_size, rank, act_scale, reduce_range)
        s = layer_smoothing(linear, act_absmax, alpha, act_scale)
        l1, l2, r = split if split is not None else lowrank_split(linear.weight.detach().float() * s, rank)
        qw, scale = quantize_weight(r, q.residual.code_bits(), group_size, clip=w_clip)
        q.residual.qweight = pack_int4(qw) if w_bits == 4 else qw
        q.residual.weight_scale = scale
        if linear.bias is not None:
            q.residual.bias = linear.bias.detach().float().clone()
        # contiguous, as a loaded file's are: float32 GEMMs of a transposed view round differently (an ulp)
        q.inv_smooth, q.lora_up, q.lora_down = 1.0 / s, l1.contiguous(), l2.contiguous()
        q.alpha = torch.tensor(float(alpha))
        return q.to(linear.weight.device)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"

    def lowrank_weight(self) -> torch.Tensor:
        """``L1 @ L2`` [N, K] in fp32 (in the smoothed basis)."""
        return self.lora_up.float() @ self.lora_down.float()

    def dequantize(self) -> torch.Tensor:
        """The float weight [N, K] the layer stands for: ``(Q_w(R) + L1 L2) / s``."""
        return (self.residual.dequantize() + self.lowrank_weight()) * self.inv_smooth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [..., K] -> [..., N]; ``1/s`` applied right before the residual's activation quantization."""
        per_token = self.residual.a_bits != 16 and self.residual.act_scale == "token"
        if (
            per_token
            and triton_kernels.applies(x)
            and triton_kernels.supports(self.residual, x.numel() // self.in_features)
        ):
            x2 = x.reshape(-1, self.in_features)  # [M, K]; CUDA: smoothing + down-projection fused into the
            y = triton_kernels.svd_linear(self, x2, self.residual.output_dtype(x))  # quantizer, up into the GEMM
            return y.reshape(*x.shape[:-1], self.out_features)
        if per_token and fused.applies(x):  # opt-in compiled path (accelerando.quant.fused)
            x2 = x.reshape(-1, self.in_features)  # [M, K]
            y = fused.svd_linear_fused(self, x2, self.residual.output_dtype(x), lambda: self._eager(x))
            return y.reshape(*x.shape[:-1], self.out_features)
        return self._eager(x)

    def _eager(self, x: torch.Tensor) -> torch.Tensor:
        xs = x * self.inv_smooth.to(x.dtype)  # [..., K], the smoothed activation
        y = self.residual(xs)
        if self.rank:
            low = F.linear(F.linear(xs.float(), self.lora_down.float()), self.lora_up.float())
            y = y + low.to(y.dtype)
        return y

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` with the residual's pure-torch int32 matmul."""
        xs = x * self.inv_smooth.to(x.dtype)
        y = self.residual.reference_forward(xs)
        if self.rank:
            y = y + (xs.float() @ self.lora_down.float().t() @ self.lora_up.float().t()).to(y.dtype)
        return y


def _calibration(module: nn.Module, config) -> dict:
    calib = getattr(module, "_quant_calib", None)
    if calib is None:
        raise ValueError(
            f"{type(config).__name__} needs calibration activations for this layer; use "
            "accelerando.quant.calibrate_(model, config, batches) (which calls quantize_), and make sure the "
            "batches run the layer"
        )
    return calib


def _build(
    module: nn.Module, config, rank: int, alphas: tuple[float, ...], clips: tuple[float, ...] = (1.0,)
) -> nn.Module:
    """The quantized layer for ``module``: the (alpha, clip) candidate with the lowest output MSE on the recorded
    rows (the only one when there is one). With ``config.clip_search`` the chosen alpha and clip are recorded in
    the layer's own ``quant_config`` (``smooth_alpha``, ``w_clip``)."""
    linear = require_linear(module, config)
    if is_building_skeleton():
        k, n = linear.in_features, linear.out_features
        return SVDQuantLinear(
            k,
            n,
            linear.bias is not None,
            config.w_bits,
            config.a_bits,
            config.group_size,
            min(rank, k, n),
            config.act_scale,
            config.reduce_range,
        ).to(linear.weight.device)
    calib = _calibration(module, config)
    args = (config.w_bits, config.a_bits, config.group_size, rank)
    kw = {"act_scale": config.act_scale, "reduce_range": config.reduce_range}
    if len(alphas) == 1 and len(clips) == 1:
        return SVDQuantLinear.from_float(linear, calib["absmax"], alphas[0], *args, clips[0], **kw)
    sample = calib.get("sample")
    if sample is None or not len(sample):
        raise ValueError(f"calibration={config.calibration!r} needs recorded activation rows (calibrate_ records them)")
    best, best_err, best_alpha, best_clip = None, float("inf"), alphas[0], clips[0]
    with torch.no_grad():
        ref = linear(sample)
        splits = {}  # the low-rank split depends on alpha only
        for clip, a in itertools.product(clips, alphas):  # the first clip's candidates first: they win ties
            if a not in splits:
                splits[a] = smoothed_split(
                    linear, calib["absmax"], a, config.act_scale, min(rank, *linear.weight.shape)
                )
            cand = SVDQuantLinear.from_float(linear, calib["absmax"], a, *args, clip, split=splits[a], **kw)
            err = float((cand(sample) - ref).pow(2).mean())
            if err < best_err:
                best, best_err, best_alpha, best_clip = cand, err, a, clip
    if getattr(config, "clip_search", False):  # quantize_ keeps a config the handler set
        best.quant_config = replace(config, smooth_alpha=best_alpha, w_clip=best_clip)
    return best


@register_handler(SmoothQuantConfig)
def _smoothquant(module: nn.Module, config: SmoothQuantConfig) -> nn.Module:
    return _build(module, config, 0, (config.alpha,))


@register_handler(SVDQuantConfig)
def _svdquant(module: nn.Module, config: SVDQuantConfig) -> nn.Module:
    # "stft" starts from the "mse" choice; calibrate_ then refines it end to end (accelerando.quant.stft_search)
    searched = config.calibration in ("mse", "stft")
    alphas = MSE_ALPHA_GRID if searched else (config.smooth_alpha,)
    clips = (config.w_clip,) + tuple(c for c in STFT_CLIP_GRID if c != config.w_clip)
    return _build(module, config, config.rank, alphas, clips if searched and config.clip_search else clips[:1])
