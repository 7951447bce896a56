"""Wall time of two generators side by side, at their own defaults, in one process.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/generator_speed_pair.py --a builtin --b OTHER.safetensors \
        [--seconds 30] [--rounds 6] [--threads 2] [--compile-norms a,b] [--fuse-norms a,b] [--json OUT]

Both pipelines share one text encoder. Each round generates ``--seconds`` of audio with each model (prompt "a
chorale", 100 bpm, G major, seed = round), alternating which goes first; the first round is a warm-up. Prints the
median wall time of each, the ratio b / a, and the share of each generation spent inside backbone calls.
The process keeps freed memory as the ``accelerando`` command does (``ACCELERANDO_MALLOC=default`` for glibc's
own settings, as before 2026-11-27). ``--compile-norms``: run those pipelines' per-frame norms compiled
(``accelerando.kernels.compile_frame_norms``). ``--fuse-norms``: those pipelines' residual blocks make their int8
convolutions' input codes with the fused norm kernel (``accelerando.quant.norm_codes.fuse_block_norms``;
per-tensor quantized U-Nets).
"""

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import torch


def _time_backbone(dit, acc: list) -> None:
    """Add the wall time of every ``dit`` call to ``acc[-1]`` (the current generation's entry)."""
    forward = dit.forward

    def timed(*args, **kwargs):
        t = time.perf_counter()
        out = forward(*args, **kwargs)
        acc[-1] += time.perf_counter() - t
        return out

    dit.forward = timed


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", default="builtin", help="first generator ('builtin' or a .safetensors file)")
    ap.add_argument("--b", required=True, help="second generator")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile-norms", default="", help="comma-separated: a, b or both")
    ap.add_argument("--fuse-norms", default="", help="comma-separated: a, b or both")
    ap.add_argument("--json", default=None, help="also write the report here")
    args = ap.parse_args(argv)
    compiled, fused = _which("--compile-norms", args.compile_norms), _which("--fuse-norms", args.fuse_norms)
    torch.set_num_threads(args.threads)
    from accelerando.runtime import apply_malloc_setting

    apply_malloc_setting()  # as the accelerando command runs (ACCELERANDO_MALLOC=default: glibc's own settings)
    from accelerando.conditioning.text import TextEncoder
    from accelerando.pipelines.text_to_music import TextToMusicPipeline

    enc = TextEncoder().load()
    pipes = {"a": TextToMusicPipeline.from_pretrained(args.a, text_encoder=enc)}
    pipes["b"] = TextToMusicPipeline.from_pretrained(args.b, text_encoder=enc)
    inside = {"a": [], "b": []}  # seconds inside backbone calls, per generation
    for name in compiled:
        from accelerando.kernels import compile_frame_norms

        if not compile_frame_norms(pipes[name].model.dit):
            raise SystemExit(f"--compile-norms {name}: that backbone has no per-frame norms")
    for name in fused:
        from accelerando.quant.norm_codes import fuse_block_norms

        if not fuse_block_norms(pipes[name].model.dit):
            raise SystemExit(f"--fuse-norms {name}: that backbone has no per-frame-norm residual blocks")
    for name, pipe in pipes.items():
        _time_backbone(pipe.model.dit, inside[name])
    times = {"a": [], "b": []}
    for k in range(args.rounds):
        for name in ("a", "b") if k % 2 == 0 else ("b", "a"):
            inside[name].append(0.0)
            t = time.perf_counter()
            pipes[name](
                "a chorale", bpm=100, key="G major", duration=args.seconds, generator=torch.Generator().manual_seed(k)
            )
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v[1:]) for k, v in times.items()}  # round 0 is the warm-up
    share = {k: statistics.median(b / w for b, w in zip(inside[k][1:], times[k][1:], strict=True)) for k in times}
    report = {
        "args": vars(args),
        "median_s": med,
        "rtf": {k: args.seconds / v for k, v in med.items()},
        "ratio_b_over_a": med["b"] / med["a"],
        "backbone_share": share,
        "all_s": times,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


def _which(flag: str, value: str) -> set[str]:
    names = {c for c in value.split(",") if c}
    if names - {"a", "b"}:
        raise SystemExit(f"{flag} {value!r}: use a, b or a,b")
    return names


if __name__ == "__main__":
    main()
