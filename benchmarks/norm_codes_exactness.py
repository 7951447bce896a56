"""How exactly the fused norm-codes kernel (accelerando.quant.norm_codes) reproduces PyTorch's eager chain.

    .venv/bin/python benchmarks/norm_codes_exactness.py [--points 40000000] [--seeds 3] [--json OUT]

1. Its ``exp`` (the SiLU's, a polynomial with fused multiply-adds) against float64 ``exp`` rounded to float32, in
   ulps, at ``--points`` evenly spaced points over [-87, 88] (the range the kernel clamps to).
2. Its uint8 codes against ``quantize_per_tensor_u8(silu(norm(x) * mul + add))`` computed eagerly: how many codes
   differ (by one at most), at the shapes of ``tests/quant/test_norm_codes.py`` and of the built-in U-Net's blocks on
   a 30 s clip, in float32 and bf16, ``--seeds`` inputs each.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "quant"))

SHAPES = [  # (channels, groups, frames, modulation)
    (32, 4, 301, False),
    (48, 8, 130, True),
    (192, 32, 2812, True),
    (256, 32, 1406, False),
    (384, 32, 703, True),
]


def _exp_ulps(points: int) -> dict:
    from accelerando.quant.norm_codes import kernel_exp

    worst, chunk = 0, 4_000_000
    for start in range(0, points, chunk):
        idx = torch.arange(start, min(points, start + chunk), dtype=torch.float64)
        x = (-87.0 + 175.0 * idx / (points - 1)).float()
        got, want = kernel_exp(x), torch.exp(x.double()).float()
        worst = max(worst, int((got.view(torch.int32).long() - want.view(torch.int32).long()).abs().max()))
    return {"points": points, "max_ulps": worst}


def _codes(seeds: int) -> dict:
    from test_norm_codes import _norm, _reference

    from accelerando.quant import norm_codes

    rows, total, differing = [], 0, 0
    for dtype in (torch.float32, torch.bfloat16):
        for c, groups, t, mod in SHAPES:
            for seed in range(seeds):
                g = torch.Generator().manual_seed(c + t + seed)
                norm = _norm(c, groups, seed=t)
                x = (torch.randn(2, c, t, generator=g) * 3 + torch.randn(2, 1, t, generator=g)).to(dtype)
                mul = (1 + 0.2 * torch.randn(2, c, 1, generator=g)).to(dtype) if mod else None
                add = (0.3 * torch.randn(2, c, 1, generator=g)).to(dtype) if mod else None
                q, scale, _ = norm_codes.frame_norm_silu_codes(x, norm, mul, add, None)
                rq, rscale, _ = _reference(x, norm, mul, add, None)
                d = (q.int() - rq.int()).abs()
                n = int((d > 0).sum())
                rows.append(
                    {"dtype": str(dtype), "shape": [2, c, t], "seed": seed, "differing": n, "max": int(d.max())}
                )
                total, differing = total + d.numel(), differing + n
                if not torch.equal(scale, rscale):
                    raise SystemExit(f"scale differs at {rows[-1]}")
    return {"codes": total, "differing": differing, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=40_000_000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from accelerando.quant import norm_codes

    if not norm_codes.available():
        raise SystemExit(f"the fused norm kernel does not build here: {norm_codes.status()['broken']}")
    report = {"exp": _exp_ulps(args.points), "codes": _codes(args.seeds)}
    print(json.dumps({"exp": report["exp"], **{k: v for k, v in report["codes"].items() if k != "rows"}}))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
