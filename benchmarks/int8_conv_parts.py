"""The parts of a per-tensor W8A8 convolution on the CPU, at the built-in U-Net's shapes, against oneDNN's bf16 conv.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/int8_conv_parts.py [--repeats 15] [--json OUT]

For each kernel-3 convolution shape of the U-Net at 30 s (batch 2), median milliseconds of:

- ``bf16 conv``: ``F.conv1d`` in bf16 (oneDNN), the shipped path;
- ``int8 conv, ncw input`` / ``nwc input``: ``torch.ops.onednn.qconv_pointwise`` on uint8 codes laid out
  channels-first or channels-last (float32 output, bias fused), the kernel :mod:`accelerando.quant.int8_conv` calls;
- ``quantize``: the per-tensor uint8 quantizer ``int8_conv`` runs (its C++ min/max and codes passes; channels-last
  write);
- ``relayout, contiguous`` / ``cpp``: oneDNN's channels-last float32 output back to channels-first with
  ``Tensor.contiguous`` or with the C++ pass ``int8_conv`` uses (before 2026-11-27: an inductor kernel).
"""

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

SHAPES = [(192, 192, 2812), (256, 256, 1406), (384, 384, 703), (384, 256, 1406), (512, 256, 1406)]


def _median_ms(fn, repeats: int) -> float:
    from accelerando.eval.efficiency import time_call

    return 1e3 * time_call(fn, repeats, warmup=3)


def _row(c_in: int, c_out: int, frames: int, repeats: int) -> dict:
    from accelerando.quant import int8_conv

    g = torch.Generator().manual_seed(0)
    x = F.silu(torch.randn(2, c_in, frames, generator=g)).bfloat16()
    w = torch.randn(c_out, c_in, 3, generator=g) / (3 * c_in) ** 0.5
    b = torch.randn(c_out, generator=g) * 0.1
    ws = w.abs().amax(dim=(1, 2)) / 127
    wq = torch.round(w / ws[:, None, None]).to(torch.int8)
    packed = torch.ops.onednn.qconv_prepack(wq, ws, 1.0, 0, [1], [1], [1], 1, None)
    zeros = torch.zeros(c_out, dtype=torch.int64)
    q_nwc, scale, zp = int8_conv._run(int8_conv._quantize, x, None)
    q_ncw = q_nwc.contiguous()

    def qconv(q):
        return torch.ops.onednn.qconv_pointwise.tensor(
            q, scale, zp, packed, ws, zeros, b, [1], [1], [1], 1, 1.0, 0, torch.float32, "none", [], ""
        )

    y = qconv(q_nwc)
    wb, bb = w.bfloat16(), b.bfloat16()
    return {
        "shape": [c_in, c_out, frames],
        "bf16_conv_ms": _median_ms(lambda: F.conv1d(x, wb, bb, padding=1), repeats),
        "int8_conv_ncw_ms": _median_ms(lambda: qconv(q_ncw), repeats),
        "int8_conv_nwc_ms": _median_ms(lambda: qconv(q_nwc), repeats),
        "quantize_ms": _median_ms(lambda: int8_conv._run(int8_conv._quantize, x, None), repeats),
        "relayout_contiguous_ms": _median_ms(lambda: y.contiguous(), repeats),
        "relayout_cpp_ms": _median_ms(lambda: int8_conv._run(int8_conv._finish, y, None, y.dtype), repeats),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from accelerando.quant import int8_conv

    if not int8_conv.op_available():
        raise SystemExit("this PyTorch build has no oneDNN int8 convolution")
    rows = []
    for c_in, c_out, frames in SHAPES:
        row = _row(c_in, c_out, frames, args.repeats)
        rows.append(row)
        print(
            f"{c_in}->{c_out} x {frames}: bf16 conv {row['bf16_conv_ms']:.2f} ms, int8 conv "
            f"{row['int8_conv_ncw_ms']:.2f} (ncw) / {row['int8_conv_nwc_ms']:.2f} (nwc), quantize "
            f"{row['quantize_ms']:.2f}, relayout {row['relayout_contiguous_ms']:.2f} (contiguous) / "
            f"{row['relayout_cpp_ms']:.2f} (C++)"
        )
    report = {"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
