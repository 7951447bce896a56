"""Wall time of the built-in generator in bf16 autocast against float32, side by side in one process.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/precision_speed.py [--seconds 10] [--rounds 4] [--threads 2]
        [--json OUT]

One pipeline; each round generates ``--seconds`` of audio (prompt "a chorale", 100 bpm, G major, seed 0) once with
``ACCELERANDO_BF16=1`` and once with ``=0``, alternating which goes first; the first round is a warm-up. Prints the
CPU's capability as PyTorch sees it, what ``auto`` picks here, the median wall time of each precision, the ratio
bf16 / float32, and the log-spectral distance between the two outputs of the last round (same seed).
"""

import argparse
import json
import os
import platform
import statistics
import time

import torch


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.rounds < 2 or args.seconds <= 0:
        raise SystemExit(
            f"--rounds {args.rounds} / --seconds {args.seconds}: need at least 2 rounds and a positive length"
        )
    torch.set_num_threads(args.threads)
    from accelerando.eval.paired import lsd
    from accelerando.modules.precision import BF16_ENV, use_bf16
    from accelerando.pipelines.text_to_music import TextToMusicPipeline

    pipe = TextToMusicPipeline.from_pretrained("builtin")
    os.environ.pop(BF16_ENV, None)
    auto = "bf16" if use_bf16("cpu") else "float32"
    walls: dict[str, list[float]] = {"bf16": [], "float32": []}
    last = {}
    for r in range(args.rounds):
        order = ["bf16", "float32"] if r % 2 == 0 else ["float32", "bf16"]
        for name in order:
            os.environ[BF16_ENV] = "1" if name == "bf16" else "0"
            t = time.perf_counter()
            out = pipe(
                "a chorale",
                duration=args.seconds,
                bpm=100,
                key="G major",
                generator=torch.Generator().manual_seed(0),
            )
            wall = time.perf_counter() - t
            if r:
                walls[name].append(wall)
            last[name] = out.audio[0, 0]
            print(f"round {r} {name}: {wall:.2f} s", flush=True)
    os.environ.pop(BF16_ENV, None)
    med = {k: statistics.median(v) for k, v in walls.items()}
    result = {
        "machine": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "auto_picks": auto,
        "threads": args.threads,
        "seconds": args.seconds,
        "median_wall_s": med,
        "all_wall_s": walls,
        "bf16_over_float32": med["bf16"] / med["float32"],
        "lsd_bf16_vs_float32": float(lsd(last["bf16"], last["float32"])),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
