"""Analyzer ceiling: the tempo and key analyzers of the generator benchmark, run on real corpus audio.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/analyzer_ceiling.py [--split valid|test] [--n 64] [--seconds 10]
        [--seed 0] [--analyzer v2|v1] [--recon] [--symbolic] [--json OUT]

For ``--n`` clips of ``--split`` (seeded choice among clips of 40-200 BPM and at least ``--seconds`` long, the same
filter as ``benchmarks/generator_adherence.py``) the first ``--seconds`` of the real mix is analysed exactly as a
generated clip is: :func:`accelerando.eval.beats.track_beats` for tempo (MIREX acc1 / acc2 against the labelled bpm,
via :func:`accelerando.eval.tempo.tempo_adherence`) and :func:`accelerando.eval.key.estimate_key` for key (MIREX
weighted score via :func:`accelerando.eval.key.key_score`). A generator that rendered these very pieces perfectly
would score this, so it is the ceiling of the generator benchmark. Tune on ``valid``; report ``test``.
``--analyzer v1`` runs the earlier settings (tempo prior at 120 BPM, Krumhansl-Kessler key profiles) for comparison.

``--recon`` also analyses the builtin codec's reconstructions of the same excerpts (the ceiling for a generator that
is perfect up to its codec). ``--symbolic`` also runs the key estimator's profile match on the score's own notes
(duration-weighted pitch-class histogram of the notes sounding in the excerpt, from music21): where that disagrees
with the label, the label (key signature, or signature plus final for modal scores) and the notes disagree, which
no audio analyzer can fix.

Prints a JSON summary: acc1, acc2, median relative tempo error, mean key score, the tempo misses binned by
estimate/label ratio, the key errors by kind (fifth, relative, parallel, other), and figures per instrument family
and per meter.
"""

import argparse
import collections
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from accelerando.audio import load
from accelerando.data.build import default_corpus_dir, read_manifest
from accelerando.eval.beats import DEFAULT_START_BPM, TRACKER_VERSION, track_beats
from accelerando.eval.key import KEY_VERSION, estimate_key, key_score, to_majmin
from accelerando.eval.tempo import tempo_adherence

_RATIOS = {"1": 1.0, "2": 2.0, "1/2": 0.5, "3": 3.0, "1/3": 1 / 3, "3/2": 1.5, "2/3": 2 / 3, "4/3": 4 / 3, "3/4": 0.75}
# analyzer settings: (tempo prior centre in BPM, key profiles, tracker version, key estimator version)
_ANALYZERS = {
    "v3": (DEFAULT_START_BPM, "albrecht", TRACKER_VERSION, KEY_VERSION),
    "v2": (80.0, "albrecht", "librosa-dp-v2", KEY_VERSION),
    "v1": (120.0, "krumhansl", "librosa-dp-v1", "ks-cqt-v1"),
}
_PC = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def _pc(name: str) -> int:
    pc = _PC[name[0].upper()]
    for ch in name[1:]:
        pc += 1 if ch == "#" else -1 if ch == "b" else 0
    return pc % 12


def ratio_bin(estimate: float, label: float) -> str:
    """Name of the simple ratio within 4 % of ``estimate / label`` ("1", "3/2", ...), else "other"."""
    r = estimate / label
    for name, v in _RATIOS.items():
        if abs(r - v) <= 0.04 * v:
            return name
    return "other"


def key_error_kind(reference: tuple[str, str], estimate: tuple[str, str]) -> str:
    """ "same", "fifth" (either direction, same mode), "relative", "parallel" or "other" (modes mapped to maj/min)."""
    rt, rm = _pc(reference[0]), to_majmin(reference[1])
    et, em = _pc(estimate[0]), to_majmin(estimate[1])
    d = (et - rt) % 12
    if rm == em:
        return "same" if d == 0 else "fifth" if d in (5, 7) else "other"
    if d == 0:
        return "parallel"
    if (rm == "major" and d == 9) or (rm == "minor" and d == 3):
        return "relative"
    return "other"


def _summary(rows: list[dict], prefix: str = "") -> dict:
    out = {
        "n": len(rows),
        "acc1": statistics.fmean(r[prefix + "acc1"] for r in rows),
        "acc2": statistics.fmean(r[prefix + "acc2"] for r in rows),
        "median_rel_tempo_error": statistics.median(r[prefix + "rel_error"] for r in rows),
        "mean_key_score": statistics.fmean(r[prefix + "key_score"] for r in rows),
    }
    misses = [r for r in rows if not r[prefix + "acc1"]]
    out["tempo_misses_by_ratio"] = dict(collections.Counter(r[prefix + "ratio"] for r in misses).most_common())
    out["key_by_kind"] = dict(collections.Counter(r[prefix + "key_kind"] for r in rows).most_common())
    return out


def _group(rows: list[dict], field: str, prefix: str = "") -> dict:
    groups = collections.defaultdict(list)
    for r in rows:
        groups[r[field]].append(r)
    return {
        k: {
            "n": len(g),
            "acc1": round(statistics.fmean(r[prefix + "acc1"] for r in g), 3),
            "acc2": round(statistics.fmean(r[prefix + "acc2"] for r in g), 3),
            "key": round(statistics.fmean(r[prefix + "key_score"] for r in g), 3),
        }
        for k, g in sorted(groups.items())
    }


