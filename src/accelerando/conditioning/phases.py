"""Per-frame musical time: the beat phase and bar phase of every latent frame, as sin/cos features.

Frame ``i`` sits at ``i / frame_rate`` seconds. A beat position counts beats since the first labelled beat (or since
the first downbeat on the bpm path) and a bar position counts bars; the phases are their fractional parts.
"""

import math

import torch

__all__ = ["frame_phases", "PHASE_FEATURES"]

PHASE_FEATURES = 4  # sin, cos of the beat phase; sin, cos of the bar phase
_TOL = 1e-6  # seconds: a downbeat this close to a beat is that beat


def frame_phases(
    n_frames: int,
    frame_rate: float,
    bpm: float,
    beats_per_bar: int,
    offset_seconds: float = 0.0,
    beats: list[float] | None = None,
    downbeats: list[float] | None = None,
) -> torch.Tensor:
    """Musical time of ``n_frames`` frames -> [T, 4] float32: sin, cos of the beat phase, sin, cos of the bar phase.

    Without ``beats``/``downbeats`` the tempo is constant at ``bpm`` with the first downbeat at ``offset_seconds``
    (frames before it are in the previous bar). With them (seconds, from a corpus label; every downbeat must be one
    of the beats) the beat position is interpolated piecewise-linearly between consecutive beats, so the beat phase
    is exactly 0 at every labelled beat, and the bar position advances by one bar from each downbeat to the next,
    so the bar phase is exactly 0 at every downbeat whatever the bar's length (pickups, meter changes; an irregular
    short or long bar is spread over its own beats). Before the
    first beat and after the last, the neighbouring beat interval (60 / bpm with a single beat) is extended; the
    bar before the first downbeat has ``beats_per_bar`` beats, and the bar after the last has as many beats as the
    previous bar (``beats_per_bar`` if there is none).
    """
    if n_frames < 0 or not frame_rate > 0 or not bpm > 0 or beats_per_bar < 1:
        raise ValueError(
            f"need n_frames >= 0, frame_rate > 0, bpm > 0 and beats_per_bar >= 1; got n_frames={n_frames}, "
            f"frame_rate={frame_rate}, bpm={bpm}, beats_per_bar={beats_per_bar}"
        )
    t = torch.arange(n_frames, dtype=torch.float64) / frame_rate  # [T] seconds
    if beats is None and downbeats is None:
        beat_pos = (t - offset_seconds) * (bpm / 60.0)
        bar_pos = beat_pos / beats_per_bar
    elif beats is None or downbeats is None:
        raise ValueError("give both beats and downbeats (seconds), or neither")
    else:
        beat_pos, bar_pos = _label_positions(t, beats, downbeats, 60.0 / bpm, beats_per_bar)
    return torch.cat([_sincos(beat_pos), _sincos(bar_pos)], dim=-1).float()  # [T, 4]


def _sincos(pos: torch.Tensor) -> torch.Tensor:
    """Positions [T] (float64) -> [T, 2]: sin and cos of 2 pi times the fractional part (exact at integers)."""
    angle = (2 * math.pi) * (pos - pos.floor())
    return torch.stack([angle.sin(), angle.cos()], dim=-1)


def _label_positions(
    t: torch.Tensor, beats: list[float], downbeats: list[float], period: float, beats_per_bar: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Beat and bar positions [T] (float64) of times ``t`` [T] from labelled beat and downbeat times."""
    b = torch.as_tensor(beats, dtype=torch.float64)  # [N]
    d = torch.as_tensor(downbeats, dtype=torch.float64)  # [M]
    if b.ndim != 1 or d.ndim != 1 or len(b) == 0 or len(d) == 0:
        raise ValueError(f"beats and downbeats must be non-empty lists of seconds; got {len(b)} and {len(d)}")
    if not bool(torch.isfinite(b).all()) or bool((b.diff() <= 0).any()) or bool((d.diff() <= 0).any()):
        raise ValueError("beats and downbeats must be finite and strictly increasing")
    n = len(b)
    # Beat index of each downbeat.
    near = torch.searchsorted(b, d).clamp(max=n - 1)  # [M]
    near = torch.where((near > 0) & ((d - b[near - 1]).abs() < (d - b[near]).abs()), near - 1, near)
    bad = (d - b[near]).abs() > _TOL
    if bool(bad.any()):
        raise ValueError(f"downbeat at {float(d[bad][0]):.6f} s is not one of the beats")
    # Beat position: k + (t - b[k]) / (length of beat k), with k the last beat at or before t (clamped to the ends).
    widths = b.diff() if n > 1 else torch.full((1,), period, dtype=torch.float64)  # [N-1] or [1]
    widths = torch.cat([widths, widths[-1:]])  # [N]: the last beat lasts as long as the one before it
    k = (torch.searchsorted(b, t, right=True) - 1).clamp(0, n - 1)  # [T]
    beat_pos = k.double() + (t - b[k]) / widths[k]
    # Bar position: j + (beat_pos - near[j]) / (beats in bar j), with j the last downbeat at or before beat_pos.
    start = near.double()  # [M] beat position of each downbeat
    counts = start.diff() if len(d) > 1 else torch.full((1,), float(beats_per_bar), dtype=torch.float64)
    counts = torch.cat([counts, counts[-1:]])  # [M]
    j = torch.searchsorted(start, beat_pos, right=True) - 1  # [T], -1 before the first downbeat
    before = j < 0
    jc = j.clamp(min=0)
    bar_len = torch.where(before, torch.full_like(beat_pos, float(beats_per_bar)), counts[jc])
    bar_pos = jc.double() + (beat_pos - start[jc]) / bar_len
    return beat_pos, bar_pos
