"""Read music21 corpus scores into plain, picklable note and bar data.

Nothing outside this module touches music21 objects. All times here are in quarter lengths (ql) from the start
of the (repeat-expanded) score; :mod:`accelerando.data.labels` turns them into seconds for a chosen tempo.
"""

import hashlib
import os
import re
from dataclasses import dataclass, field

from accelerando.data.collections import COLLECTIONS

__all__ = ["ScoreRef", "Bar", "Part", "KeyLabel", "ScoreData", "list_scores", "load_score", "stable_hash"]

_EXT_PREFERENCE = (".mxl", ".xml", ".musicxml", ".krn", ".abc", ".mid")
_SECTION_BARLINES = {"double", "final", "light-light", "light-heavy", "heavy-light", "heavy-heavy"}
_MODE_BY_DEGREE = {0: "major", 2: "dorian", 4: "phrygian", 5: "lydian", 7: "mixolydian", 9: "minor"}
_EPS = 1e-6


def stable_hash(text: str) -> float:
    """A uniform number in [0, 1) that depends only on ``text`` (sha1), for deterministic choices."""
    return int(hashlib.sha1(text.encode()).hexdigest()[:12], 16) / float(1 << 48)


@dataclass(frozen=True)
class ScoreRef:
    score_id: str  # "<collection>/<relative path>[#<tune number>]", stable across machines
    collection: str
    path: str
    number: int | None = None  # tune number (ABC ``X:`` field) inside a multi-tune file


@dataclass
class Bar:
    start: float  # ql where this measure starts
    length: float  # ql actually notated in this measure (pickups and split bars are short)
    bar_pos: float  # ql position inside the metrical bar at ``start`` (non-zero for a pickup)
    meter: str  # "4/4"
    beat_offsets: list[float]  # ql of each beat from the start of a full bar
    number: int  # measure number as printed (repeats reuse numbers)


@dataclass
class Part:
    name: str
    notes: list[tuple[float, float, int]]  # (start ql, end ql, MIDI pitch)


@dataclass
class KeyLabel:
    tonic: str  # pitch-class name, sharps as "#", flats as "b"
    mode: str  # major, minor, dorian, phrygian, lydian, mixolydian
    source: str  # "score" (notated mode), "signature+final" (key signature and final bass note) or "estimated"


@dataclass
class ScoreData:
    ref: ScoreRef
    title: str
    composer: str
    parts: list[Part]
    bars: list[Bar]
    key: KeyLabel
    fermatas: list[float] = field(default_factory=list)  # ql where a fermata note ends (phrase ends)
    section_starts: list[float] = field(default_factory=list)  # ql of each section start, first is 0
    section_labels: list[str] = field(default_factory=list)  # "A", "B", ... one per section start
    repeats_expanded: bool = True

    @property
    def end(self) -> float:
        return max((n[1] for p in self.parts for n in p.notes), default=0.0)

    @property
    def beat_ql(self) -> float:
        """Length of the first meter's beat in ql (1.5 for 6/8, 2 for 2/2): the unit of the bpm label."""
        offs = self.bars[0].beat_offsets
        return offs[1] - offs[0] if len(offs) > 1 else _bar_len(self.bars[0].meter)


def _bar_len(meter: str) -> float:
    num, den = meter.split("/")
    return int(num) * 4.0 / int(den)


def _corpus_root() -> str:
    from music21 import corpus

    first = str(corpus.getCorePaths()[0])
    return first[: first.index(os.sep + "corpus" + os.sep) + len(os.sep + "corpus")]


