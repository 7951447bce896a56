"""Wall time of two generators side by side, at their own defaults, in one process.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/generator_speed_pair.py --a builtin --b OTHER.safetensors \
        [--seconds 30] [--rounds 6] [--threads 2]

Both pipelines share one text encoder. Each round generates ``--seconds`` of audio with each model (prompt "a
chorale", 100 bpm, G major, seed = round), alternating which goes first; the first round is a warm-up. Prints the
median wall time of each, and the ratio b / a.
"""

import argparse
import json
import resource
import statistics
import time

import torch


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", default="builtin", help="first generator ('builtin' or a .safetensors file)")
    ap.add_argument("--b", required=True, help="second generator")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from accelerando.conditioning.text import TextEncoder
    from accelerando.pipelines.text_to_music import TextToMusicPipeline

    enc = TextEncoder().load()
    pipes = {"a": TextToMusicPipeline.from_pretrained(args.a, text_encoder=enc)}
    pipes["b"] = TextToMusicPipeline.from_pretrained(args.b, text_encoder=enc)
    times = {"a": [], "b": []}
    for k in range(args.rounds):
        for name in ("a", "b") if k % 2 == 0 else ("b", "a"):
            t = time.perf_counter()
            pipes[name](
                "a chorale", bpm=100, key="G major", duration=args.seconds, generator=torch.Generator().manual_seed(k)
            )
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v[1:]) for k, v in times.items()}  # round 0 is the warm-up
    report = {
        "args": vars(args),
        "median_s": med,
        "rtf": {k: args.seconds / v for k, v in med.items()},
        "ratio_b_over_a": med["b"] / med["a"],
        "all_s": times,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
