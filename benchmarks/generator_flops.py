"""Achieved FLOP/s of the generator's backbone against this machine's measured bf16 GEMM peak.

    .venv/bin/python benchmarks/generator_flops.py [--model PATH|builtin] [--seconds 30] [--threads 2]

Counts the FLOPs of one classifier-free-guided backbone evaluation (batch 2) for ``--seconds`` of audio with
FlopCounterMode, times it under bf16 autocast (median of 5), and compares with the best 2048^3 bf16 and fp32 matrix
products measured in the same process. Without --model a randomly initialised default MusicDiT is used (the
FLOPs and speed do not depend on the weights).
"""

import argparse
import json
import sys

import torch

from accelerando.eval.efficiency import count_flops, gemm_peak_flops, time_call
from accelerando.models.dit import MusicDiTConfig
from accelerando.models.generator import MusicGenerator
from accelerando.testing.models import backbone_inputs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads, for the backbone and the GEMM peak alike")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.model:
        from accelerando.pretrained import load_generator

        model = load_generator(args.model)
    else:
        model = MusicGenerator(MusicDiTConfig(depth=6)).eval()
    cfg = model.config
    x, tt, cond = backbone_inputs(cfg, args.seconds)
    b, t = x.shape[:2]

    def forward():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            model.dit(x, tt, cond)

    flops = count_flops(forward)
    wall = time_call(forward, repeats=5, warmup=2)
    peak_bf16 = gemm_peak_flops(torch.bfloat16)
    peak_fp32 = gemm_peak_flops(torch.float32)
    params = sum(p.numel() for p in model.dit.parameters())
    report = {
        "params_m": params / 1e6,
        "tokens": -(-t // cfg.patch) if hasattr(cfg, "patch") else t,  # a U-Net: one row per frame
        "backbone": type(model.dit).__name__,
        "gflops_per_eval": flops / 1e9,
        "eval_seconds": wall,
        "achieved_gflops_s": flops / wall / 1e9,
        "gemm_peak_bf16_gflops_s": peak_bf16 / 1e9,
        "gemm_peak_fp32_gflops_s": peak_fp32 / 1e9,
        "fraction_of_bf16_peak": flops / wall / peak_bf16,
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
