"""Fit-for-purpose check for FAD: it should rise monotonically with the strength of a degradation.

Reference set: the first ``--seconds`` of ``--n-ref`` test-split clips (even positions in clip_id order). Evaluated
sets: ``--n-eval`` disjoint test clips (odd positions), clean and degraded by white noise at SNR 30/20/10/0 dB,
8th-order Butterworth low-pass (sosfiltfilt) at 8/4/2/1 kHz, and a shuffle of beat-length segments (beats from
each clip's label.json, permuted with a fixed seed). Prints a Markdown table of FAD per condition.

    .venv/bin/python benchmarks/fad_sanity.py --n-ref 30 --n-eval 30 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from accelerando.audio import load, resample
from accelerando.data.build import read_manifest
from accelerando.eval.embeddings import get_embedder
from accelerando.eval.fad import FAD_VERSION, fad, fad_inf

CORPUS = Path.home() / ".cache/accelerando/corpus"
SR = 24000


def load_clips(n: int, offset: int, seconds: float) -> list[tuple[np.ndarray, list[float]]]:
    """Test-split clips at positions ``offset, offset + 2, ...``: (mono audio [S] at 24 kHz, beat times in s)."""
    rows = sorted((r for r in read_manifest(CORPUS, "test") if r["duration"] >= seconds), key=lambda r: r["clip_id"])
    out = []
    for row in rows[offset::2][:n]:
        wav, sr = load(CORPUS / row["path"] / "mix.flac", sample_rate=SR, mono=True)
        label = json.loads((CORPUS / row["path"] / "label.json").read_text())
        out.append((wav.reshape(-1)[: int(seconds * SR)].double().numpy(), label["beats"]))
    return out


def add_noise(y: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(y.size)
    return y + noise * np.sqrt(np.mean(y**2) / 10 ** (snr_db / 10))


def lowpass(y: np.ndarray, cutoff: float) -> np.ndarray:
    from scipy.signal import butter, sosfiltfilt

    return sosfiltfilt(butter(8, cutoff, fs=SR, output="sos"), y)


def beat_shuffle(y: np.ndarray, beats: list[float], rng: np.random.Generator) -> np.ndarray:
    cuts = [0] + [int(b * SR) for b in beats if 0 < b * SR < y.size] + [y.size]
    segments = [y[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]
    return np.concatenate([segments[i] for i in rng.permutation(len(segments))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-ref", type=int, default=30)
    parser.add_argument("--n-eval", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--embedder", default="melstats")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    start = time.time()
    embedder = get_embedder(args.embedder)

    def embed_set(clips: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(
            [
                embedder.embed(resample(torch.from_numpy(np.ascontiguousarray(y)), SR, embedder.sample_rate).numpy())
                for y in clips
            ]
        )

    ref = embed_set([y for y, _ in load_clips(args.n_ref, 0, args.seconds)])
    evals = load_clips(args.n_eval, 1, args.seconds)
    rng = np.random.default_rng(args.seed)
    conditions = {"clean (disjoint clips)": [y for y, _ in evals]}
    for snr in (30, 20, 10, 0):
        conditions[f"white noise SNR {snr} dB"] = [add_noise(y, snr, rng) for y, _ in evals]
    for cutoff in (8000, 4000, 2000, 1000):
        conditions[f"low-pass {cutoff // 1000} kHz"] = [lowpass(y, cutoff) for y, _ in evals]
    conditions["beat-segment shuffle"] = [beat_shuffle(y, beats, rng) for y, beats in evals]

    print(
        f"embedder {getattr(embedder, 'version', embedder.name)} (dim {embedder.dim}), {FAD_VERSION}; ref "
        f"{args.n_ref} clips ({len(ref)} windows), eval {args.n_eval} clips x {args.seconds:g} s\n"
    )
    print("| condition | FAD | FAD-inf | windows |\n| --- | ---: | ---: | ---: |")
    for name, clips in conditions.items():
        emb = embed_set(clips)
        print(f"| {name} | {fad(emb, ref):.3f} | {fad_inf(emb, ref, seed=args.seed)['fad_inf']:.3f} | {len(emb)} |")
    print(f"\n({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
