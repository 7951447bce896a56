"""Windowed MusicUNet calls with cached, chunked GroupNorm statistics (SIGE-Audio, conv-backbone part).

In a convolutional U-Net an output frame depends only on the input frames within the network's receptive radius,
except through the GroupNorm layers, whose mean and variance are taken over the whole clip. SIGE's answer: record
each GroupNorm's statistics during a full call, then run an edit only on the tiles around the edited frames while
every GroupNorm normalises with the recorded statistics.

Reusing the statistics as they are is a poor fit for audio inpainting: the edited region is noise while it is being
regenerated and clean audio when the statistics were recorded, so even a 10% edit moves a whole-clip variance a lot.
So the statistics are recorded *per chunk* of ``chunk`` input frames (each chunk's mean and sum of squared
deviations, per group; :class:`NormStats`). In a windowed call each GroupNorm replaces the chunks whose frames it
computes exactly (inside the window and at least its own radius, :func:`norm_radii`, from a window edge that is not a
clip edge) by their live values and combines all chunks into the clip's mean and variance (Chan et al.'s parallel
formula): what the full call would use, except that the other chunks keep their recorded values, although in the full
call they move too, through the changed statistics of earlier GroupNorms (that coupling is the remaining error).
Several windows run one after the other, each seeing the chunks the earlier ones replaced (so an earlier window does
not see a later one's). A windowed call with ``record`` returns the merged chunks, so the cache can be brought up to
date sparsely. A ``norm="frame"`` U-Net has none of this: its windowed calls are exact on their own.

:func:`unet_forward` does all of it. ``record=True`` on a full call returns the chunked statistics of each
GroupNorm (per model evaluation ``2 x norms x B x G x clip / chunk`` floats: about 1.6 MB for 60 s with the default
U-Net, against 26 MB of DiT keys and values). With ``windows`` it runs only the input frames ``[a - R, b + R)`` of
each edited range ``[a, b)`` (``R`` = :func:`receptive_radius`, the window aligned to the U-Net's stride so every
downsampling sees the same grid as the full call), and returns the velocity of ``[a, b)`` (zeros elsewhere). With
statistics recorded from the same inputs, the windowed result equals the full call up to float rounding:
convolution padding at a window's edge cannot reach ``[a, b)``.

The GroupNorms are redirected through instance attributes for the duration of a call, from outside the model
file; outside a call the U-Net is untouched.

Dims: ``B`` batch, ``T`` frames, ``D`` latent channels, ``G`` groups, ``K`` chunks.
"""

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from accelerando.models.dit import DiTConditioning
from accelerando.models.unet import MusicUNet

__all__ = ["NormStats", "chunk_frames", "receptive_radius", "sparse_windows", "unet_forward"]


@dataclass
class NormStats:
    """Chunked GroupNorm statistics of one call, per GroupNorm in module order: ``mean`` and ``m2`` [B, G, K] (the
    mean and the sum of squared deviations of each group's values in each chunk; float32, or float64 for a float64
    model), and ``count`` [K] (int64) per GroupNorm: the input frames each chunk covers, 0 for a chunk without
    statistics (e.g. past the end of the recorded clip after an extend). Counts are per GroupNorm because a windowed
    call replaces different chunks at different depths (each GroupNorm's exact span shrinks with its radius)."""

    mean: list[torch.Tensor]
    m2: list[torch.Tensor]
    count: list[torch.Tensor]
    chunk: int

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.mean + self.m2 + self.count)

    def totals(self, k: int, channels_per_group: int, scale: int, eps: float):
        """Clip mean and reciprocal standard deviation [B, G] of GroupNorm ``k`` (at ``scale`` input frames per
        frame) from its chunks."""
        return _combine(self.mean[k], self.m2[k], self.count[k], channels_per_group, scale, eps)


