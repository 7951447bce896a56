"""The passes of the norm-codes kernel library (accelerando.quant.norm_codes) at the built-in U-Net's shapes.

    OMP_NUM_THREADS=T .venv/bin/python benchmarks/norm_codes_parts.py [--threads T] [--repeats 21]
        [--source OTHER.cpp] [--json OUT]

For each block shape ``[B=2, C, T]`` of a 30 s clip (float32, per-frame GroupNorm of 32 groups, with the
modulation ``conv2`` applies), the median milliseconds of pass 1 (statistics, normalised, modulated and SiLU-ed
values and their min/max) and pass 2 (the uint8 codes, written channels-last), each called straight through
ctypes; and (kernels of ABI 3 and later) the output pass around each oneDNN int8 convolution: its channels-last
float32 output back to channels-first with a block's skip connection added.

``--source`` builds another version of ``quant/csrc/norm_codes.cpp`` with the same flags into a temporary directory
and times it side by side with the package's (round-robin, one call of each per round, so that machine noise hits
both alike), reporting each median and the ratio package / other. E.g. the kernel before its ``exp`` used fused
multiply-adds, or before the output and codes passes transposed in registers::

    git show 14ee694:src/accelerando/quant/csrc/norm_codes.cpp > /tmp/old.cpp
    git show c63674c:src/accelerando/quant/csrc/norm_codes.cpp > /tmp/old.cpp
"""

import argparse
import ctypes
import json
import statistics
from pathlib import Path

import torch

SHAPES = ((192, 2812), (256, 1406), (384, 703))


def _library(source: str | None):
    from accelerando.quant import norm_codes

    if source is None:
        lib = norm_codes._library()
        if lib is None:
            raise SystemExit(f"the fused norm kernel does not build here: {norm_codes.status()['broken']}")
        return lib
    if not Path(source).is_file():
        raise SystemExit(f"--source {source!r}: no such file")
    try:
        return norm_codes.build_source(Path(source))
    except RuntimeError as err:
        raise SystemExit(f"--source {source!r} does not build: {err}") from None


def _passes(lib, c: int, t: int, threads: int, g: torch.Generator) -> dict:
    """The timed calls of one library at one shape: name -> zero-argument callable."""
    p, i64, f32, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
    abi = lib.accel_norm_codes_abi()  # 3 gave the codes pass an (optional) smoothing argument
    lib.accel_norm_silu_f32.argtypes = [p, p, i64, i64, i64, i64, f32, p, p, p, p, p, p, i32]
    lib.accel_codes_f32.argtypes = [p, *([p] if abi >= 3 else []), p, i64, i64, i64, f32, f32, i32]
    smooth = [None] if abi >= 3 else []
    x = torch.randn(2, c, t, generator=g) * 2
    y, q, lo_hi = torch.empty_like(x), torch.empty(2, t, c, dtype=torch.uint8), torch.zeros(2)
    w, b = 1 + 0.1 * torch.randn(c, generator=g), 0.1 * torch.randn(c, generator=g)
    mul, add = 1 + 0.2 * torch.randn(2, c, generator=g), 0.3 * torch.randn(2, c, generator=g)
    ptrs = [v.data_ptr() for v in (w, b, mul, add)]

    def pass1():
        lib.accel_norm_silu_f32(x.data_ptr(), y.data_ptr(), 2, c, t, 32, 1e-5, *ptrs, None, lo_hi.data_ptr(), threads)

    pass1()
    scale = float(lo_hi[1] - lo_hi[0]) / 255

    def pass2():
        lib.accel_codes_f32(y.data_ptr(), *smooth, q.data_ptr(), 2, c, t, scale, 64.0, threads)

    calls = {"pass1": pass1, "pass2": pass2}
    if abi >= 3:
        lib.accel_finish_f32.argtypes = [p, p, p, p, i64, i64, i64, i32]
        out = x.transpose(1, 2).contiguous().transpose(1, 2)  # as oneDNN's output: [B, C, T] channels-last
        res, dst = torch.randn(2, c, t, generator=g), torch.empty(2, c, t)

        def output_pass():
            lib.accel_finish_f32(out.data_ptr(), None, res.data_ptr(), dst.data_ptr(), 2, c, t, threads)

        calls["output_pass"] = output_pass
    return calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--source", default=None, help="time this kernel source side by side with the package's")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from accelerando.eval.efficiency import time_interleaved

    libs = {"package": _library(None)}
    if args.source is not None:
        libs["other"] = _library(args.source)
    rows = []
    for c, t in SHAPES:
        calls = {}
        for name, lib in libs.items():
            for part, fn in _passes(lib, c, t, args.threads, torch.Generator().manual_seed(c)).items():
                calls[f"{part}_{name}"] = fn
        for fn in calls.values():  # warm-up
            fn(), fn(), fn()
        times = time_interleaved(calls, args.repeats)
        row = {"channels": c, "frames": t}
        for key, v in times.items():
            row[f"{key}_ms"] = 1e3 * statistics.median(v)
        if "other" in libs:
            for part in ("pass1", "pass2", "output_pass"):
                if f"{part}_other" in times and f"{part}_package" in times:
                    row[f"{part}_package_over_other"] = row[f"{part}_package_ms"] / row[f"{part}_other_ms"]
        rows.append(row)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    report = {"args": vars(args), "torch": torch.__version__, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
