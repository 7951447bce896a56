"""oneDNN's int8 convolution on this CPU: exact or not for full 8-bit and for reduced-range weight codes, and its
speed against a float32 convolution, at the built-in U-Net's block shapes.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/int8_conv_pairs.py [--threads 1] [--repeats 15] [--json OUT]

For each shape ``[B=2, C, T]`` (a 30 s clip at the U-Net's three levels, ``C -> C``, kernel 3, padding 1): uint8
activation codes drawn over the whole ``[0, 255]`` range, int8 weight codes drawn over ``[-127, 127]`` ("full") or
``[-64, 64]`` (``reduce_range``), and oneDNN's ``qconv_pointwise`` with unit scales, against the exact integer
sums (a float64 convolution of the codes). On a CPU without VNNI the full-range sums saturate pairs of products in
int16 (:mod:`accelerando.quant.int8_conv`); reduced-range ones must be exact everywhere. (oneDNN writes float32
here, which holds integers exactly up to 2^24; the worst case at 384 channels, 1152 x 255 x 64, is above that, but
random codes sum to far less. ``tests/quant/test_int8_conv.py`` checks the worst case itself.) Times: median of
``--repeats`` calls after a warm-up, the int8 convolution (codes already made) against ``F.conv1d`` on float32
input of the same shape, in the same process; and the reduced-range convolution given an activation zero point
(100) against none, the cost :func:`accelerando.quant.int8_conv.conv_codes` avoids by folding it into the bias.
"""

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from accelerando.eval.efficiency import time_call

SHAPES = ((192, 2812), (256, 1406), (384, 703))  # (channels, frames) of a 30 s clip at the built-in's levels


def _median_ms(fn, repeats: int) -> float:
    return 1e3 * time_call(fn, repeats=repeats, warmup=1)


def _qconv(q: torch.Tensor, w: torch.Tensor, zp: int = 0):
    c_out = w.shape[0]
    ones, zeros = torch.ones(c_out), torch.zeros(c_out, dtype=torch.int64)
    packed = torch.ops.onednn.qconv_prepack(w, ones, 1.0, 0, [1], [1], [1], 1, None)
    one, zero = torch.tensor(1.0), torch.tensor(zp)
    args = (packed, ones, zeros, None, [1], [1], [1], 1, 1.0, 0, torch.float32, "none", [], "")
    return lambda: torch.ops.onednn.qconv_pointwise.tensor(q, one, zero, *args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    rows = []
    for c, t in SHAPES:
        q = torch.randint(0, 256, (2, t, c), generator=g, dtype=torch.uint8).transpose(1, 2)  # channels-last codes
        x = torch.randn(2, c, t, generator=g)
        wf = torch.randn(c, c, 3, generator=g)
        f32_ms = _median_ms(lambda x=x, wf=wf: F.conv1d(x, wf, None, 1, 1), args.repeats)
        row = {"channels": c, "frames": t, "float32_ms": f32_ms}
        for name, bound in (("full", 127), ("reduced", 64)):
            w = torch.randint(-bound, bound + 1, (c, c, 3), generator=g, dtype=torch.int8)
            run = _qconv(q, w)
            exact = F.conv1d(q.double(), w.double(), None, 1, 1)
            err = (run().double() - exact).abs().max() / exact.abs().max()
            ms = _median_ms(run, args.repeats)
            row[name] = {"max_rel_error": float(err), "int8_ms": ms, "float32_over_int8": f32_ms / ms}
        # the same reduced-range convolution given an activation zero point, as int8_conv did before folding it
        row["reduced"]["with_zero_point_ms"] = zp_ms = _median_ms(_qconv(q, w, zp=100), args.repeats)
        row["reduced"]["zero_point_cost"] = zp_ms / row["reduced"]["int8_ms"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {
        "args": vars(args),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "vnni": bool(getattr(torch.cpu, "_is_vnni_supported", lambda: False)()),
        "rows": rows,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
