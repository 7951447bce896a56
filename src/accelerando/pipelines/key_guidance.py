"""Key guidance: steer the sampler's clean-latent estimate so that its pitch content sits in the requested key.

The companion of :mod:`accelerando.pipelines.grid_guidance`, with the same mechanics (the clean estimate
``x0 = x - t v`` at flow times in ``GRID_INTERVAL``, a score, its closed-form gradient, a move of ``strength`` times
the unit RMS over the generated frames, ``v' = (x - x0') / t``) and another score:

1. each frame's log-mel ``m[t]`` becomes a distribution over the mel bands, ``p[t] = softmax(m[t])`` (its magnitude
   spectrum normalised to sum 1, so loud and quiet frames count alike);
2. a fixed matrix ``C`` [12, D] folds the bands between :data:`PITCH_RANGE_HZ` onto the 12 pitch classes (a Gaussian
   of :data:`PITCH_SIGMA` semitones around each band's centre frequency, read off the codec's own mel filterbank,
   each pitch class's row normalised to sum 1; the built-in codec's band centres are closer than a semitone above
   about 570 Hz, and below it a band blurs neighbouring pitch classes);
3. the clip's chroma is the mean of ``C p[t]`` over its frames, and the score is its correlation with the requested
   key's scale template (:func:`scale_template`: the seven tones of the mode, the tonic counted twice and the fifth
   one and a half times).

The template is music theory, not the adherence benchmark's key profiles (Albrecht-Shanahan), and church modes keep
their own scale (D dorian is not D minor here). No library guides a generator on a log-mel latent, hence this file.

Shapes: ``m``, ``x``, ``v`` [B, T, D]; ``chroma_map`` [12, D]; ``template`` [12].
"""

import math
from collections.abc import Callable

import torch

from accelerando.conditioning.controls import key_mode_word, parse_key
from accelerando.pipelines.grid_guidance import at_guided_times, guided_velocity

__all__ = [
    "PITCH_RANGE_HZ",
    "PITCH_SIGMA",
    "SCALES",
    "band_frequencies",
    "chroma_map",
    "key_guided_velocity",
    "key_score",
    "key_score_grad",
    "make_key_guidance",
    "scale_template",
]

PITCH_RANGE_HZ = (250.0, 5000.0)  # bands folded onto pitch classes: fundamentals and low harmonics
PITCH_SIGMA = 0.4  # semitones: each band's spread over neighbouring pitch classes
SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "ionian": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "aeolian": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "lydian": (0, 2, 4, 6, 7, 9, 11),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "locrian": (0, 1, 3, 5, 6, 8, 10),
}
_EPS = 1e-6


