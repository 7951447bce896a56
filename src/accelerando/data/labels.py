"""Exact musical labels for one rendered clip: a score at a chosen tempo, transposition and length.

Times come from the score, not from analysis of the audio: with a constant tempo of ``qpm`` quarter notes per
minute, a position of ``x`` quarter lengths sounds at ``x * 60 / qpm`` seconds.
"""

import bisect
import random
from dataclasses import dataclass

from accelerando.data.scores import ScoreData

__all__ = ["ClipTiming", "plan_clip", "transpose_key", "key_name", "tempo_word"]

_EPS = 1e-6
_SHARP_NAMES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B"]  # minor-ish spellings
_FLAT_NAMES = ["C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]  # major-ish spellings
_PC = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_MINORISH = {"minor", "dorian", "phrygian"}


def _pitch_class(name: str) -> int:
    pc = _PC[name[0].upper()]
    for ch in name[1:]:
        pc += 1 if ch == "#" else -1 if ch == "b" else 0
    return pc % 12


def transpose_key(tonic: str, mode: str, semitones: int) -> str:
    """Tonic name after transposing by ``semitones``, spelled the conventional way for the mode."""
    if semitones == 0:
        return tonic
    pc = (_pitch_class(tonic) + semitones) % 12
    return (_SHARP_NAMES if mode in _MINORISH else _FLAT_NAMES)[pc]


def key_name(tonic: str, mode: str) -> str:
    return f"{tonic} {mode}"


def tempo_word(bpm: float) -> str:
    for limit, word in ((66, "slow"), (76, "adagio"), (108, "andante"), (120, "moderato"), (156, "allegro")):
        if bpm < limit:
            return word
    return "presto"


@dataclass
class ClipTiming:
    """Everything about one clip that follows from the score and the chosen tempo, in seconds."""

    qpm: float  # quarter notes per minute
    bpm: float  # beats per minute of the meter's beat unit (the label)
    music_end: float  # seconds where the last note ends
    notes: list[list[tuple[float, float, int, int]]]  # per part: (start s, end s, MIDI pitch, velocity)
    beats: list[float]  # seconds
    beat_numbers: list[int]  # 1-based position of each beat inside its bar
    downbeats: list[float]  # seconds
    meters: list[tuple[float, str]]  # (seconds, "3/4") at the start and at every change
    sections: list[dict]  # {"start", "end", "label"} in seconds
    phrase_ends: list[float]  # seconds of fermata ends (phrase boundaries)
    truncated: bool  # the score went on past max_seconds and was cut at a bar line


def plan_clip(
    score: ScoreData,
    bpm: float,
    transpose: int = 0,
    max_seconds: float | None = None,
    seed: int = 0,
    release_gap: tuple[float, float] = (0.15, 0.12),
) -> ClipTiming:
    """Map ``score`` onto a timeline at ``bpm`` beat-units per minute, cut at the last bar line before max_seconds.

    Velocities get a metrical accent (downbeats loudest) and a small seeded variation; timing is never humanised,
    so every note starts exactly on its score position. Each note is released early by ``release_gap``
    = (fraction of its length, cap in seconds), a detached articulation that lets slow-attack instruments (voices,
    bowed strings, winds) re-articulate every note instead of blurring into one legato line.
    """
    qpm = bpm * score.beat_ql
    sec = 60.0 / qpm
    bars = score.bars
    cut = max(b.start + b.length for b in bars)
    cut = max(cut, score.end)
    truncated = False
    if max_seconds is not None and cut * sec > max_seconds + _EPS:
        bar_starts = [b.start for b in bars if b.bar_pos < _EPS and b.start > _EPS and b.start * sec <= max_seconds]
        if bar_starts:
            cut, truncated = bar_starts[-1], True

    beats_ql: list[float] = []
    numbers: list[int] = []
    downbeats_ql: list[float] = []
    meters: list[tuple[float, str]] = []
    for b in bars:
        if b.start >= cut - _EPS:
            break
        if not meters or meters[-1][1] != b.meter:
            meters.append((b.start * sec, b.meter))
        for k, off in enumerate(b.beat_offsets):
            t = b.start + off - b.bar_pos
            if b.start - _EPS <= t < b.start + b.length - _EPS and t < cut - _EPS:
                beats_ql.append(t)
                numbers.append(k + 1)
                if k == 0:
                    downbeats_ql.append(t)
    downbeat_set = {round(x, 6) for x in downbeats_ql}
    beat_set = {round(x, 6) for x in beats_ql}

    rng = random.Random(seed)
    notes: list[list[tuple[float, float, int, int]]] = []
    for i, part in enumerate(score.parts):
        out = []
        for start, end, pitch in part.notes:
            if start >= cut - _EPS:
                continue
            end = min(end, cut)
            dur = (end - start) * sec
            pos = round(start, 6)
            vel = 74 + (14 if pos in downbeat_set else 7 if pos in beat_set else 0) + (6 if i == 0 else 0)
            vel = max(1, min(127, vel + rng.randint(-4, 4)))
            p = pitch + transpose
            if 0 <= p <= 127:
                out.append((start * sec, start * sec + dur - min(release_gap[0] * dur, release_gap[1]), p, vel))
        notes.append(out)
    music_end = max((n[1] for part in notes for n in part), default=0.0)

    sections = []
    starts = [s for s in score.section_starts if s < cut - _EPS]
    for i, s in enumerate(starts):
        e = starts[i + 1] if i + 1 < len(starts) else cut
        sections.append({"start": s * sec, "end": e * sec, "label": score.section_labels[i]})
    phrase_ends = [f * sec for f in score.fermatas if f <= cut + _EPS]
    i = bisect.bisect_left(beats_ql, cut - _EPS)
    return ClipTiming(
        qpm=qpm,
        bpm=bpm,
        music_end=music_end,
        notes=notes,
        beats=[x * sec for x in beats_ql[:i]],
        beat_numbers=numbers[:i],
        downbeats=[x * sec for x in downbeats_ql],
        meters=meters,
        sections=sections,
        phrase_ends=phrase_ends,
        truncated=truncated,
    )
