"""Quantize the shipped codec's decoder (RTN / int8-dynamic / SmoothQuant / SVDQuant) and measure quality, weight
bytes and CPU decode speed.

    .venv/bin/python benchmarks/quant_codec.py [--codec builtin] [--corpus DIR] [--n 8] [--seconds 10]
        [--n-calib 4] [--json OUT]

Calibrated variants (SmoothQuant, SVDQuant): ``--n-calib`` TRAIN-split clips (seeded, one ``--seconds`` excerpt each,
5 s in) are encoded with the float32 codec and their latents decoded by the float model under ``calibrate_``; the
activations recorded are the decoder's Linear inputs. The test split is never used for calibration.

Quality: ``--n`` test-split clips (seeded choice, one ``--seconds`` excerpt each, starting 5 s in) are encoded once
with the float32 codec; the latents are decoded by float32 and by each variant. Reported per variant, averaged over
the clips: MR-STFT against the fp32 decode and against the original audio (``accelerando.eval.paired.mrstft``) and the
waveform SQNR against the fp32 decode. Bytes: storage of the Linear layers ``quantize_`` replaces (weights, scales,
bias) and of the whole model. Speed: decode of 30 s of latents, ``torch.set_num_threads(2)``, all variants in this
process, round-robin over 5 repeats after a warm-up, median; ``x fp32`` is variant time / fp32 time. A second table
times the decoder's Linear shapes alone (fp32, bf16, ``torch._int_mm``) on the same 30 s of frames.
"""

import argparse
import copy
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from accelerando.data.build import default_corpus_dir, read_manifest
from accelerando.eval.paired import mrstft
from accelerando.pretrained import load_codec
from accelerando.quant import (
    Int8DynamicConfig,
    RTNConfig,
    SmoothQuantConfig,
    SVDQuantConfig,
    calibrate_,
    quantize_,
    quantized_layers,
)
from accelerando.quant.primitives import quantize_per_token, quantize_weight
from accelerando.testing.sqnr import sqnr

VARIANTS: dict[str, object] = {
    "w8a8-rtn": RTNConfig(w_bits=8, a_bits=8),
    "w4a8-rtn-g32": RTNConfig(w_bits=4, a_bits=8, group_size=32),
    "w4a8-rtn": RTNConfig(w_bits=4, a_bits=8),  # per-channel: one GEMM, for comparison with g32
    "w8a16-rtn": RTNConfig(w_bits=8, a_bits=16),
    "int8-dynamic": Int8DynamicConfig(),
}
CALIBRATED: dict[str, object] = {
    "w4a8-smooth": SmoothQuantConfig(w_bits=4, a_bits=8, alpha=0.5),
    "w4a8-svd": SVDQuantConfig(w_bits=4, a_bits=8, rank=32, calibration="mse"),  # per-channel residual
    "w4a8-svd-g32": SVDQuantConfig(w_bits=4, a_bits=8, rank=32, group_size=32, calibration="mse"),
}


def _excerpts(corpus: Path, rows: list[dict], sr: int, seconds: float) -> torch.Tensor:
    import soundfile as sf

    clips = []
    for r in rows:
        y, file_sr = sf.read(corpus / r["path"] / "mix.flac", dtype="float32", always_2d=True)
        assert file_sr == sr, (file_sr, sr)
        clips.append(torch.from_numpy(np.ascontiguousarray(y[5 * sr : 5 * sr + int(seconds * sr), 0])))
    return torch.stack(clips)[:, None]  # [B, 1, S]


def _bytes(modules) -> int:
    return sum(t.numel() * t.element_size() for m in modules for t in [*m.parameters(), *m.buffers()])


def _linear_bytes(model: nn.Module, names: list[str]) -> int:
    mods = dict(model.named_modules())
    return _bytes(mods[n] for n in names)


def _median_round_robin(fns: dict, repeats: int = 5) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def _linear_micro(frames: int, shapes: list[tuple[int, int]]) -> list[tuple[str, float, float, float, float]]:
    """Time one Linear per (K, N) at M=frames (ms): fp32, bf16, int8 (quantize + _int_mm + rescale), _int_mm alone."""
    rows = []
    g = torch.Generator().manual_seed(0)
    for k, n in shapes:
        x, w = torch.randn(frames, k, generator=g), torch.randn(n, k, generator=g) / k**0.5
        xb, wb = x.bfloat16(), w.bfloat16()
        qw, sw = quantize_weight(w, 8)
        qwt, swt = qw.t(), sw.t()
        qx, _ = quantize_per_token(x)

        def int8(x=x, qwt=qwt, swt=swt):
            qa, sa = quantize_per_token(x)
            return torch._int_mm(qa, qwt).float().mul_(swt).mul_(sa)

        t = _median_round_robin(
            {
                "fp32": lambda x=x, w=w: nn.functional.linear(x, w),
                "bf16": lambda xb=xb, wb=wb: nn.functional.linear(xb, wb),
                "int8": int8,
                "int_mm": lambda qx=qx, qwt=qwt: torch._int_mm(qx, qwt),
            },
            repeats=7,
        )
        rows.append((f"{k}->{n}", t["fp32"] * 1e3, t["bf16"] * 1e3, t["int8"] * 1e3, t["int_mm"] * 1e3))
    return rows


