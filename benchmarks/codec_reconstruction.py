"""Codec reconstruction against a Griffin-Lim baseline, on held-out test-split audio, plus CPU decode speed.

    .venv/bin/python benchmarks/codec_reconstruction.py --codec PATH [--corpus DIR] [--n 24] [--seconds 10]

For ``--n`` test-split clips (seeded choice, one ``--seconds`` excerpt each, starting 5 s in) it reconstructs the
audio with the codec (encode -> decode) and with Griffin-Lim (32 iterations, librosa) from the 100-band magnitude mel
spectrogram the codec analyses, and scores both against the original with the paired metrics of
:mod:`accelerando.eval.paired`. Then it times decoding 30 s of latents (median of 5 runs, float32 and bf16 autocast)
and Griffin-Lim on the same 30 s, side by side in one process.
"""

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from accelerando.data.build import default_corpus_dir, read_manifest
from accelerando.eval.paired import lsd, mel_distance, mrstft, si_sdr
from accelerando.models.codec import CodecConfig, MelCodec
from accelerando.models.io import load_state


def _griffin_lim(y: np.ndarray, codec: MelCodec) -> np.ndarray:
    import librosa

    cfg = codec.config
    with torch.no_grad():
        mel = codec.mel(torch.from_numpy(y)[None]).exp()[0].numpy()  # magnitude mel [n_mels, T]
    out = librosa.feature.inverse.mel_to_audio(
        mel, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, power=1.0, n_iter=32
    )
    return np.pad(out, (0, max(0, len(y) - len(out))))[: len(y)]


def _timed(fn, repeats: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    import soundfile as sf

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codec", type=Path, required=True)
    ap.add_argument("--corpus", type=Path, default=default_corpus_dir())
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    state, cfg = load_state(args.codec, "codec")
    codec = MelCodec(CodecConfig(**cfg)).eval()
    codec.load_state_dict(state)
    rows = [r for r in read_manifest(args.corpus, "test") if r["duration"] >= args.seconds + 6]
    picked = random.Random(args.seed).sample(rows, min(args.n, len(rows)))
    sr = codec.sample_rate
    scores: dict[str, dict[str, list[float]]] = {"codec": {}, "griffin_lim": {}}
    for r in picked:
        y, file_sr = sf.read(args.corpus / r["path"] / "mix.flac", dtype="float32", always_2d=True)
        assert file_sr == sr, (file_sr, sr)
        y = y[5 * sr : 5 * sr + int(args.seconds * sr), 0]
        with torch.no_grad():
            rec = codec(torch.from_numpy(y)[None, None])[0, 0].numpy()
        for name, pred in (("codec", rec), ("griffin_lim", _griffin_lim(y, codec))):
            for metric, fn in (("mrstft", mrstft), ("lsd", lsd), ("si_sdr", si_sdr)):
                scores[name].setdefault(metric, []).append(fn(pred, y))
            scores[name].setdefault("mel_distance", []).append(mel_distance(pred, y, sr))
    means = {k: {m: float(np.mean(v)) for m, v in d.items()} for k, d in scores.items()}
    by_instr: dict[str, list[tuple[float, float]]] = {}
    for i, r in enumerate(picked):
        by_instr.setdefault(r["instrumentation"], []).append(
            (scores["codec"]["mrstft"][i], scores["griffin_lim"]["mrstft"][i])
        )

    x30 = torch.from_numpy(sf.read(args.corpus / picked[0]["path"] / "mix.flac", dtype="float32")[0][: 30 * sr])
    x30 = torch.nn.functional.pad(x30, (0, 30 * sr - len(x30)))
    with torch.no_grad():
        z = codec.encode(x30[None, None])

        def dec_fp32():
            codec.decode(z)

        def dec_bf16():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                codec.decode(z)

        t_fp32, t_bf16 = _timed(dec_fp32), _timed(dec_bf16)
        t_enc = _timed(lambda: codec.encode(x30[None, None]))
    t_gl = _timed(lambda: _griffin_lim(x30.numpy(), codec), repeats=1)
    speed = {
        "decode_fp32_x_realtime": 30 / t_fp32,
        "decode_bf16_x_realtime": 30 / t_bf16,
        "encode_fp32_x_realtime": 30 / t_enc,
        "griffin_lim_x_realtime": 30 / t_gl,
        "griffin_lim_time_over_decode_bf16_time": t_gl / t_bf16,
    }
    print(f"clips: {len(picked)} test-split excerpts of {args.seconds:.0f} s (seed {args.seed})\n")
    print("| method | MR-STFT | mel L1 | LSD (dB) | SI-SDR (dB) |")
    print("| --- | --- | --- | --- | --- |")
    for name, m in means.items():
        print(f"| {name} | {m['mrstft']:.3f} | {m['mel_distance']:.3f} | {m['lsd']:.2f} | {m['si_sdr']:.1f} |")
    print("\n| instrumentation | clips | codec MR-STFT | Griffin-Lim MR-STFT |\n| --- | --- | --- | --- |")
    for name, pairs in sorted(by_instr.items()):
        c, g = np.mean(pairs, axis=0)
        print(f"| {name} | {len(pairs)} | {c:.3f} | {g:.3f} |")
    print("\n" + "\n".join(f"{k}: {v:.1f}" for k, v in speed.items()))
    params = sum(p.numel() for p in codec.parameters())
    print(f"codec parameters: {params / 1e6:.2f} M; latent {codec.latent_dim} x {codec.frame_rate:.2f} Hz")
    if args.json:
        args.json.write_text(json.dumps({"means": means, "speed": speed, "clips": [r["clip_id"] for r in picked]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