def list_scores(collections: tuple[str, ...], limit: int | None = None) -> list[ScoreRef]:
    """Every renderable score of ``collections``; with ``limit``, a deterministic sample of that many per collection.

    Multi-tune ABC files yield one ref per tune. Where a piece exists in several formats, MusicXML is preferred.
    """
    from music21 import corpus

    root = _corpus_root()
    by_stem: dict[str, str] = {}
    for p in corpus.getCorePaths():
        rel = os.path.relpath(str(p), root)
        coll = rel.split(os.sep)[0]
        if coll not in collections or not rel.endswith(COLLECTIONS[coll].extensions):
            continue
        stem, ext = os.path.splitext(rel)
        prev = by_stem.get(stem)
        if prev is None or _EXT_PREFERENCE.index(ext) < _EXT_PREFERENCE.index(os.path.splitext(prev)[1]):
            by_stem[stem] = rel
    refs: dict[str, list[ScoreRef]] = {c: [] for c in collections}
    for rel in sorted(by_stem.values()):
        coll = rel.split(os.sep)[0]
        path = os.path.join(root, rel)
        sid = rel.replace(os.sep, "/")
        if rel.endswith(".abc"):
            with open(path, encoding="latin-1") as fh:
                numbers = [int(x) for x in re.findall(r"^X:\s*(\d+)", fh.read(), re.M)]
            if len(numbers) > 1:
                for num in dict.fromkeys(numbers):
                    refs[coll].append(ScoreRef(f"{sid}#{num}", coll, path, num))
                continue
        refs[coll].append(ScoreRef(sid, coll, path))
    out: list[ScoreRef] = []
    for coll in collections:
        items = sorted(refs[coll], key=lambda r: stable_hash("order:" + r.score_id))
        out.extend(items[:limit] if limit else items)
    return out


def _pc_name(pitch) -> str:
    return pitch.name.replace("-", "b")


def _key_label(score) -> KeyLabel:
    from music21 import key as m21key

    sigs = list(score.recurse().getElementsByClass(m21key.KeySignature))
    sig = sigs[0] if sigs else m21key.KeySignature(0)
    if isinstance(sig, m21key.Key) and sig.mode in ("major", "minor", *_MODE_BY_DEGREE.values()):
        return KeyLabel(_pc_name(sig.tonic), sig.mode, "score")
    # Mode from the key signature and the final bass note: the usual rule for tonal and modal music alike.
    bass = score.parts[-1].flatten().notes
    if len(bass):
        last = bass[-1]
        final = min(last.pitches, key=lambda p: p.ps) if last.isChord else last.pitch
        major_tonic = sig.asKey("major").tonic
        degree = (final.pitchClass - major_tonic.pitchClass) % 12
        if degree in _MODE_BY_DEGREE:
            return KeyLabel(_pc_name(final), _MODE_BY_DEGREE[degree], "signature+final")
    est = score.analyze("key")
    return KeyLabel(_pc_name(est.tonic), est.mode, "estimated")


def _bars(part) -> list[Bar]:
    """Measures with their position inside the metrical bar, carried across pickups and split bars."""
    bars: list[Bar] = []
    meter, offsets = "4/4", [0.0, 1.0, 2.0, 3.0]
    pos = 0.0
    for i, m in enumerate(part.getElementsByClass("Measure")):
        ts = m.timeSignature
        changed = ts is not None and ts.ratioString != meter
        if ts is not None:
            meter = ts.ratioString
            offsets = [float(x) for x in ts.getBeatOffsets()]
        full = _bar_len(meter)
        length = float(m.duration.quarterLength)
        if length <= _EPS:
            continue
        if i == 0:
            pos = float(m.paddingLeft) if m.paddingLeft else (full - length if length < full - _EPS else 0.0)
        elif changed or abs(length - full) < _EPS:
            pos = 0.0  # a full measure or a meter change always starts a bar: re-synchronise
        bars.append(Bar(float(m.offset), length, pos, meter, offsets, int(m.number or 0)))
        pos = (pos + length) % full
        if abs(pos - full) < _EPS:
            pos = 0.0
    return bars


def _meter_at(bars: list[Bar], ql: float) -> str:
    meter = bars[0].meter
    for b in bars:
        if b.start > ql + _EPS:
            break
        meter = b.meter
    return meter


