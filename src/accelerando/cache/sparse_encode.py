"""Sparse encoding of an edited clip with a mel-latent codec: the encoder side of :mod:`sparse_decode`.

After an inpaint, the new clip differs from the clip the session holds only in samples ``[s0, s1)``. A log-mel
frame reads only the ``n_fft`` samples around its centre, so only the frames whose window overlaps ``[s0, s1)`` can
change; the rest of the latent is the session's. :func:`encode_update` computes those frames (plus margins) from
just the samples they read, with the codec's own padding, window, FFT, mel matrix and log, and splices them into the
session's latent.

Exactness. The frames are computed by the same operations as ``codec.encode``, but on a shorter input, and the mel
projection is a GEMM whose kernel can depend on the number of columns: on the dev CPU (MKL, torch 2.13, 1 or 2
threads) a stretch of fewer than 12 frames rounded differently, and any stretch of 12 frames or more matched a full
encode bit for bit at every position tried (``tests/cache/test_sparse_encode.py``). So a stretch covers at least
:data:`MIN_FRAMES` frames, and every update checks itself: ``margin`` frames on each side read only unchanged
samples, so they must reproduce the session's latent bit for bit; if any does not, the caller gets ``None`` and runs
the full encode. An edited latent that is not exactly what a full encode gives would be amplified by later sampling
(see the halo discussion in BENCHMARKS.md), which is why nothing approximate is accepted here.

Dims: ``S`` samples, ``T`` latent frames, ``D`` latent channels (``n_mels``).
"""

import torch
import torch.nn.functional as F

__all__ = ["MIN_FRAMES", "changed_samples", "encode_frames", "encode_update"]

MIN_FRAMES = 64  # frames per stretch: well above the 12 below which the mel GEMM rounded differently here


def changed_samples(old: torch.Tensor, new: torch.Tensor) -> tuple[int, int] | None:
    """``[s0, s1)`` spanning every sample where mono ``old`` [S] and ``new`` [S] differ; ``None`` when equal."""
    diff = (old != new).nonzero()
    if not len(diff):
        return None
    return int(diff[0]), int(diff[-1]) + 1


def supports(codec) -> bool:
    """Whether the codec's latent is its log-mel (frame-local: no encoder convolutions across time)."""
    return getattr(codec.config, "latent", None) == "mel" and codec.config.time_downsample == 1


def encode_frames(codec, mono: torch.Tensor, f0: int, f1: int) -> torch.Tensor:
    """Latent frames ``[f0, f1)`` of ``codec.encode(mono[None, None])`` -> [f1 - f0, D], from ``mono`` [S].

    Pads the clip as ``codec.encode`` does (zeros to a whole number of frames, then the STFT's centre padding) and
    runs the STFT without centring on exactly the samples those frames read.
    """
    mel, spf = codec.mel, codec.samples_per_frame
    stft = mel.stft
    n_fft, hop = stft.n_fft, stft.hop_length
    s = mono.shape[-1]
    t = max(1, -(-s // spf))
    x = F.pad(mono.reshape(1, s), (0, t * spf - s))  # [1, S']
    padded = F.pad(x.view(1, 1, -1), [n_fft // 2, n_fft // 2], mode=stft.pad_mode).view(1, -1)
    seg = padded[:, f0 * hop : (f1 - 1) * hop + n_fft]  # frame f reads padded[f*hop : f*hop + n_fft]
    spec = torch.stft(
        seg,
        n_fft=n_fft,
        hop_length=hop,
        win_length=stft.win_length,
        window=stft.window.to(seg.dtype),
        center=False,
        return_complex=True,
    )  # [1, F, f1 - f0]
    return mel.from_stft(spec)[0].transpose(0, 1)  # [f1 - f0, D]


def encode_update(
    codec, normalize, old_mono: torch.Tensor, new_mono: torch.Tensor, old_latent: torch.Tensor, margin: int = 4
) -> tuple[torch.Tensor, int] | None:
    """The normalised latent [T, D] of ``new_mono`` from the session's ``old_latent`` [T, D] (of ``old_mono``).

    ``normalize``: the model's latent normalisation (elementwise). Returns ``(latent, frames encoded)``, or ``None``
    when this does not apply (another codec, another length) or the margin check fails: run the full encode then.
    """
    if not supports(codec) or old_mono.shape != new_mono.shape:
        return None
    t = old_latent.shape[0]
    if t != max(1, -(-new_mono.shape[-1] // codec.samples_per_frame)):
        return None
    span = changed_samples(old_mono, new_mono)
    if span is None:
        return old_latent, 0
    stft = codec.mel.stft
    n_fft, hop = stft.n_fft, stft.hop_length
    s0, s1 = span
    # frame f reads samples [f*hop - n_fft/2, f*hop + n_fft/2): the frames that can change
    c0 = max(0, (s0 - n_fft // 2) // hop)
    c1 = min(t, (s1 - 1 + n_fft // 2) // hop + 1)
    f0, f1 = max(0, c0 - margin), min(t, c1 + margin)
    if f1 - f0 < MIN_FRAMES:  # grow to the minimum, inside the clip
        grow = MIN_FRAMES - (f1 - f0)
        f0 = max(0, f0 - grow // 2)
        f1 = min(t, f0 + MIN_FRAMES)
        f0 = max(0, f1 - MIN_FRAMES)
    if c0 == f0 and c1 == f1:  # no margin frame to check (the whole clip changed, or it is short): full encode
        return None
    with torch.no_grad():
        frames = normalize(encode_frames(codec, new_mono, f0, f1)[None])[0].to(old_latent.dtype)  # [f1 - f0, D]
    keep = torch.ones(f1 - f0, dtype=torch.bool)
    keep[c0 - f0 : c1 - f0] = False  # frames outside [c0, c1) read only unchanged samples
    if not torch.equal(frames[keep], old_latent[f0:f1][keep]):
        return None
    latent = old_latent.clone()
    latent[f0:f1] = frames
    return latent, f1 - f0