def analyse(y: np.ndarray, sr: int, bpm: float, key: tuple[str, str], analyzer: str = "v2") -> dict:
    """Tempo and key analysis of one excerpt, scored against the label (the analyzers never see the label)."""
    start_bpm, profile = _ANALYZERS[analyzer][:2]
    tempo, _ = track_beats(y, sr, start_bpm=start_bpm)
    adh = tempo_adherence(tempo, bpm)
    est_key = estimate_key(y, sr, profile=profile)
    return {
        "tracked_bpm": round(tempo, 2),
        "acc1": adh["acc1"],
        "acc2": adh["acc2"],
        "rel_error": abs(tempo - bpm) / bpm,
        "ratio": ratio_bin(tempo, bpm),
        "estimated_key": " ".join(est_key),
        "key_score": key_score(key, est_key),
        "key_kind": key_error_kind(key, est_key),
    }


def symbolic_key(corpus: Path, row: dict, seconds: float, profile: str) -> tuple[str, str] | None:
    """Key estimator's profile match on the score notes sounding in the first ``seconds`` (None if unreadable)."""
    from accelerando.data.labels import plan_clip
    from accelerando.data.scores import ScoreRef, _corpus_root, load_score
    from accelerando.eval.key import key_from_chroma

    label = json.loads((corpus / row["path"] / "label.json").read_text())
    sid = label["score_id"]
    rel, _, num = sid.partition("#")
    ref = ScoreRef(sid, label["collection"], str(Path(_corpus_root()) / rel), int(num) if num else None)
    try:
        score = load_score(ref)
    except Exception:  # a score that no longer parses: leave it out of the symbolic figure
        return None
    timing = plan_clip(score, label["bpm"], transpose=label["transpose"])
    hist = np.zeros(12)
    for part in timing.notes:
        for start, end, pitch, _ in part:
            if start < seconds:
                hist[pitch % 12] += min(end, seconds) - start
    return key_from_chroma(hist, profile) if hist.sum() > 0 else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=default_corpus_dir())
    ap.add_argument("--split", default="valid", choices=["train", "valid", "test"])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample-rate", type=int, default=24000, help="analysis rate (the codec's; the corpus is 24 kHz)")
    ap.add_argument("--analyzer", default="v3", choices=sorted(_ANALYZERS), help="v1: the earlier settings")
    ap.add_argument("--recon", action="store_true", help="also analyse builtin codec reconstructions")
    ap.add_argument("--symbolic", action="store_true", help="also match key profiles on the score notes (music21)")
    ap.add_argument("--json", type=Path, default=None, help="also write the per-clip rows here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = [
        r for r in read_manifest(args.corpus, args.split) if 40 <= r["bpm"] <= 200 and r["duration"] >= args.seconds
    ]
    picked = random.Random(args.seed).sample(rows, min(args.n, len(rows)))
    codec = None
    if args.recon:
        from accelerando.pipelines.text_to_music import TextToMusicPipeline

        codec = TextToMusicPipeline.from_pretrained("builtin").codec
    t0 = time.perf_counter()
    results = []
    for r in picked:
        sr = codec.sample_rate if codec is not None else args.sample_rate
        wav, _ = load(args.corpus / r["path"] / "mix.flac", sample_rate=sr, mono=True)
        wav = wav.reshape(-1)[: int(args.seconds * sr)]
        tonic, mode = r["key"].split(" ", 1)
        row = {
            "clip": r["clip_id"],
            "instrumentation": r["instrumentation"],
            "collection": r["collection"],
            "meter": r["meter"],
            "bpm": r["bpm"],
            "key": r["key"],
        }
        row |= analyse(wav.numpy().astype(np.float64), sr, r["bpm"], (tonic, mode), args.analyzer)
        if codec is not None:
            with torch.inference_mode():
                rec = codec.decode(codec.encode(wav[None, None]))[0, 0, : wav.numel()]
            rec_row = analyse(rec.numpy().astype(np.float64), sr, r["bpm"], (tonic, mode), args.analyzer)
            row |= {"recon_" + k: v for k, v in rec_row.items()}
        if args.symbolic:
            sym = symbolic_key(args.corpus, r, args.seconds, _ANALYZERS[args.analyzer][1])
            row["symbolic_key"] = " ".join(sym) if sym else None
            if sym:
                row["symbolic_key_score"] = key_score((tonic, mode), sym)
                row["symbolic_key_kind"] = key_error_kind((tonic, mode), sym)
        results.append(row)
    summary = {
        "split": args.split,
        "seconds": args.seconds,
        "seed": args.seed,
        "analyzer": args.analyzer,
        "tracker": _ANALYZERS[args.analyzer][2],
        "key_estimator": _ANALYZERS[args.analyzer][3],
        "real": _summary(results),
        "real_by_instrumentation": _group(results, "instrumentation"),
        "real_by_meter": _group(results, "meter"),
        "real_by_collection": _group(results, "collection"),
    }
    if codec is not None:
        summary["codec_reconstruction"] = _summary(results, "recon_")
        summary["codec_reconstruction_by_instrumentation"] = _group(results, "instrumentation", "recon_")
    if args.symbolic:
        sym = [r for r in results if r.get("symbolic_key_score") is not None]
        summary["symbolic_key"] = {
            "n": len(sym),
            "mean_key_score": statistics.fmean(r["symbolic_key_score"] for r in sym) if sym else float("nan"),
            "by_kind": dict(collections.Counter(r["symbolic_key_kind"] for r in sym).most_common()),
            "audio_key_score_where_notes_agree": statistics.fmean(
                [r["key_score"] for r in sym if r["symbolic_key_kind"] == "same"] or [float("nan")]
            ),
        }
    summary["analysis_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "clips": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
