"""Tempo and key adherence, and CPU speed, of a generator on prompts built from test-split metadata.

    .venv/bin/python benchmarks/generator_adherence.py --model PATH [--n 32] [--seconds 10] [--steps 8] [--cfg 3]
        [--split test|valid] [--no-timing] [--grid-guidance X|off]

For ``--n`` test-split clips (seeded choice) the clip's caption, bpm, key, meter and instrumentation become the
request; one clip is generated per request (seed = its index). The audio is analysed independently of the model:
librosa's beat tracker for tempo (prior centred at 80 bpm, eval.tempo v2; acc1: within 4%; acc2: also at 2x, 3x,
1/2, 1/3), key-profile matching on chroma for key (Albrecht-Shanahan profiles, eval.key; MIREX weighted score
against the requested key, church modes mapped to major/minor). ``benchmarks/analyzer_ceiling.py`` gives the same
analyzers' scores on the real clips (the ceiling). Pulse locking (:mod:`accelerando.eval.pulse`, no tracker): the
onsets' vector strength at the requested bpm, its part on the requested grid (``pulse_on_grid``), the same at a
wrong tempo (1.13x, chance) and for the real prompt clip at its labelled bpm; ``mean_acc1_real`` is the tracker's
acc1 on those real clips (the ceiling on the same requests). Then 30 s is
generated with the default settings to time it (median of 3) and the peak RSS is read.

FAD (default embedder, melstats): the generated set against ``--n-ref`` other test-split clips (their first
``--seconds``), next to the FAD of the prompt clips themselves (real audio, the floor) and of their codec
reconstructions against the same reference set.
"""

