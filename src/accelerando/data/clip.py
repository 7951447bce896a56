"""Render one clip (a score in one instrumentation, tempo and transposition) and write it atomically.

A clip directory holds ``mix.flac``, ``stems/NN_<instrument>.flac`` and ``label.json``. Everything is written into
a hidden temporary directory that is renamed into place only once complete, so a directory under its final name
is always a finished clip, and ``label.json`` inside it marks it as such.
"""

import json
import math
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from accelerando.data.collections import COLLECTIONS
from accelerando.data.instrumentations import GM_NAMES, INSTRUMENTATIONS
from accelerando.data.labels import ClipTiming, key_name, plan_clip, tempo_word, transpose_key
from accelerando.data.render import Renderer
from accelerando.data.scores import ScoreData, stable_hash
from accelerando.data.split import SPLIT_VERSION, split_for

__all__ = ["Variant", "LABEL_SCHEMA", "plan_variants", "clip_id", "write_clip", "caption"]

LABEL_SCHEMA = "accelerando.corpus.label/1"
_PEAK_LIMIT = 0.89  # about -1 dBFS, applied to the mix and to every stem


@dataclass(frozen=True)
class Variant:
    instrumentation: str
    bpm: int  # beats per minute of the meter's beat unit
    transpose: int  # semitones


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def clip_id(score_id: str, v: Variant) -> str:
    return f"{_slug(score_id)}-{v.instrumentation}-{v.bpm}bpm-t{v.transpose:+d}"


def plan_variants(
    score: ScoreData, instrumentations: tuple[str, ...], n: int, transpose_range: int = 4
) -> list[Variant]:
    """Choose ``n`` (instrumentation, tempo, transposition) variants for ``score``; deterministic per score id.

    Instrumentations are distinct while enough of them suit the part count; tempi are drawn from the collection's
    plausible range, expressed in the meter's beat unit; the first variant keeps the notated key.
    """
    rng = random.Random(int(stable_hash("variants:" + score.ref.score_id) * (1 << 48)))
    nparts = len(score.parts)
    fits = [name for name in instrumentations if INSTRUMENTATIONS[name].max_parts >= nparts] or list(instrumentations)
    lo, hi = COLLECTIONS[score.ref.collection].qpm_range
    beat = score.beat_ql
    bpm_lo, bpm_hi = max(30, math.ceil(lo / beat)), max(31, math.floor(hi / beat))
    out: list[Variant] = []
    pool: list[str] = []
    for i in range(n):
        if not pool:
            pool = rng.sample(fits, len(fits))
        instr = pool.pop()
        bpm = rng.randint(bpm_lo, bpm_hi)
        transpose = 0 if i == 0 else rng.randint(-transpose_range, transpose_range)
        out.append(Variant(instr, bpm, transpose))
    return out


def caption(label: dict, seed: float) -> str:
    """A natural-language description built only from label fields."""
    coll = COLLECTIONS[label["collection"]]
    instr = INSTRUMENTATIONS[label["instrumentation"]].caption
    key, meter, bpm = label["key"]["name"], label["meter"], round(label["bpm"])
    composer = _composer(label["composer"])
    by = "" if composer in ("traditional", "anonymous") else f" by {composer}"
    trad = "traditional " if composer == "traditional" else ""
    what = f"{trad}{coll.era} {coll.style}"
    a = "an" if what[0].lower() in "aeiou" else "a"
    templates = (
        f"A {tempo_word(bpm)} {what}{by} for {instr}, in {key}, {meter} time at {bpm} BPM.",
        f"{instr[0].upper() + instr[1:]} plays {a} {what}{by} in {key} at {bpm} BPM ({meter}).",
        f"{coll.era[0].upper() + coll.era[1:]} {coll.style} in {key}, {meter}, {bpm} BPM, arranged for {instr}.",
    )
    return templates[int(seed * len(templates)) % len(templates)]


def _composer(name: str) -> str:
    """'Palestrina, Giovanni Pierluigi da' -> 'Giovanni Pierluigi da Palestrina'."""
    name = name.strip().rstrip(".").strip()
    if name.count(",") == 1:
        last, first = (x.strip() for x in name.split(","))
        name = f"{first} {last}"
    return name