def _combine(mean_c, m2_c, count, channels_per_group: int, scale: int, eps: float):
    """Chunks' mean, m2 [B, G, K] and input frames [K] -> the clip's mean and reciprocal std [B, G] (Chan et al.)."""
    n = (count // scale).to(mean_c.dtype) * channels_per_group  # [K] values per chunk and group
    total = n.sum()
    mean = (mean_c * n).sum(-1) / total
    m2 = m2_c.sum(-1) + (n * (mean_c - mean[..., None]) ** 2).sum(-1)
    return mean, torch.rsqrt(m2 / total + eps)


def chunk_frames(unet: MusicUNet) -> int:
    """Input frames per statistics chunk: 8 frames at the U-Net's coarsest level."""
    return 8 * unet.config.stride


def _chunk_stats(xg: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``xg`` [B, G, C/G, T] -> per-chunk mean, m2 [B, G, K] and frames [K] for chunks of ``chunk`` frames (the
    last one may be shorter).

    From sums of values and of squares, reduced over the contiguous time axis first: an order of magnitude faster on
    CPU than ``torch.var_mean`` over the two strided axes, and accurate for activations whose mean is not orders of
    magnitude above their spread (m2 is clamped at zero against rounding)."""
    b, g, cg, t = xg.shape
    k = -(-t // chunk)
    xp = F.pad(xg, (0, k * chunk - t)).reshape(b, g, cg, k, chunk)  # zero padding adds nothing to either sum
    frames = torch.clamp(t - chunk * torch.arange(k, device=xg.device), max=chunk)  # [K]
    n = (frames * cg).to(xg.dtype)
    s1 = xp.sum(4).sum(2)  # [B, G, K]
    s2 = xp.square().sum(4).sum(2)
    mean = s1 / n
    return mean, (s2 - s1 * mean).clamp(min=0), frames


def norm_radii(unet: MusicUNet) -> list[int]:
    """For each GroupNorm in module order, the input frames to each side that one frame of its input can depend on
    (an upper bound, along the deepest path; module order is also the order the U-Net runs them in)."""
    cfg = unet.config
    half = cfg.kernel // 2
    levels = len(cfg.channels)
    radii: list[int] = []
    r = 1  # input conv, kernel 3

    def blocks(n: int, s: int) -> None:  # n residual blocks at s input frames per frame: norm1, conv, norm2, conv
        nonlocal r
        for _ in range(n):
            radii.extend([r, r + half * s])
            r += 2 * half * s

    for i in range(levels):
        blocks(cfg.blocks, 2**i)
        if i + 1 < levels:
            r += 2 * 2**i  # stride-2 conv, kernel 4: two frames of this level on one side
    blocks(2, 2 ** (levels - 1))  # middle blocks
    for i in reversed(range(levels)):
        blocks(cfg.blocks + 1, 2**i)
        if i > 0:
            r += 2**i + 2 ** (i - 1)  # nearest x2 (up to one coarse frame) and the kernel-3 conv after it
    radii.append(r)  # the output GroupNorm
    return radii


def receptive_radius(unet: MusicUNet) -> int:
    """Input frames to each side that one output frame can depend on (an upper bound, along the deepest path)."""
    return norm_radii(unet)[-1] + 1  # output conv, kernel 3


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
def _group_norms(
    unet: MusicUNet, padded: int, stats: NormStats | None, record: NormStats | None, window=None, live: bool = True
):
    """Within the block each GroupNorm, at ``scale = padded / frames`` input frames per frame:

    * ``stats is None``: records its chunked statistics into ``record`` and normalises as usual (a full call);
    * else: normalises a window of input frames ``[w0, w1)`` (``window = (w0, w1)``) with the chunks of ``stats``,
      those whose frames are exact in the window (at least the GroupNorm's radius from a window edge that is not a
      clip edge) replaced by the window's own (unless ``live`` is false), and collects the merged chunks into
      ``record``.
    """
    norms = [m for m in unet.modules() if isinstance(m, nn.GroupNorm)]
    if stats is not None and len(stats.mean) != len(norms):
        raise ValueError(f"the statistics hold {len(stats.mean)} GroupNorms, the U-Net has {len(norms)}")
    chunk = record.chunk if stats is None else stats.chunk
    radii = norm_radii(unet)

    def make(k: int, gn: nn.GroupNorm):
        def forward(x: torch.Tensor) -> torch.Tensor:
            b, c, t = x.shape
            dt = torch.promote_types(x.dtype, torch.float32)  # float32 (also under bf16 autocast), or float64
            xg = x.to(dt).reshape(b, gn.num_groups, c // gn.num_groups, t)  # [B, G, C/G, T]
            if stats is None:
                scale = padded // t
                mean, m2, frames = _chunk_stats(xg, chunk // scale)
                record.mean.append(mean)
                record.m2.append(m2)
                record.count.append(frames * scale)
                return F.group_norm(x, gn.num_groups, gn.weight, gn.bias, gn.eps)
            w0, w1 = window
            scale = (w1 - w0) // t
            mean_c, m2_c, count = stats.mean[k].to(dt).clone(), stats.m2[k].to(dt).clone(), stats.count[k].clone()
            lo, hi = w0 + radii[k] if w0 > 0 else 0, w1 - radii[k] if w1 < padded else padded
            for s0, s1 in (
                _spans(lo, hi, padded, chunk) if live else []
            ):  # chunk-aligned frames whose values here are exact
                nm, nm2, nf = _chunk_stats(xg[..., (s0 - w0) // scale : (s1 - w0) // scale], chunk // scale)
                k0 = s0 // chunk
                mean_c[..., k0 : k0 + nm.shape[-1]] = nm
                m2_c[..., k0 : k0 + nm.shape[-1]] = nm2
                count[k0 : k0 + nm.shape[-1]] = nf * scale
            mean, rstd = _combine(mean_c, m2_c, count, c // gn.num_groups, scale, gn.eps)
            record.mean.append(mean_c)
            record.m2.append(m2_c)
            record.count.append(count)
            y = ((xg - mean[..., None, None]) * rstd[..., None, None]).reshape(b, c, t)
            return y * gn.weight.to(dt)[:, None] + gn.bias.to(dt)[:, None]

        return forward

    for k, gn in enumerate(norms):
        gn.forward = make(k, gn)
    try:
        yield
    finally:
        for gn in norms:
            del gn.forward  # back to the class's forward


def _spans(lo: int, hi: int, padded: int, chunk: int) -> list[tuple[int, int]]:
    """The whole chunks within input frames ``[lo, hi)`` (at the padded end, the last, shorter chunk counts)."""
    s0, s1 = -(-lo // chunk) * chunk, padded if hi >= padded else hi // chunk * chunk
    return [(s0, s1)] if s1 > s0 else []


def _pad_chunks(stats: NormStats, k: int) -> NormStats:
    """``stats`` with chunks up to ``k`` (new ones without statistics: count 0)."""
    extra = k - stats.count[0].shape[0]
    if extra <= 0:
        return stats
    return NormStats(
        [F.pad(m, (0, extra)) for m in stats.mean],
        [F.pad(m, (0, extra)) for m in stats.m2],
        [F.pad(c, (0, extra)) for c in stats.count],
        stats.chunk,
    )


def unet_forward(
    unet: MusicUNet,
    x: torch.Tensor,
    t: torch.Tensor,
    cond: DiTConditioning,
    windows: list[tuple[int, int]] | None = None,
    stats: NormStats | None = None,
    record: bool = False,
    live_stats: bool = True,
) -> tuple[torch.Tensor, NormStats | None]:
    """Velocity [B, T, D] of ``x`` [B, T, D] at flow time ``t`` [B].

    ``record``: also return the chunked GroupNorm statistics (of a full call; of a windowed call, ``stats`` with the
    chunks it computes exactly replaced). ``windows``: edited frame ranges; only the frames around them are computed,
    with the GroupNorm statistics ``stats`` (required; with ``live_stats`` the chunks the window computes exactly are
    replaced by their new values, else the recorded ones are used as they are, SIGE's plain reuse), and the velocity
    holds those ranges and zeros elsewhere. Neither: the plain full call. A ``norm="frame"`` U-Net has no clip
    statistics: its windowed calls are exact without ``stats`` and ``record`` returns None.
    """
    h = unet.input_features(x, cond)  # [B, 2D+1+P, T_pad]
    c = unet.condition(t, cond, h.dtype)  # [B, W]
    frames, padded = x.shape[1], h.shape[-1]
    group = unet.config.norm == "group"  # "frame": nothing mixes the clip, a window alone is exact
    if windows is None:
        if not (record and group):
            return unet.features(h, c).transpose(1, 2)[:, :frames], None
        rec = NormStats([], [], [], chunk_frames(unet))
        with _group_norms(unet, padded, None, rec):
            out = unet.features(h, c)
        return out.transpose(1, 2)[:, :frames], rec
    if group and stats is None:
        raise ValueError("a windowed call needs the GroupNorm statistics recorded by a full call (stats=...)")
    if group:
        stats = _pad_chunks(stats, -(-padded // stats.chunk))
    v = x.new_zeros(x.shape[0], frames, unet.config.latent_dim)
    for _, _, w0, w1 in sparse_windows(unet, frames, windows):
        inside = [(a, b) for a, b in windows if w0 <= a and b <= w1]
        rec = NormStats([], [], [], stats.chunk) if group else None
        with _group_norms(unet, padded, stats, rec, (w0, w1), live_stats) if group else nullcontext():
            out = unet.features(h[..., w0:w1], c)  # [B, D, w1 - w0]
        stats = rec  # later windows (and the caller) see this window's chunks
        for a, b in inside:
            v[:, a:b] = out[..., a - w0 : b - w0].transpose(1, 2).to(v.dtype)
    return v, stats if record else None
