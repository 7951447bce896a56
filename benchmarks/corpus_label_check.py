"""Label check for BENCHMARKS.md: labelled beats against an independent beat tracker on random corpus clips.

    .venv/bin/python benchmarks/corpus_label_check.py [--corpus DIR] [--n 20] [--seed 0] [--json OUT]

Draws ``--n`` clips at random (seeded) from the corpus manifest and runs :func:`accelerando.data.check.check_clip`
on each: librosa's beat tracker and a Krumhansl key estimate against the exact labels. Prints a Markdown table
and the means of every score.
"""

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

from accelerando.data.build import default_corpus_dir
from accelerando.data.check import check_clip

_SCORES = ("beat_f", "beat_f_any_level", "beat_f_aligned", "beat_f_aligned_any_level", "key_score")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=default_corpus_dir())
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the per-clip rows here")
    args = ap.parse_args(argv)
    manifest = args.corpus / "manifest.jsonl"
    if not manifest.exists():
        print(f"error: no manifest at {manifest}; run `accelerando data build` first", file=sys.stderr)
        return 2
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    picked = random.Random(args.seed).sample(rows, min(args.n, len(rows)))
    t0 = time.perf_counter()
    results = [check_clip(args.corpus / r["path"]) for r in picked]
    print("| clip | meter | label bpm | tracker bpm | F | F any level | F aligned | F aligned any level | key |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r, m in zip(results, picked, strict=True):
        print(
            f"| {r['clip_id']} | {m['meter']} | {r['label_bpm']:.0f} | {r['tracker_bpm']:.1f} | {r['beat_f']:.2f} | "
            f"{r['beat_f_any_level']:.2f} | {r['beat_f_aligned']:.2f} | {r['beat_f_aligned_any_level']:.2f} | "
            f"{r['label_key']} / {r['estimated_key']} ({r['key_score']:.1f}) |"
        )
    means = {k: statistics.fmean(r[k] for r in results) for k in _SCORES}
    shifts = [1000 * r["aligned_any_level_shift_s"] for r in results]
    print(f"\nclips: {len(results)} (seed {args.seed}); analysis took {time.perf_counter() - t0:.0f} s")
    print("means: " + ", ".join(f"{k} {v:.3f}" for k, v in means.items()))
    print(f"median tracker latency (aligned, any level): {statistics.median(shifts):.0f} ms")
    if args.json:
        args.json.write_text(json.dumps({"means": means, "clips": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
