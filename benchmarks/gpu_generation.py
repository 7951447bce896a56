"""End-to-end generation on a GPU: the built-in pipeline with each quantized backbone, wall time and speed.

    # once, where the text encoder is installed (the GPU machine has no copy of it): prompts -> embeddings
    python benchmarks/gpu_generation.py --save-text .gpu/text.safetensors [--suite quick-v1 --prompts 4]
    # on the GPU
    python benchmarks/gpu_generation.py --text .gpu/text.safetensors [--seconds 30 --repeats 3 --json OUT.json]

The pipeline runs on CUDA with the suite's own settings (steps, guidance and the model's default guidance
interval, beat-grid and key guidance) for the first ``--prompts`` prompts of ``--suite``, each at ``--seconds``.
Text embeddings come from the file ``--save-text`` wrote with the real MiniLM encoder (its 88 MB of weights exceed
what travels to the lent GPU), so ``text_s`` is a lookup here; the CPU encoder costs about 10 ms a prompt.

Variants: the backbones of ``quant_gpu.quantized_backbones`` (bf16 autocast; RTN W8A8 / W4A8, FP8, SVDQuant W4A8
rank 32, each eager, with the Triton kernels and, int8, with the opt-in Triton conv kernel; ``--variants`` picks
some: the conv kernel autotunes for minutes on first use). SVDQuant's smoothing is calibrated on random backbone inputs:
these runs measure speed, not quality (quality is measured on the CPU, BENCHMARKS.md). Each variant generates every
prompt once to warm up, then ``--repeats`` times; the figures are medians over prompts x repeats of the synchronized
wall time, the sampling and decode shares, and the speed (seconds of audio per second of wall time; >1 is faster
than real time).
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import quant_gpu  # noqa: E402 -- the variants and device helpers live there


class CachedTextEncoder:
    """Prompt -> (tokens [1, L, E], mask [1, L], pooled [1, E]) read from a safetensors file written by
    ``--save-text``; a prompt not in the file is a one-line error naming it."""

    def __init__(self, path: str | Path):
        from safetensors.torch import load_file

        self.table = load_file(str(path))
        self.prompts = json.loads(Path(path).with_suffix(".json").read_text())

    def encode(self, prompts: list[str]):
        if len(prompts) != 1:
            raise ValueError(f"CachedTextEncoder encodes one prompt at a time, got {len(prompts)}")
        if prompts[0] not in self.prompts:
            raise SystemExit(f"error: prompt {prompts[0]!r} is not in the cached text file; rerun --save-text")
        i = self.prompts.index(prompts[0])
        return tuple(self.table[f"{i}.{part}"] for part in ("tokens", "mask", "pooled"))


def save_text(path: Path, prompts) -> None:
    from safetensors.torch import save_file

    from accelerando.conditioning.text import TextEncoder

    enc = TextEncoder().load()
    table = {}
    for i, p in enumerate(prompts):
        for part, value in zip(("tokens", "mask", "pooled"), enc.encode([p.prompt]), strict=True):
            table[f"{i}.{part}"] = value.contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(table, str(path))
    path.with_suffix(".json").write_text(json.dumps([p.prompt for p in prompts]))
    print(f"wrote {path} ({len(prompts)} prompts)")


def run_variant(pipe, backbone, mode, suite, seconds, repeats) -> dict:
    """Generate every prompt of ``suite`` at ``seconds`` with ``backbone`` (one warm-up pass, then ``repeats``) the
    way the benchmark runner does (its own call and CUDA sync); medians of the timings."""
    from dataclasses import replace

    from accelerando.bench.runner import _generate, _sync

    pipe.model.dit = backbone
    pipe.model = pipe.model  # drops the pipeline's cached bf16 weight copies of the previous backbone
    rows = []
    with quant_gpu.kernel_mode(mode):
        for rep in range(repeats + 1):  # the first pass warms up (autotuning, cuDNN plans)
            for p in suite.prompts:
                _sync()
                t0 = time.perf_counter()
                out = _generate(pipe, replace(p, duration=seconds), suite)
                _sync()
                wall = time.perf_counter() - t0
                if rep:
                    rows.append({"wall_s": wall, **{k: out.timings[k] for k in ("sampling_s", "decode_s")}})
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    med["speed_x_realtime"] = seconds / med["wall_s"]
    med["runs"] = len(rows)
    if quant_gpu.DEVICE == "cuda":
        med["peak_alloc_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="quick-v1")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--text", default=None, help="the embeddings file --save-text wrote")
    ap.add_argument("--save-text", default=None, help="write the prompts' text embeddings here and stop")
    ap.add_argument("--variants", default=None, help="comma-separated subset of the variant names")
    ap.add_argument("--device", default="cuda", help="cuda; cpu only to dry-run the logic")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from accelerando.bench.prompts import load_suite

    if args.prompts < 1:
        raise SystemExit(f"error: --prompts {args.prompts}: use at least 1")
    suite = load_suite(args.suite).limit(args.prompts)
    if args.save_text:
        save_text(Path(args.save_text), suite.prompts)
        return
    if not args.text:
        raise SystemExit("error: give --text FILE (written by --save-text where the text encoder is installed)")
    if not (Path(args.text).is_file() and Path(args.text).with_suffix(".json").is_file()):
        raise SystemExit(f"error: --text {args.text}: no such file with its .json prompt list; run --save-text first")
    if args.repeats < 1:
        raise SystemExit(f"error: --repeats {args.repeats}: use at least 1")
    only = quant_gpu.check_variants(args.variants)
    quant_gpu.DEVICE = args.device
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: benchmarks/gpu_generation.py needs a CUDA device (or --device cpu for a dry run)")
    from accelerando.pipelines.text_to_music import TextToMusicPipeline
    from accelerando.pretrained import load_codec, load_generator
    from accelerando.testing.models import backbone_inputs

    pipe = TextToMusicPipeline(load_generator("builtin"), load_codec("builtin"), CachedTextEncoder(args.text))
    pipe.to(args.device)
    base = pipe.model.dit
    x, t, cond = backbone_inputs(base.config, min(args.seconds, 10.0))
    x, t, cond = x.to(args.device), t.to(args.device), quant_gpu._to(cond, args.device)
    variants = quant_gpu.quantized_backbones(base, lambda m: m(x, t, cond), only)
    env = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "suite": suite.id,
        "settings": suite.generation,
    }
    print(json.dumps(env), flush=True)
    rows = []
    for name, (backbone, mode) in variants.items():
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        try:
            row = {
                "variant": name,
                **run_variant(pipe, backbone, mode, suite, args.seconds, args.repeats),
            }
        except Exception as err:  # noqa: BLE001 -- a variant this card cannot run is reported, not fatal
            row = {"variant": name, "error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
        print(json.dumps(row), flush=True)
        rows.append(row)
    base_wall = next((r["wall_s"] for r in rows if r["variant"] == "bf16" and "wall_s" in r), None)
    for r in rows:
        if base_wall and "wall_s" in r:
            r["wall_ratio_to_bf16"] = r["wall_s"] / base_wall
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "env": env, "rows": rows}, indent=1))
    for r in rows:
        print(r["variant"], {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k != "variant"})


if __name__ == "__main__":
    main()
