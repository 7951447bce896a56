"""A tiny notated score with known musical truth, written as MusicXML with music21.

The score is built to make timing easy to verify: every note is a short note followed by a rest, so each onset
stands alone; it opens with a one-beat pickup, repeats its first section, ends that section with a double bar and
carries a fermata at a known place.
"""

import os
from pathlib import Path

__all__ = ["write_test_score", "test_soundfont", "TEST_SOUNDFONT"]

TEST_SOUNDFONT = "/usr/share/sounds/sf2/TimGM6mb.sf2"  # Debian timgm6mb-soundfont (6 MB): fast to load


def test_soundfont() -> str | None:
    """The small GM soundfont if installed, else any GM soundfont accelerando can find, else None."""
    if os.path.isfile(TEST_SOUNDFONT):
        return TEST_SOUNDFONT
    from accelerando.data.render import RenderSetupError, find_soundfont

    try:
        return find_soundfont()
    except RenderSetupError:
        return None


def write_test_score(path: str | Path, meter: str = "3/4", key: str = "D", mode: str = "major", parts: int = 2) -> Path:
    """Write a short score to ``path`` (MusicXML) and return the path.

    Layout, in quarter lengths: a one-beat pickup, then section A (2 bars, repeated) ending with a double bar,
    then section B (2 bars) ending with a fermata and a final bar. Every note is an eighth note followed by rests,
    placed on each beat of each bar; lower parts double the rhythm a tenth lower
    and every part ends on the tonic.
    """
    from music21 import bar, expressions, note, stream
    from music21 import key as m21key
    from music21 import meter as m21meter

    ts = m21meter.TimeSignature(meter)
    beat = float(ts.beatDuration.quarterLength)
    n_beats = int(ts.beatCount)
    bar_len = float(ts.barDuration.quarterLength)
    tonic_pitch = {"C": 60, "D": 62, "E": 64, "F": 65, "G": 67, "A": 69, "B": 71}[key[0]]
    score = stream.Score()
    for p in range(parts):
        part = stream.Part()
        part.partName = f"voice{p + 1}"
        base = tonic_pitch + 12 - p * 15
        measures = []
        pickup = stream.Measure(number=0)
        pickup.timeSignature = m21meter.TimeSignature(meter)
        pickup.keySignature = m21key.Key(key, mode)
        pickup.append(_short(note, base + 7, beat))
        pickup.paddingLeft = bar_len - beat
        measures.append(pickup)
        for num in range(1, 5):
            m = stream.Measure(number=num)
            for b in range(n_beats):
                m.append(_short(note, base + (num + b) % 5, beat))
            measures.append(m)
        measures[1].leftBarline = bar.Repeat(direction="start")
        measures[2].rightBarline = bar.Repeat(direction="end")
        last = measures[4].notes[-1]
        last.pitch.midi = tonic_pitch + 12 - 12 * p  # end on the tonic, as real music does
        last.expressions.append(expressions.Fermata())
        measures[4].rightBarline = bar.Barline("final")
        for m in measures:
            part.append(m)
        score.insert(0, part)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    score.write("musicxml", fp=str(path))
    return path


def _short(note_mod, midi: int, beat: float) -> list:
    """A beat-long group: an eighth note, then a rest filling the rest of the beat."""
    group = [note_mod.Note(midi=midi, quarterLength=0.5)]
    if beat > 0.5:
        group.append(note_mod.Rest(quarterLength=beat - 0.5))
    return group