def _sections(part, bars: list[Bar]) -> tuple[list[float], list[str]]:
    """Section starts from double/final barlines and repeat jumps, labelled by which measures they replay."""
    measures = [m for m in part.getElementsByClass("Measure") if m.duration.quarterLength > _EPS]
    starts = [0.0]
    prev_num = None
    for m in measures:
        start, end = float(m.offset), float(m.offset + m.duration.quarterLength)
        num = int(m.number or 0)
        left = getattr(m.leftBarline, "type", None)
        right = getattr(m.rightBarline, "type", None)
        if (prev_num is not None and num < prev_num) or left in _SECTION_BARLINES:
            starts.append(start)
        if right in _SECTION_BARLINES:
            starts.append(end)
        prev_num = num
    end_all = bars[-1].start + bars[-1].length if bars else 0.0
    # A boundary less than a bar after the previous one (a pickup before a start-repeat) is not a section.
    kept: list[float] = []
    for s in sorted({round(s, 6) for s in starts if s < end_all - _EPS}):
        if not kept or s - kept[-1] >= _bar_len(_meter_at(bars, s)) - _EPS:
            kept.append(s)
    starts = kept
    # Label each span by the full measures it plays; spans that replay mostly the same measures share a label.
    spans = []
    for i, s in enumerate(starts):
        e = starts[i + 1] if i + 1 < len(starts) else end_all
        spans.append(
            {b.number for b in bars if s - _EPS <= b.start < e - _EPS and b.length >= _bar_len(b.meter) - _EPS}
        )
    labels: list[str] = []
    seen: list[tuple[set[int], str]] = []
    for nums in spans:
        match = next((lab for ref, lab in seen if nums and len(nums & ref) / len(nums | ref) >= 0.7), None)
        if match is None:
            match = chr(ord("A") + len(seen)) if len(seen) < 26 else f"S{len(seen)}"
            seen.append((nums, match))
        labels.append(match)
    return starts, labels


def _parse(ref: ScoreRef):
    from music21 import converter, stream

    obj = converter.parse(ref.path, number=ref.number) if ref.number is not None else converter.parse(ref.path)
    if isinstance(obj, stream.Opus):
        obj = obj.scores[0]
    if not isinstance(obj, stream.Score):
        wrapped = stream.Score()
        wrapped.insert(0, obj)
        obj = wrapped
    return obj


def load_score(ref: ScoreRef) -> ScoreData:
    """Parse ``ref`` with music21, expand repeats, and extract notes, bars, key, fermatas and sections.

    Raises ValueError when the score has no pitched notes or no measures.
    """
    from music21 import expressions

    score = _parse(ref)
    key = _key_label(score)
    try:
        expanded = score.expandRepeats()
        repeats_expanded = True
    except Exception:  # music21 raises several types on malformed repeat structures; render as notated
        expanded, repeats_expanded = score, False
    parts: list[Part] = []
    fermatas: set[float] = set()
    for i, p in enumerate(expanded.parts):
        notes = []
        for n in p.stripTies().flatten().notes:
            ql = float(n.duration.quarterLength)
            if ql <= 0:  # grace notes carry no duration
                continue
            start = float(n.offset)
            for pitch in n.pitches:
                notes.append((start, start + ql, int(round(pitch.ps))))
            if any(isinstance(e, expressions.Fermata) for e in n.expressions):
                fermatas.add(round(start + ql, 6))
        if notes:
            parts.append(Part(p.partName or f"part{i + 1}", sorted(notes)))
    if not parts:
        raise ValueError(f"{ref.score_id}: no pitched notes")
    top = expanded.parts[0]
    bars = _bars(top)
    if not bars:
        raise ValueError(f"{ref.score_id}: no measures (an unmetered score has no beats to label)")
    starts, labels = _sections(top, bars)
    md = score.metadata
    coll = COLLECTIONS[ref.collection]
    title = (md.title if md and md.title else None) or os.path.splitext(os.path.basename(ref.path))[0]
    composer = (md.composer if md and md.composer else None) or coll.composer
    return ScoreData(
        ref, str(title), str(composer), parts, bars, key, sorted(fermatas), starts, labels, repeats_expanded
    )
