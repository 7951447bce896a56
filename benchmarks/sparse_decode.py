"""Sparse codec decoding of an edit against a full decode (SIGE-Audio, codec part).

    .venv/bin/python benchmarks/sparse_decode.py [--seconds 60]

Encodes a test-split clip (looped to ``--seconds``) with the shipped codec, changes a centred region covering 1, 5,
10 and 25% of the latent frames, and decodes it fully and with :func:`accelerando.cache.sparse_decode.decode_edit`
(median of 5 each, alternating, one process, 2 threads, float32). Reports the decoder work fraction, the wall-time
ratio sparse / full and the relative L2 difference between the two outputs.
"""

import argparse
import json
import statistics
import sys
import time

import torch

from accelerando.audio import load
from accelerando.cache.sparse_decode import decode_edit
from accelerando.data.build import default_corpus_dir
from accelerando.pretrained import load_codec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    codec = load_codec("builtin")
    corpus = default_corpus_dir()
    row = next(json.loads(x) for x in (corpus / "manifest.jsonl").read_text().splitlines() if '"test"' in x)
    wav, _ = load(corpus / row["path"] / "mix.flac", sample_rate=codec.sample_rate, mono=True)
    n = int(args.seconds * codec.sample_rate)
    wav = wav.repeat(1, n // wav.shape[-1] + 1)[:, :n][None]  # [1, 1, S]
    with torch.inference_mode():
        z = codec.encode(wav)
        before = codec.decode(z)
    t = z.shape[-1]
    print(f"clip {row['clip_id']}, {args.seconds:.0f} s, {t} latent frames\n")
    print("| edit | decoder frames run | sparse time ÷ full time | rel. L2 difference |")
    print("| --- | --- | --- | --- |")
    for share in (0.01, 0.05, 0.10, 0.25):
        k = max(1, int(share * t))
        a = (t - k) // 2
        z2 = z.clone()
        z2[..., a : a + k] = z2[..., a : a + k].flip(-1)  # a plausible edit: the region played backwards
        full_t, sparse_t = [], []
        for _ in range(5):
            s = time.perf_counter()
            with torch.inference_mode():
                full = codec.decode(z2)
            full_t.append(time.perf_counter() - s)
            s = time.perf_counter()
            res = decode_edit(codec, z2, before, a, a + k)
            sparse_t.append(time.perf_counter() - s)
        diff = ((res.audio - full).norm() / full.norm()).item()
        ratio = statistics.median(sparse_t) / statistics.median(full_t)
        print(f"| {share:.0%} | {res.fraction:.1%} | {ratio:.3f} ({1 / ratio:.1f}x faster) | {diff:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
