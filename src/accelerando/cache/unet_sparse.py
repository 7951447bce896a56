"""Windowed MusicUNet calls with cached GroupNorm statistics (SIGE-Audio, conv-backbone part).

In a convolutional U-Net an output frame depends only on the input frames within the network's receptive radius,
except through the GroupNorm layers, whose mean and variance are taken over the whole clip. SIGE's answer, used
here: record each GroupNorm's statistics during a full call, then run an edit only on the tiles around the edited
frames while every GroupNorm normalises with the recorded statistics.

:func:`unet_forward` does both. ``record=True`` runs the whole clip and returns the statistics of each GroupNorm
(a few floats per group, so a whole sampling trajectory costs kilobytes, not the megabytes of activations or keys
and values a transformer needs). With ``windows`` it runs only the input frames ``[a - R, b + R)`` of each edited
range ``[a, b)`` (``R`` = :func:`receptive_radius`, the window aligned to the U-Net's stride so every downsampling
sees the same grid as the full call), and returns the velocity of ``[a, b)`` (zeros elsewhere). With statistics
recorded from the same inputs, the windowed result equals the full call up to float rounding: convolution padding
at a window's edge cannot reach ``[a, b)``. The only approximation is the one SIGE makes: statistics recorded
before an edit are reused after it.

The GroupNorms are redirected through instance attributes for the duration of a call, from outside the model
file; outside a call the U-Net is untouched.

Dims: ``B`` batch, ``T`` frames, ``D`` latent channels, ``G`` groups.
"""

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from accelerando.models.dit import DiTConditioning
from accelerando.models.unet import MusicUNet

__all__ = ["NormStats", "receptive_radius", "sparse_windows", "unet_forward"]


@dataclass
class NormStats:
    """GroupNorm statistics of one call, per GroupNorm in module order: ``mean`` and ``rstd`` [B, G] (float32, or
    float64 for a float64 model)."""

    mean: list[torch.Tensor]
    rstd: list[torch.Tensor]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.mean + self.rstd)


def receptive_radius(unet: MusicUNet) -> int:
    """Input frames to each side that one output frame can depend on (an upper bound, along the deepest path)."""
    cfg = unet.config
    half = cfg.kernel // 2
    levels = len(cfg.channels)
    r = 1  # input conv, kernel 3
    for i in range(levels):
        s = 2**i
        r += cfg.blocks * 2 * half * s
        if i + 1 < levels:
            r += 2 * s  # stride-2 conv, kernel 4: two frames of this level on one side
    deep = 2 ** (levels - 1)
    r += 2 * 2 * half * deep  # middle blocks
    for i in reversed(range(levels)):
        s = 2**i
        r += (cfg.blocks + 1) * 2 * half * s
        if i > 0:
            r += s + s // 2  # nearest x2 (up to one coarse frame) and the kernel-3 conv after it
    return r + 1  # output conv, kernel 3


def sparse_windows(unet: MusicUNet, frames: int, ranges: list[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    """Edited frame ranges ``[a, b)`` -> merged ``(a, b, w0, w1)``: the frames to return and the stride-aligned
    input window ``[w0, w1)`` (within the padded clip) that computes them exactly."""
    stride = unet.config.stride
    padded = frames + (-frames) % stride
    r = receptive_radius(unet)
    merged: list[list[int]] = []
    for a, b in sorted(ranges):
        if not 0 <= a < b <= frames:
            raise ValueError(f"edited frames [{a}, {b}) are not inside the clip's {frames} frames")
        w0, w1 = max(0, (a - r) // stride * stride), min(padded, -(-(b + r) // stride) * stride)
        if merged and w0 <= merged[-1][3]:  # windows overlap: one window
            merged[-1][1], merged[-1][3] = max(merged[-1][1], b), max(merged[-1][3], w1)
        else:
            merged.append([a, b, w0, w1])
    return [tuple(m) for m in merged]


@contextmanager
def _group_norms(unet: MusicUNet, stats: NormStats | None, record: NormStats | None):
    """Within the block, each GroupNorm either records its statistics into ``record`` (and normalises as usual) or
    normalises with the statistics in ``stats``."""
    norms = [m for m in unet.modules() if isinstance(m, nn.GroupNorm)]
    if stats is not None and len(stats.mean) != len(norms):
        raise ValueError(f"the statistics hold {len(stats.mean)} GroupNorms, the U-Net has {len(norms)}")

    def make(k: int, gn: nn.GroupNorm):
        def forward(x: torch.Tensor) -> torch.Tensor:
            b, c, t = x.shape
            dt = torch.promote_types(x.dtype, torch.float32)  # float32 (also under bf16 autocast), or float64
            xg = x.to(dt).reshape(b, gn.num_groups, -1)  # [B, G, C/G * T]
            if stats is None:
                var, mean = torch.var_mean(xg, dim=-1, correction=0)  # [B, G]
                record.mean.append(mean)
                record.rstd.append(torch.rsqrt(var + gn.eps))
                return F.group_norm(x, gn.num_groups, gn.weight, gn.bias, gn.eps)
            mean, rstd = stats.mean[k].to(dt), stats.rstd[k].to(dt)
            y = ((xg - mean[..., None]) * rstd[..., None]).reshape(b, c, t)
            return y * gn.weight.to(dt)[:, None] + gn.bias.to(dt)[:, None]

        return forward

    for k, gn in enumerate(norms):
        gn.forward = make(k, gn)
    try:
        yield
    finally:
        for gn in norms:
            del gn.forward  # back to the class's forward


def unet_forward(
    unet: MusicUNet,
    x: torch.Tensor,
    t: torch.Tensor,
    cond: DiTConditioning,
    windows: list[tuple[int, int]] | None = None,
    stats: NormStats | None = None,
    record: bool = False,
) -> tuple[torch.Tensor, NormStats | None]:
    """Velocity [B, T, D] of ``x`` [B, T, D] at flow time ``t`` [B].

    ``record``: a full call that also returns its GroupNorm statistics. ``windows``: edited frame ranges; only the
    frames around them are computed, with the GroupNorm statistics ``stats`` (required), and the velocity holds
    those ranges and zeros elsewhere. Neither: the plain full call.
    """
    h = unet.input_features(x, cond)  # [B, 2D+1+P, T_pad]
    c = unet.condition(t, cond, h.dtype)  # [B, W]
    if windows is None:
        if not record:
            return unet.features(h, c).transpose(1, 2)[:, : x.shape[1]], None
        rec = NormStats([], [])
        with _group_norms(unet, None, rec):
            out = unet.features(h, c)
        return out.transpose(1, 2)[:, : x.shape[1]], rec
    if stats is None:
        raise ValueError("a windowed call needs the GroupNorm statistics recorded by a full call (stats=...)")
    v = x.new_zeros(x.shape[0], x.shape[1], unet.config.latent_dim)
    with _group_norms(unet, stats, None):
        for _, _, w0, w1 in sparse_windows(unet, x.shape[1], windows):
            out = unet.features(h[..., w0:w1], c)  # [B, D, w1 - w0]
            for a, b in windows:
                if w0 <= a and b <= w1:
                    v[:, a:b] = out[..., a - w0 : b - w0].transpose(1, 2).to(v.dtype)
    return v, None