import argparse
import json
import os
import random
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from accelerando.audio import load
from accelerando.data.build import default_corpus_dir, read_manifest
from accelerando.eval.beats import track_beats
from accelerando.eval.embeddings import get_embedder
from accelerando.eval.fad import fad
from accelerando.eval.key import estimate_key, key_score
from accelerando.eval.pulse import pulse_strength
from accelerando.eval.tempo import tempo_adherence
from accelerando.pipelines.text_to_music import TextToMusicPipeline


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--corpus", type=Path, default=default_corpus_dir())
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--cfg", type=float, default=None, help="guidance scale (default: the model's default_cfg)")
    ap.add_argument("--rhythm-cfg", type=float, default=None, help="separate guidance for bpm, key, meter and grid")
    ap.add_argument(
        "--guidance-interval",
        type=float,
        nargs=2,
        default=None,
        metavar=("T_LO", "T_HI"),
        help="guide only at flow times in [T_LO, T_HI] (1 = noise); other steps run the conditional branch alone",
    )
    ap.add_argument(
        "--grid-guidance",
        type=_grid,
        default=None,
        help="beat-grid guidance strength (0-4) or off (default: the model's own; pipelines/grid_guidance.py)",
    )
    ap.add_argument(
        "--key-guidance",
        type=_grid,
        default=None,
        help="key guidance strength (0-4) or off (default: the model's own; pipelines/key_guidance.py)",
    )
    ap.add_argument(
        "--grid-kappa",
        type=float,
        default=None,
        help="sweep knob: override grid_guidance.GRID_KAPPA (the sharpness of each beat's bump) for this run",
    )
    ap.add_argument(
        "--grid-interval",
        type=float,
        nargs=2,
        default=None,
        metavar=("T_LO", "T_HI"),
        help="sweep knob: override grid_guidance.GRID_INTERVAL (the flow times grid and key guidance act at) for "
        "this run",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="test", choices=("test", "valid"), help="valid: for choosing settings")
    ap.add_argument("--no-timing", action="store_true", help="skip the 30 s speed measurement")
    ap.add_argument("--n-ref", type=int, default=64, help="held-out clips in the FAD reference set (0: no FAD)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    _override_grid_constants(args.grid_kappa, args.grid_interval)
    pipe = TextToMusicPipeline.from_pretrained(args.model)
    rows = [r for r in read_manifest(args.corpus, args.split) if 40 <= r["bpm"] <= 200]
    picked = random.Random(args.seed).sample(rows, min(args.n, len(rows)))
    if args.n_ref and not any(r["duration"] >= args.seconds for r in rows if r not in picked):
        sys.exit(f"--n {args.n} takes every clip of the {args.split} split, none is left for FAD; add --n-ref 0")
    results, generated = [], []
    for i, r in enumerate(picked):
        out = pipe(
            r["caption"],
            bpm=r["bpm"],
            key=r["key"],
            meter=r["meter"],
            instruments=r["instrumentation"],
            duration=args.seconds,
            steps=args.steps,
            cfg=args.cfg,
            rhythm_cfg=args.rhythm_cfg,
            guidance_interval=args.guidance_interval,
            grid_guidance=args.grid_guidance,
            key_guidance=args.key_guidance,
            generator=torch.Generator().manual_seed(i),
        )
        y = out.audio[0, 0].numpy()
        generated.append(y)
        tempo, _ = track_beats(y, out.sample_rate)
        adh = tempo_adherence(tempo, r["bpm"])
        tonic, mode = r["key"].split(" ", 1)
        pulse = pulse_strength(y, out.sample_rate, r["bpm"])
        real, _ = load(args.corpus / r["path"] / "mix.flac", sample_rate=out.sample_rate, mono=True)
        real = real[0, : len(y)].numpy()
        real_tempo, _ = track_beats(real, out.sample_rate)
        results.append(
            {
                "clip": r["clip_id"],
                "bpm": r["bpm"],
                "tracked_bpm": tempo,
                "acc1": adh["acc1"],
                "acc2": adh["acc2"],
                "rel_error": abs(tempo - r["bpm"]) / r["bpm"],
                "key": r["key"],
                "key_score": key_score((tonic, mode), estimate_key(y, out.sample_rate)),
                "pulse": pulse["strength"],
                "pulse_on_grid": pulse["on_grid"],
                "pulse_chance": pulse_strength(y, out.sample_rate, r["bpm"] * _OFF_TEMPO)["strength"],
                "pulse_real": pulse_strength(real, out.sample_rate, r["bpm"])["strength"],
                "acc1_real": tempo_adherence(real_tempo, r["bpm"])["acc1"],
            }
        )
    summary = {
        "n": len(results),
        "grid_guidance": pipe.resolve_grid_guidance(args.grid_guidance),
        "key_guidance": pipe.resolve_key_guidance(args.key_guidance),
        "grid_kappa": _grid_constants()[0],
        "grid_interval": list(_grid_constants()[1]),
        "acc1": statistics.fmean(x["acc1"] for x in results),
        "acc2": statistics.fmean(x["acc2"] for x in results),
        "median_rel_tempo_error": statistics.median(x["rel_error"] for x in results),
        "mean_key_score": statistics.fmean(x["key_score"] for x in results),
        **{f"mean_{k}": statistics.fmean(x[k] for x in results) for k in _PULSE_KEYS},
    }
    if args.n_ref:
        summary.update(_fad_figures(pipe, args, rows, picked, generated))
    if not args.no_timing:
        times = []
        for k in range(3):
            t = time.perf_counter()
            pipe("a chorale", bpm=100, key="G major", duration=30.0, generator=torch.Generator().manual_seed(k))
            times.append(time.perf_counter() - t)
        summary["rtf_30s_default"] = 30.0 / statistics.median(times)
        summary["wall_30s_default_s"] = statistics.median(times)
    summary["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "clips": results}, indent=1))
    return 0


def _override_grid_constants(kappa: float | None, interval: list[float] | None) -> None:
    """Set the grid-guidance module constants for a sweep (the pipeline reads them at every call)."""
    from accelerando.pipelines import grid_guidance

    if kappa is not None:
        grid_guidance.GRID_KAPPA = kappa
    if interval is not None:
        grid_guidance.GRID_INTERVAL = tuple(interval)


def _grid_constants() -> tuple[float, tuple[float, float]]:
    from accelerando.pipelines import grid_guidance

    return grid_guidance.GRID_KAPPA, grid_guidance.GRID_INTERVAL


def _grid(text: str) -> float | str:
    """``--grid-guidance`` as the pipeline takes it: ``"off"`` or a number (argparse reports anything else)."""
    if text == "off":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a strength (e.g. 1) or off") from None


_OFF_TEMPO = 1.13  # a wrong tempo with no small-integer ratio to the requested one: the chance level
_PULSE_KEYS = ("pulse", "pulse_on_grid", "pulse_chance", "pulse_real", "acc1_real")


def _fad_figures(pipe, args, rows, picked, generated) -> dict:
    """FAD of generated audio, of the real prompt clips and of their codec reconstructions, against held-out clips."""
    sr, n = pipe.codec.sample_rate, int(args.seconds * pipe.codec.sample_rate)
    emb = get_embedder()
    ids = {r["clip_id"] for r in picked}
    others = [r for r in rows if r["clip_id"] not in ids and r["duration"] >= args.seconds]
    ref_rows = random.Random(args.seed + 1).sample(others, min(args.n_ref, len(others)))

    def first(r):
        wav, _ = load(args.corpus / r["path"] / "mix.flac", sample_rate=sr, mono=True)
        return wav.reshape(-1)[:n]

    def embed_all(ys):
        return np.concatenate([emb.embed(np.asarray(y, dtype=np.float64)) for y in ys])

    ref = embed_all(first(r).numpy() for r in ref_rows)
    real = [first(r) for r in picked]
    with torch.inference_mode():
        recon = [pipe.codec.decode(pipe.codec.encode(w[None, None]))[0, 0, : w.numel()].numpy() for w in real]
    return {
        "fad_embedder": emb.version,
        "fad_n_ref": len(ref_rows),
        "fad_generated": fad(embed_all(generated), ref),
        "fad_codec_reconstruction": fad(embed_all(recon), ref),
        "fad_real_prompt_clips": fad(embed_all(w.numpy() for w in real), ref),
    }


if __name__ == "__main__":
    sys.exit(main())