def band_frequencies(mel_basis: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Centre frequency (Hz) of each mel filter: the filter-weighted mean of the STFT bin frequencies.

    ``mel_basis`` [D, F] with ``F = n_fft / 2 + 1`` bins from 0 to ``sample_rate / 2`` -> [D].
    """
    f = torch.linspace(0.0, sample_rate / 2, mel_basis.shape[1], dtype=torch.float64)
    w = mel_basis.double().clamp(min=0)
    return (w @ f) / w.sum(1).clamp(min=1e-12)


def chroma_map(freqs: torch.Tensor) -> torch.Tensor:
    """Band centre frequencies [D] -> [12, D]: each band in :data:`PITCH_RANGE_HZ` spread over the pitch classes
    (C = 0) by a Gaussian of :data:`PITCH_SIGMA` semitones in circular pitch-class distance; other bands get 0.
    Each row is normalised to sum 1, so a flat spectrum gives a flat chroma (no key is favoured by how the bands
    happen to fall on the pitch classes)."""
    lo, hi = PITCH_RANGE_HZ
    inside = (freqs >= lo) & (freqs <= hi)
    pitch = 69 + 12 * torch.log2(freqs.clamp(min=1.0) / 440.0)  # MIDI number, C = 0 mod 12
    pc = torch.arange(12, dtype=torch.float64)[:, None]
    d = torch.remainder(pitch[None, :] - pc, 12.0)
    d = torch.minimum(d, 12.0 - d)
    w = torch.exp(-0.5 * (d / PITCH_SIGMA) ** 2) * inside[None, :]
    return (w / w.sum(1, keepdim=True).clamp(min=1e-12)).float()


def scale_template(key: str) -> torch.Tensor:
    """``"D dorian"`` -> zero-mean, unit-norm weights [12] over the pitch classes (C = 0): 1 on the mode's seven
    tones, 2 on the tonic, 1.5 on the fifth, 0 elsewhere. A bare tonic or an unknown word falls back to
    :func:`~accelerando.conditioning.controls.parse_key`'s major / minor."""
    tonic, mode = parse_key(key)
    scale = SCALES.get(key_mode_word(key), SCALES[mode])
    w = torch.zeros(12, dtype=torch.float64)
    for step in scale:
        w[(tonic + step) % 12] = 1.0
    w[tonic] += 1.0
    w[(tonic + 7) % 12] += 0.5
    w = w - w.mean()
    return (w / w.norm()).float()


def _chroma(m: torch.Tensor, cmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax over bands ``p`` [B, T, D], the clip's mean chroma [B, 12])."""
    p = torch.softmax(m, dim=-1)
    return p, p.mean(1) @ cmap.t()


def key_score(m: torch.Tensor, cmap: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """Correlation [B] of the clip's mean chroma (steps 1-3 of the module docstring) with ``template`` [12]."""
    _, ch = _chroma(m, cmap)
    cc = ch - ch.mean(1, keepdim=True)
    return (cc * template).sum(1) / cc.norm(dim=1).clamp(min=_EPS)


def key_score_grad(m: torch.Tensor, cmap: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """Gradient [B, T, D] of :func:`key_score` (summed over the batch) with respect to ``m``, in closed form."""
    p, ch = _chroma(m, cmap)
    cc = ch - ch.mean(1, keepdim=True)
    n = cc.norm(dim=1, keepdim=True).clamp(min=_EPS)  # [B, 1]
    score = (cc * template).sum(1, keepdim=True) / n
    u = (template - template.mean() - score * cc / n) / n  # d score / d chroma [B, 12]
    a = (u @ cmap) / m.shape[1]  # d score / d p[t], the same for every frame [B, D]
    return p * (a[:, None, :] - (p * a[:, None, :]).sum(-1, keepdim=True))  # through each frame's softmax


def key_guided_velocity(
    x: torch.Tensor,
    t: float,
    v: torch.Tensor,
    cmap: torch.Tensor,
    template: torch.Tensor,
    strength: float,
    latent_std: torch.Tensor,
    latent_mean: torch.Tensor,
    free: torch.Tensor | None = None,
    known: torch.Tensor | None = None,
) -> torch.Tensor:
    """The velocity [B, T, D] pointing at the key-guided clean estimate; arguments as
    :func:`~accelerando.pipelines.grid_guidance.grid_guided_velocity`, with ``cmap`` [12, D] and ``template`` [12]."""
    return guided_velocity(
        x, t, v, lambda m: key_score_grad(m, cmap, template), strength, latent_std, latent_mean, free, known
    )


def make_key_guidance(
    key: str, strength: float, model, codec, scale: float = 1.0, free=None, known=None
) -> Callable[[torch.Tensor, float, torch.Tensor], torch.Tensor] | None:
    """``(x, t, v) -> v'`` applying key guidance at the guided flow times, or None when ``strength`` is 0.
    ``codec``: its ``mel`` filterbank gives the bands' frequencies (a log-mel latent is required by the caller)."""
    if not strength:
        return None
    dev = model.dit.latent_std.device
    mel_basis = codec.mel.mel_basis.detach().cpu()  # the map is built once on the CPU, wherever the codec lives
    cmap = chroma_map(band_frequencies(mel_basis, codec.sample_rate)).to(dev)
    template = scale_template(key).to(dev)
    std, mean = model.dit.latent_std.float(), model.dit.latent_mean.float()
    if not math.isfinite(float(cmap.sum())):
        raise ValueError("the codec's mel filterbank gave no finite band frequencies")

    return at_guided_times(
        lambda x, t, v: key_guided_velocity(x, t, v, cmap, template, strength, std, mean, free, known), scale
    )
