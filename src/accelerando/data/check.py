"""Check a rendered clip's labels against what an independent analysis hears in its audio.

Used by ``benchmarks/corpus_label_check.py`` (the figure in BENCHMARKS.md) and by ``accelerando demo``.
"""

import json
from pathlib import Path

__all__ = ["check_clip"]


def check_clip(clip_dir: str | Path) -> dict:
    """Track beats and estimate the key of ``clip_dir/mix.flac``; score them against ``label.json``.

    Returns a dict with the label's bpm and key, the tracker's tempo, beat F-measures (plain, best metrical level,
    and after one constant latency shift; see :mod:`accelerando.eval.beats`) and the MIREX key score.
    """
    import soundfile as sf

    from accelerando.eval.beats import beat_f_measure, beat_f_measure_aligned, beat_f_measure_any_level, track_beats
    from accelerando.eval.key import estimate_key, key_score

    clip_dir = Path(clip_dir)
    label = json.loads((clip_dir / "label.json").read_text())
    y, sr = sf.read(clip_dir / "mix.flac", always_2d=True)
    y = y.mean(axis=1)
    tempo, est = track_beats(y, sr)
    ref = label["beats"]
    f_aligned, shift, _ = beat_f_measure_aligned(ref, est)
    f_any, level = beat_f_measure_any_level(ref, est)
    f_aligned_any, shift_any, level_any = beat_f_measure_aligned(ref, est, any_level=True)
    key_est = estimate_key(y, sr)
    return {
        "clip_id": label["clip_id"],
        "instrumentation": label["instrumentation"],
        "label_bpm": label["bpm"],
        "tracker_bpm": tempo,
        "beat_f": beat_f_measure(ref, est),
        "beat_f_any_level": f_any,
        "beat_level": level,
        "beat_f_aligned": f_aligned,
        "tracker_shift_s": shift,
        "beat_f_aligned_any_level": f_aligned_any,
        "aligned_level": level_any,
        "aligned_any_level_shift_s": shift_any,
        "label_key": label["key"]["name"],
        "estimated_key": " ".join(key_est),
        "key_score": key_score((label["key"]["tonic"], label["key"]["mode"]), key_est),
    }