def main(argv: list[str] | None = None) -> int:
    import soundfile as sf

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codec", default="builtin")
    ap.add_argument("--corpus", type=Path, default=default_corpus_dir())
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-calib", type=int, default=4, help="train-split excerpts for SmoothQuant / SVDQuant")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)

    fp32 = load_codec(args.codec)
    models: dict[str, nn.Module] = {"fp32": fp32}
    for name, cfg in VARIANTS.items():
        models[name] = quantize_(copy.deepcopy(fp32), cfg)
    qnames = list(quantized_layers(models["w8a8-rtn"]))
    sr = fp32.sample_rate

    rows = [r for r in read_manifest(args.corpus, "test") if r["duration"] >= args.seconds + 6]
    picked = random.Random(args.seed).sample(rows, min(args.n, len(rows)))
    audio = _excerpts(args.corpus, picked, sr, args.seconds)  # [B, 1, S]

    train = [r for r in read_manifest(args.corpus, "train") if r["duration"] >= args.seconds + 6]
    calib_rows = random.Random(args.seed).sample(train, min(args.n_calib, len(train)))
    assert not {r["clip_id"] for r in calib_rows} & {r["clip_id"] for r in picked}
    calib_seconds = {}
    with torch.no_grad():
        z_train = [fp32.encode(a[None]) for a in _excerpts(args.corpus, calib_rows, sr, args.seconds)]
    for name, cfg in CALIBRATED.items():
        t = time.perf_counter()
        models[name] = calibrate_(copy.deepcopy(fp32), cfg, [(lambda m, z=z: m.decode(z)) for z in z_train])
        calib_seconds[name] = time.perf_counter() - t
    bf16_name = "fp32 + bf16 autocast"
    with torch.no_grad():
        z = fp32.encode(audio)  # [B, D, T]
        decodes = {name: m.decode(z)[..., : audio.shape[-1]] for name, m in models.items()}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            decodes[bf16_name] = fp32.decode(z)[..., : audio.shape[-1]].float()
    ref = decodes["fp32"]
    quality = {}
    for name, wav in decodes.items():
        quality[name] = {
            "mrstft_vs_fp32": float(np.mean(mrstft(wav, ref))) if name != "fp32" else 0.0,
            "mrstft_vs_audio": float(np.mean(mrstft(wav, audio))),
            "sqnr_db": float(np.mean([sqnr(ref[i], wav[i]) for i in range(len(wav))])) if name != "fp32" else None,
        }

    # speed: 30 s of latents from the first picked clip (zero-padded when shorter)
    y30, _ = sf.read(args.corpus / picked[0]["path"] / "mix.flac", dtype="float32", always_2d=True)
    x30 = torch.from_numpy(np.ascontiguousarray(y30[: 30 * sr, 0]))
    x30 = torch.nn.functional.pad(x30, (0, 30 * sr - len(x30)))
    with torch.no_grad():
        z30 = fp32.encode(x30[None, None])

        def bf16_decode():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                fp32.decode(z30)

        fns = {name: (lambda m=m: m.decode(z30)) for name, m in models.items()}
        fns[bf16_name] = bf16_decode
        times = _median_round_robin(fns)
        frames = z30.shape[-1]
        shapes = sorted({(m.in_features, m.out_features) for n, m in fp32.named_modules() if n in qnames})
        micro = _linear_micro(frames, shapes)

    fp_lin, fp_all = _linear_bytes(fp32, qnames), _bytes([fp32])
    print(
        f"codec {args.codec!r}: {len(qnames)} Linear layers quantized ({fp_lin / 1e6:.2f} MB of {fp_all / 1e6:.2f} MB)"
    )
    print(
        f"quality: {len(picked)} test-split excerpts of {args.seconds:.0f} s (seed {args.seed}); speed: 30 s of "
        f"latents ({frames} frames), torch {torch.__version__}, {torch.get_num_threads()} threads\n"
    )
    print(
        "| variant | MR-STFT vs fp32 | MR-STFT vs audio | SQNR vs fp32 (dB) | Linear bytes | model bytes "
        "| decode 30 s (s) | x fp32 time |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    report = {}
    for name in [*models, bf16_name]:
        q = quality[name]
        m = models.get(name, fp32)
        lin_b = _linear_bytes(m, qnames) if name in models else fp_lin  # autocast keeps fp32 storage
        all_b = _bytes([m])
        s = "-" if q["sqnr_db"] is None else f"{q['sqnr_db']:.1f}"
        print(
            f"| {name} | {q['mrstft_vs_fp32']:.4f} | {q['mrstft_vs_audio']:.4f} | {s} | {lin_b / 1e6:.2f} MB "
            f"| {all_b / 1e6:.2f} MB | {times[name]:.3f} | {times[name] / times['fp32']:.2f} |"
        )
        report[name] = {**q, "linear_bytes": lin_b, "model_bytes": all_b, "decode_30s_s": times[name]}
    print(
        f"\ncalibration: {len(calib_rows)} train-split excerpts ({', '.join(r['clip_id'] for r in calib_rows)}); "
        + ", ".join(f"{k} {v:.1f} s" for k, v in calib_seconds.items())
    )
    for name in CALIBRATED:
        alphas = [float(m.alpha) for m in models[name].modules() if hasattr(m, "alpha") and torch.is_tensor(m.alpha)]
        print(f"{name} smoothing alphas per layer: {[round(a, 1) for a in alphas]}")
    print(f"\nLinear alone, M={frames} tokens (median of 7, ms): int8 = per-token quantize + _int_mm + fp32 rescale")
    print("| K->N | fp32 | bf16 | int8 | _int_mm only |\n| --- | --- | --- | --- | --- |")
    for shape, a, b, c, d in micro:
        print(f"| {shape} | {a:.2f} | {b:.2f} | {c:.2f} | {d:.2f} |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "variants": report,
                    "clips": [r["clip_id"] for r in picked],
                    "calib_clips": [r["clip_id"] for r in calib_rows],
                    "calib_seconds": calib_seconds,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
