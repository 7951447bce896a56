"""Inpainting: is the audio outside the regions kept sample-exactly, and do the seams click?

    .venv/bin/python benchmarks/inpaint_seams.py --model PATH [--n 16] [--seconds 12] [--steps 8]

For ``--n`` test-split clips (seeded choice), the first ``--seconds`` of the real mixture are inpainted in one
region of 2 s at a seeded position (at least 2 s from either end), prompted with the clip's caption and labels.
Reported per clip and in summary:

- ``max_abs_diff_outside``: the largest sample difference against the input over every sample outside
  ``[start, end)`` (the pipeline's crossfade lies inside the region, so this should be exactly 0), and the
  crossfade length;
- seam ratios (``accelerando.eval.seams``, seam-v2) at the two boundaries of the output, next to the same score of
  the untouched input at the same times (a real-music baseline: an ordinary moment of the piece), and the excess
  of the output's flux over the input's at those moments (above 2 is a seam artifact).
"""

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

from accelerando.audio import load
from accelerando.data.build import default_corpus_dir, read_manifest
from accelerando.eval.seams import seam_scores
from accelerando.pipelines.text_to_music import _CROSSFADE_S, TextToMusicPipeline


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--corpus", type=Path, default=default_corpus_dir())
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--region-seconds", type=float, default=2.0)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    pipe = TextToMusicPipeline.from_pretrained(args.model)
    sr = pipe.codec.sample_rate
    rows = [r for r in read_manifest(args.corpus, "test") if r["duration"] >= args.seconds and 40 <= r["bpm"] <= 200]
    rng = random.Random(args.seed)
    picked = rng.sample(rows, min(args.n, len(rows)))
    results = []
    for i, r in enumerate(picked):
        wav, _ = load(args.corpus / r["path"] / "mix.flac", sample_rate=sr, mono=True)
        wav = wav[:, : int(args.seconds * sr)]
        a = round(rng.uniform(2.0, args.seconds - 2.0 - args.region_seconds), 3)
        b = a + args.region_seconds
        out = pipe(
            r["caption"],
            bpm=r["bpm"],
            key=r["key"],
            meter=r["meter"],
            instruments=r["instrumentation"],
            duration=args.seconds,
            steps=args.steps,
            init_audio=wav,
            init_sample_rate=sr,
            regions=[(a, b)],
            generator=torch.Generator().manual_seed(i),
        )
        y, x = out.audio[0, 0].numpy(), wav[0].numpy()
        keep = np.ones(y.size, dtype=bool)
        keep[int(a * sr) : int(b * sr)] = False
        seams = seam_scores(y, sr, [a, b], reference=x)
        results.append(
            {
                "clip": r["clip_id"],
                "region": [a, b],
                "max_abs_diff_outside": float(np.abs(y[keep] - x[keep]).max()),
                "seam_ratios": seams["ratios"],
                "input_ratios_same_times": seams["reference_ratios"],
                "excess_ratios": seams["excess_ratios"],
            }
        )
    seam = [v for x in results for v in x["seam_ratios"]]
    base = [v for x in results for v in x["input_ratios_same_times"]]
    summary = {
        "n_clips": len(results),
        "crossfade_ms": 1000 * _CROSSFADE_S,
        "max_abs_diff_outside": max(x["max_abs_diff_outside"] for x in results),
        "seam_ratio_median": statistics.median(seam),
        "seam_ratio_max": max(seam),
        "seams_above_2": sum(v > 2 for v in seam),
        "n_seams": len(seam),
        "input_ratio_median": statistics.median(base),
        "input_ratio_max": max(base),
        "excess_max": max(v for x in results for v in x["excess_ratios"]),
        "seam_artifacts": sum(v > 2 for x in results for v in x["excess_ratios"]),
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "clips": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