def _loudness_gain(mix: np.ndarray, stems: np.ndarray, sample_rate: int, target_lufs: float) -> tuple[float, float]:
    """Linear gain bringing the mix [C,S] to ``target_lufs``, reduced so no stem or mix peak exceeds the limit."""
    import pyloudnorm

    meter = pyloudnorm.Meter(sample_rate)
    lufs = float(meter.integrated_loudness(mix.T.astype(np.float64)))
    peak = max(float(np.abs(mix).max()), float(np.abs(stems).max()))
    if not math.isfinite(lufs) or peak <= 0:
        raise ValueError("rendered audio is silent")
    gain = min(10 ** ((target_lufs - lufs) / 20), _PEAK_LIMIT / peak)
    return gain, lufs + 20 * math.log10(gain)


def write_clip(
    score: ScoreData,
    variant: Variant,
    renderer: Renderer,
    root: Path,
    *,
    channels: int = 1,
    max_seconds: float | None = 60.0,
    tail_seconds: float = 1.0,
    target_lufs: float = -20.0,
) -> dict:
    """Render ``variant`` of ``score`` into ``root/clips/<collection>/<clip id>/`` and return its label dict."""
    import soundfile as sf

    cid = clip_id(score.ref.score_id, variant)
    final = root / "clips" / score.ref.collection / cid
    seed = stable_hash("clip:" + cid)
    timing: ClipTiming = plan_clip(score, variant.bpm, variant.transpose, max_seconds, seed=int(seed * (1 << 30)))
    sr = renderer.sample_rate
    num_samples = int(math.ceil((timing.music_end + tail_seconds) * sr))
    programs = INSTRUMENTATIONS[variant.instrumentation].assign(len(score.parts))
    nparts = len(score.parts)
    stems = np.zeros((nparts, channels, num_samples), dtype=np.float32)
    for i, (notes, program) in enumerate(zip(timing.notes, programs, strict=True)):
        pan = 64 if channels == 1 or nparts == 1 else int(round(24 + 80 * i / (nparts - 1)))
        lr = renderer.render_part(notes, program, num_samples, pan=pan)  # [2, S]
        stems[i] = lr.mean(axis=0, keepdims=True) if channels == 1 else lr
    mix = stems.sum(axis=0)  # [C, S]
    gain, lufs = _loudness_gain(mix, stems, sr, target_lufs)
    stems *= gain
    mix = stems.sum(axis=0)

    tmp = final.parent / f".tmp-{cid}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "stems").mkdir(parents=True)
    sf.write(tmp / "mix.flac", mix.T, sr, subtype="PCM_16")
    instruments = []
    for i, (part, program) in enumerate(zip(score.parts, programs, strict=True)):
        rel = f"stems/{i:02d}_{GM_NAMES.get(program, f'program{program}')}.flac"
        sf.write(tmp / rel, stems[i].T, sr, subtype="PCM_16")
        instruments.append({"part": part.name, "program": program, "name": GM_NAMES.get(program), "stem": rel})

    tonic = transpose_key(score.key.tonic, score.key.mode, variant.transpose)
    label = {
        "schema": LABEL_SCHEMA,
        "clip_id": cid,
        "score_id": score.ref.score_id,
        "collection": score.ref.collection,
        "split": split_for(score.ref.score_id),
        "split_version": SPLIT_VERSION,
        "title": score.title,
        "composer": score.composer,
        "instrumentation": variant.instrumentation,
        "instruments": instruments,
        "sample_rate": sr,
        "channels": channels,
        "num_samples": num_samples,
        "duration": num_samples / sr,
        "music_duration": timing.music_end,
        "truncated": timing.truncated,
        "bpm": float(variant.bpm),
        "beat_unit_quarters": score.beat_ql,
        "quarter_bpm": timing.qpm,
        "tempo_map": [{"time": 0.0, "bpm": float(variant.bpm)}],
        "key": {
            "tonic": tonic,
            "mode": score.key.mode,
            "name": key_name(tonic, score.key.mode),
            "source": score.key.source,
        },
        "transpose": variant.transpose,
        "meter": timing.meters[0][1] if timing.meters else score.bars[0].meter,
        "meter_changes": [{"time": t, "meter": m} for t, m in timing.meters[1:]],
        "beats": timing.beats,
        "beat_numbers": timing.beat_numbers,
        "downbeats": timing.downbeats,
        "sections": timing.sections,
        "phrase_ends": timing.phrase_ends,
        "repeats_expanded": score.repeats_expanded,
        "loudness_lufs": lufs,
        "gain": gain,
        "soundfont": os.path.basename(renderer.soundfont),
    }
    label["caption"] = caption(label, seed)
    with open(tmp / "label.json", "w") as fh:
        json.dump(label, fh, indent=1)
    if final.exists():  # a stale directory under the final name without a label: replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    return label
