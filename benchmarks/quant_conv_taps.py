"""Can an int8 1-D convolution beat oneDNN's bf16 one on this CPU without an unfold copy? Per-conv-shape timings.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/quant_conv_taps.py [--repeats 9] [--json OUT]

The quantized U-Net runs each ``Conv1d(C, O, k=3)`` as unfold + int8 GEMM (``quant/conv.py``) and took 1.5x the
bf16 backbone's time (BENCHMARKS.md, "Quantizing the conv U-Net"). The alternative tried here ("tap GEMMs") quantizes
each frame once, in the channels-first layout the U-Net already has (one scale per frame), and runs one
``torch._int_mm`` of the stacked tap weights ``[k*O, C]`` against the int8 frames ``[C, T]`` per batch item; the
``k`` int32 outputs are then scaled by their frames' activation scales and summed with the tap shifts:

    y[o, t] = w_scale[o] * sum_j s[t + j - p] * P[j, o, t + j - p] + bias[o]

The per-frame scales differ between the taps of one window, so the taps cannot be summed in int32: the epilogue
reads ``k`` int32 values per output. Timed per shape of the built-in U-Net at 30 s (batch 2, guided), one thread,
median of ``--repeats``: the bf16 conv (oneDNN), the unfolded bf16 GEMM, and the tap-GEMM conv in eager mode and
compiled (``torch.compile`` of the quantize and epilogue kernels around ``torch._int_mm``), with its parts.
"""

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

# (C_in, C_out, frames) of the built-in U-Net's k=3 convolutions at 30 s: 93.75 frames/s, halved per level
SHAPES = ((192, 192, 2812), (256, 256, 1406), (384, 384, 703), (384, 256, 1406), (512, 256, 1406))
BATCH, TAPS = 2, 3


def _median_ms(fn, repeats: int) -> float:
    from accelerando.eval.efficiency import time_call

    return 1e3 * time_call(fn, repeats, warmup=2)


def quantize_frames(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` [B, C, T] -> int8 codes [B, C, T] and one scale per frame [B, 1, T] (symmetric, 127 levels)."""
    xf = x.float()
    s = xf.abs().amax(1, keepdim=True).clamp(min=1e-8) / 127
    return torch.clamp(torch.round(xf / s), -127, 127).to(torch.int8), s


def tap_gemms(q: torch.Tensor, w_taps: torch.Tensor) -> torch.Tensor:
    """int8 frames [B, C, T] and tap weights [k*O, C] -> int32 [B, k*O, T] (one ``torch._int_mm`` per item)."""
    return torch.stack([torch._int_mm(w_taps, q[b]) for b in range(q.shape[0])])


def shift_epilogue(p, s, w_scale, bias, taps: int, pad: int, out_dtype):
    """int32 [B, k*O, T], frame scales [B, 1, T] -> [B, O, T_out]: scale, shift each tap, sum, weight scale, bias."""
    b, ko, t = p.shape
    o = ko // taps
    y = p.view(b, taps, o, t).float() * s.view(b, 1, 1, t)
    y = F.pad(y, (pad, pad))
    t_out = t + 2 * pad - (taps - 1)
    out = y[:, 0, :, :t_out]
    for j in range(1, taps):
        out = out + y[:, j, :, j : j + t_out]
    return (out * w_scale.view(1, o, 1) + bias.view(1, o, 1)).to(out_dtype)


def tap_conv(x, w_taps, w_scale, bias, taps: int, pad: int, out_dtype=torch.bfloat16):
    """The whole int8 tap-GEMM convolution, eager."""
    q, s = quantize_frames(x)
    return shift_epilogue(tap_gemms(q, w_taps), s, w_scale, bias, taps, pad, out_dtype)


def _time_shape(c: int, o: int, t: int, cq, ce, repeats: int) -> dict:
    """Timings (ms) and the relative error of one ``Conv1d(c, o, 3)`` on ``t`` frames; ``cq``/``ce`` compiled."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, c, t, generator=g).bfloat16()
    w = 0.05 * torch.randn(o, c, TAPS, generator=g)
    bias = torch.randn(o, generator=g)
    w_scale = w.abs().amax((1, 2)) / 127
    wq = torch.round(w / w_scale[:, None, None]).to(torch.int8)
    w_taps = wq.permute(2, 0, 1).reshape(TAPS * o, c).contiguous()  # [k*O, C]
    wb, bb = w.bfloat16(), bias.bfloat16()
    xu = F.pad(x, (1, 1)).unfold(2, TAPS, 1).permute(0, 2, 1, 3).reshape(BATCH, t, -1)  # [B, T, C*k]
    wu = w.reshape(o, -1).bfloat16()
    q, s = cq(x)
    p = tap_gemms(q, w_taps)

    def compiled():
        q, s = cq(x)
        return ce(tap_gemms(q, w_taps), s, w_scale, bias, TAPS, 1, torch.bfloat16)

    ref = F.conv1d(x.float(), w, bias, padding=1)
    r = {
        "shape": {"c_in": c, "c_out": o, "frames": t, "batch": BATCH},
        "bf16_conv_ms": _median_ms(lambda: F.conv1d(x, wb, bb, padding=1), repeats),
        "bf16_unfolded_gemm_ms": _median_ms(lambda: xu @ wu.t(), repeats),
        "taps_eager_ms": _median_ms(lambda: tap_conv(x, w_taps, w_scale, bias, TAPS, 1), repeats),
        "taps_compiled_ms": _median_ms(compiled, repeats),
        "part_quantize_ms": _median_ms(lambda: cq(x), repeats),
        "part_int_mm_ms": _median_ms(lambda: tap_gemms(q, w_taps), repeats),
        "part_epilogue_ms": _median_ms(lambda: ce(p, s, w_scale, bias, TAPS, 1, torch.bfloat16), repeats),
        "rel_error_vs_fp32_conv": float((compiled().float() - ref).norm() / ref.norm()),
    }
    r["taps_compiled_over_bf16"] = r["taps_compiled_ms"] / r["bf16_conv_ms"]
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cq = torch.compile(quantize_frames, dynamic=False)
    ce = torch.compile(shift_epilogue, dynamic=False)
    rows = []
    for c, o, t in SHAPES:
        r = _time_shape(c, o, t, cq, ce, args.repeats)
        rows.append(r)
        print(json.dumps(r))
    report = {"args": vars(args) | {"json": str(args.json)}, "torch": torch.__version__, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
