"""A compact pack of training audio segments: one FLAC file plus a JSON index.

Packs carry training data to a GPU machine (which has no corpus) in well under 64 MiB, and load fast anywhere.
Only train-split clips go into a pack unless asked otherwise; the test split is refused outright.
"""

import json
import random
from pathlib import Path

import numpy as np

from accelerando.data.split import training_splits

__all__ = ["write_pack", "read_pack"]


def write_pack(
    corpus: Path, out: Path, n_segments: int, seconds: float, sample_rate: int, seed: int = 0, split: str = "train"
) -> dict:
    """Cut ``n_segments`` segments of ``seconds`` from distinct clips of ``split`` into ``out`` (.flac + .json)."""
    import soundfile as sf

    if split not in training_splits() and split != "valid":
        raise ValueError(f"split={split!r} may not be used for training; use one of {training_splits()} or 'valid'")
    from accelerando.data.build import read_manifest

    rows = [r for r in read_manifest(corpus, split) if r["duration"] >= seconds + 1]
    rng = random.Random(seed)
    rng.shuffle(rows)
    seg_len = int(round(seconds * sample_rate))
    segments, index = [], []
    for r in rows[:n_segments]:
        y, sr = sf.read(corpus / r["path"] / "mix.flac", dtype="int16", always_2d=True)
        if sr != sample_rate:
            raise ValueError(f"{r['clip_id']} is at {sr} Hz, not {sample_rate} Hz")
        start = rng.randrange(0, len(y) - seg_len)
        segments.append(y[start : start + seg_len, 0])
        index.append({"clip_id": r["clip_id"], "start": start, "collection": r["collection"]})
    audio = np.concatenate(segments)
    out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(out.with_suffix(".flac"), audio, sample_rate, subtype="PCM_16")
    meta = {"sample_rate": sample_rate, "segment_samples": seg_len, "segments": index, "split": split}
    out.with_suffix(".json").write_text(json.dumps(meta))
    return meta


def read_pack(path: Path) -> tuple[np.ndarray, dict]:
    """Return (segments float32 [N, S], meta)."""
    import soundfile as sf

    meta = json.loads(Path(path).with_suffix(".json").read_text())
    audio, _ = sf.read(Path(path).with_suffix(".flac"), dtype="float32")
    n = len(meta["segments"])
    return audio[: n * meta["segment_samples"]].reshape(n, meta["segment_samples"]), meta
