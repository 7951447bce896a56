"""Exact sparse decoding of a latent edit with the codec decoder (SIGE-Audio, conv part).

When only latent frames ``[start, end)`` change, only a bounded stretch of the waveform can change: the decoder's
convolutions see ``radius`` frames to each side (``radius`` = sum of the kernels' half-widths), and the inverse STFT
spreads each frame over ``n_fft`` samples. :func:`decode_edit` decodes just the latent window that those samples
depend on, overlap-adds exactly the STFT frames that cover them, and splices the result into the previously decoded
waveform. Per-frame LayerNorms carry no statistics across time, so the result equals a full decode: bit for bit in
float64, and within float32 rounding (about 2e-6 relative, from convolutions run over a shorter input) in float32.
Everything outside the recomputed stretch is the cached audio itself.

Dims: ``B`` batch, ``C`` channels, ``D`` latent channels, ``T`` latent frames, ``S`` samples, ``F`` STFT bins.
"""

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["SparseDecodeResult", "decoder_radius", "decode_edit"]


@dataclass
class SparseDecodeResult:
    audio: torch.Tensor  # [B, C, S]: the cached audio with the changed stretch replaced
    sample_range: tuple[int, int]  # [s0, s1): samples that were recomputed
    frames_decoded: int  # latent frames run through the decoder
    frames_total: int  # T

    @property
    def fraction(self) -> float:
        """Share of the full decoder work that was done (decoder cost is linear in frames)."""
        return self.frames_decoded / self.frames_total


def decoder_radius(codec) -> int:
    """Latent frames to each side that one decoded STFT frame depends on (mel-latent codecs)."""
    if codec.config.time_downsample != 1:
        raise NotImplementedError("sparse decoding supports codecs without time upsampling (latent='mel') for now")
    radius = 0
    for mod in [codec.from_latent, *codec.decoder.modules()]:
        if isinstance(mod, nn.Conv1d):
            radius += (mod.kernel_size[0] - 1) // 2 * mod.dilation[0]
    return radius


def _spec_frames(codec, latent: torch.Tensor) -> torch.Tensor:
    """Decoder up to the complex STFT: latent [N, D, T] -> spec [N, F, T]."""
    h = codec.decoder(codec.up(codec.from_latent(latent)))
    spec = codec.head(h.transpose(1, 2)).transpose(1, 2).float()
    log_mag, phase = spec.chunk(2, dim=1)
    return torch.polar(torch.exp(log_mag).clamp(max=1e2), phase)


def _overlap_add(codec, spec: torch.Tensor, f0: int, s0: int, s1: int) -> torch.Tensor:
    """Samples [s0, s1) of the inverse STFT from frames f0 .. f0 + spec.shape[-1] (all frames covering them)."""
    stft = codec.istft
    n_fft, hop = stft.n_fft, stft.hop_length
    window = stft.window.to(spec.real.dtype)  # [n_fft]
    frames = torch.fft.irfft(spec.transpose(1, 2), n=n_fft) * window  # [N, Tw, n_fft]
    n, tw, _ = frames.shape
    # padded-signal position of frame t, sample k is t * hop + k; sample index = position - n_fft // 2
    base = f0 * hop - n_fft // 2
    length = (tw - 1) * hop + n_fft
    pos = (torch.arange(tw)[:, None] * hop + torch.arange(n_fft)[None]).flatten()  # [Tw * n_fft]
    y = torch.zeros(n, length, dtype=frames.dtype).index_add_(1, pos, frames.reshape(n, -1))
    env = torch.zeros(length, dtype=frames.dtype).index_add_(0, pos, (window**2).repeat(tw))
    return (y / env.clamp(min=1e-11))[:, s0 - base : s1 - base]


@torch.inference_mode()
def decode_edit(codec, latent: torch.Tensor, cached_audio: torch.Tensor, start: int, end: int) -> SparseDecodeResult:
    """Decode ``latent`` [B, C*D, T] where only frames [start, end) differ from the latent behind ``cached_audio``.

    ``cached_audio`` [B, C, T * hop] must be ``codec.decode`` of the previous latent. Returns the new audio and
    what was recomputed.
    """
    b, cd, t = latent.shape
    d = codec.config.latent_dim
    hop, n_fft = codec.istft.hop_length, codec.istft.n_fft
    if not 0 <= start < end <= t:
        raise ValueError(f"edit frames [{start}, {end}) must lie inside [0, {t})")
    if cached_audio.shape[-1] != t * hop:
        raise ValueError(f"cached_audio has {cached_audio.shape[-1]} samples; the latent decodes to {t * hop}")
    r = decoder_radius(codec)
    c0, c1 = max(0, start - r), min(t, end + r)  # STFT frames that can change
    s0, s1 = max(0, c0 * hop - n_fft // 2), min(t * hop, (c1 - 1) * hop + n_fft // 2 + 1)  # samples that can change
    f0 = max(0, (s0 + n_fft // 2) // hop - n_fft // hop)  # every frame overlapping [s0, s1)
    f1 = min(t, (s1 - 1 + n_fft // 2) // hop + 1)
    w0, w1 = max(0, f0 - r), min(t, f1 + r)  # latent window whose inner frames [f0, f1) are exact
    window_latent = latent[..., w0:w1].reshape(b * (cd // d), d, w1 - w0)
    spec = _spec_frames(codec, window_latent)[..., f0 - w0 : f1 - w0]  # [N, F, f1 - f0]
    piece = _overlap_add(codec, spec, f0, s0, s1)  # [N, s1 - s0]
    audio = cached_audio.clone()
    audio[..., s0:s1] = piece.reshape(b, cd // d, -1).to(audio.dtype)
    return SparseDecodeResult(audio, (s0, s1), w1 - w0, t)
