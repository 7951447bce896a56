"""Sparse, cached edits (edit sessions) against full regeneration with the same seed (SIGE-Audio, issue 6).

    .venv/bin/python benchmarks/sparse_edit.py --model /tmp/generator_v0.safetensors [--seconds 30 60 120]
    .venv/bin/python benchmarks/sparse_edit.py --model unet.safetensors   # a conv U-Net: windowed calls
    .venv/bin/python benchmarks/sparse_edit.py --tiny [--backbone unet|unet-frame]   # smoke run, tiny random model

For each clip length, generates a clip with an edit session (seed 0), then inpaints a centred region covering 1, 5,
10 and 25% of it (seed 1) twice: fully (the pipeline without a session) and sparsely from the session with the
backbone's default cache update (``cache_update="auto"``: for a DiT the edit plus the sparse refresh of its keys and
values, for a U-Net the edit alone, keeping its GroupNorm statistics); MACs are also given for ``"reuse"`` (the edit
alone). Each sparse run starts from a fresh copy of the recorded session. Reports per row:

* MACs (``torch.utils.flop_counter``, FLOPs / 2) of the whole edit call, full and sparse, and their ratio;
* wall time, median of ``--repeats`` runs measured alternately in one process (``--threads``, default 2), and the ratio
  full / sparse; for the sparse edit also the time to audio (before the session update);
* quality of the sparse output against the full regeneration on the edited stretch: LSD and MR-STFT
  (:mod:`accelerando.eval.paired`), next to the same metrics of the full regeneration against the original clip
  (how much the edit changed; the scale the approximation error should be small against);
* seam (:mod:`accelerando.eval.seams`, seam-v2), sparse and full: the largest seam ratio of the two boundaries, and
  the largest excess over the original clip's own flux at the same moments (above 2 is a seam artifact);
* whether every sample outside the region equals the original exactly (sparse output);
* the session's cache size in memory (keys/values or GroupNorm statistics) and the session directory on disk.

Prompts go through the real text encoder (all-MiniLM-L6-v2), as in ``accelerando generate``; before 2026-11-26 this
script used a lookup table of random embeddings, which put trained models off their conditioning and gave larger
edits and seams. Clips longer than the model's ``max_seconds`` run beyond its training length (the limit is
lifted here).
"""

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from accelerando.cache.edit import SparseEditConfig, apply_sparse_edit
from accelerando.eval.paired import lsd, mrstft
from accelerando.eval.seams import seam_scores


def _pipeline(args):
    from accelerando.conditioning.text import LookupTextEncoder
    from accelerando.pipelines.text_to_music import TextToMusicPipeline

    if args.tiny:
        from accelerando.models.codec import CodecConfig, MelCodec
        from accelerando.models.dit import MusicDiTConfig
        from accelerando.models.generator import MusicGenerator
        from accelerando.models.unet import MusicUNetConfig

        torch.manual_seed(0)
        codec = MelCodec(CodecConfig.mel_vocoder(n_mels=16, dec_dim=16, dec_layers=2)).eval()
        tiny = {"dit": MusicDiTConfig.tiny, "unet": MusicUNetConfig.tiny, "unet-frame": MusicUNetConfig.tiny}
        cfg = tiny[args.backbone](latent_dim=16, text_dim=16)
        if args.backbone == "unet-frame":
            cfg.norm = "frame"
        cfg.frame_rate = codec.frame_rate
        model = MusicGenerator(cfg)
        for p in model.parameters():
            p.data.add_(0.05 * torch.randn_like(p))
        return TextToMusicPipeline(model.eval(), codec, LookupTextEncoder(dim=16))
    from accelerando.conditioning.text import TextEncoder
    from accelerando.pretrained import load_codec, load_generator

    return TextToMusicPipeline(load_generator(args.model), load_codec("builtin"), TextEncoder())


def _seams(sparse: torch.Tensor, full: torch.Tensor, orig: torch.Tensor, sr: int, region) -> dict:
    """Seam-v2 of the sparse and full outputs [1, C, S] at the region's boundaries, against the original [C, S]."""
    ref = orig.mean(0).numpy()
    out = {}
    for kind, audio in (("sparse", sparse), ("full", full)):
        s = seam_scores(audio[0].mean(0).numpy(), sr, region, reference=ref)
        out[f"seam_v1_{kind}"], out[f"seam_excess_{kind}"] = s["max_ratio"], s["max_excess"]
        out[f"seam_boundaries_{kind}"] = {"ratios": s["ratios"], "excess": s["excess_ratios"]}
    out["seam_orig"] = s["reference_ratios"]  # per boundary
    return out


def _macs(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops() // 2


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="/tmp/generator_v0.safetensors", help="generator .safetensors")
    ap.add_argument("--tiny", action="store_true", help="tiny random pipeline, short clips (smoke test)")
    ap.add_argument(
        "--backbone", choices=("dit", "unet", "unet-frame"), default="dit", help="with --tiny: the backbone"
    )
    ap.add_argument("--seconds", type=float, nargs="+", default=None, help="clip lengths (30 60 120)")
    ap.add_argument("--shares", type=float, nargs="+", default=[0.01, 0.05, 0.10, 0.25])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--halo", type=float, default=None, help="seconds recomputed on each side (default: backbone's)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    seconds = args.seconds or ([2.0, 4.0] if args.tiny else [30.0, 60.0, 120.0])
    pipe = _pipeline(args)
    pipe.model.config.max_seconds = max(pipe.model.config.max_seconds, max(seconds))
    editor = apply_sparse_edit(pipe, SparseEditConfig(halo_s=args.halo)).sparse_edit
    sr = pipe.codec.sample_rate
    prompt = "a baroque chorale for string quartet"
    rows = []
    date = time.strftime("%Y-%m-%d")
    kind = type(editor.backend).__name__
    print(
        f"steps {args.steps}, halo {editor.halo_s} s, median of {args.repeats}, {args.threads} threads, {date}, "
        f"cache {kind}, update {editor.cache_update}\n"
    )
    print(
        "| clip | edit | units edited / run / clip | MACs full / sparse (default update; edit only) "
        "| wall full / sparse (to audio) "
        "| LSD sparse vs full (full vs orig) | MR-STFT sparse vs full (full vs orig) | seam sparse / full; excess "
        "| cache MB / disk MB | outside identical |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for secs in seconds:
            master = Path(tmp) / f"s{secs:g}"
            editor.config = SparseEditConfig(halo_s=args.halo)
            gen = editor.generate(master, prompt, duration=secs, steps=args.steps, seed=0)
            orig = editor.load(master).audio
            cache_mb, disk_mb = gen.metadata["session"]["cache_mb"], _du(master) / 2**20
            for share in args.shares:
                length = share * secs
                a = round((secs - length) / 2, 3)
                region = [(a, round(a + length, 3))]
                work = Path(tmp) / "work"

                def fresh(work=work, master=master):
                    shutil.rmtree(work, ignore_errors=True)
                    shutil.copytree(master, work)

                def full(region=region, orig=orig):
                    return pipe(
                        prompt,
                        duration=orig.shape[-1] / sr,
                        steps=args.steps,
                        generator=torch.Generator().manual_seed(1),
                        init_audio=orig,
                        init_sample_rate=sr,
                        regions=region,
                    )

                def sparse(region=region, work=work):
                    return editor.edit(work, regions=region, seed=1)

                macs_full = _macs(full)
                fresh()
                macs_sparse = macs_edit = _macs(sparse)
                if editor.cache_update != "reuse":  # the edit alone, without the default update's refresh
                    editor.config = SparseEditConfig(halo_s=args.halo, cache_update="reuse")
                    fresh()
                    macs_edit = _macs(sparse)
                    editor.config = SparseEditConfig(halo_s=args.halo)
                t_full, t_sparse, t_audio = [], [], []
                for _ in range(args.repeats):
                    s = time.perf_counter()
                    ref = full()
                    t_full.append(time.perf_counter() - s)
                    fresh()
                    s = time.perf_counter()
                    out = sparse()
                    t_sparse.append(time.perf_counter() - s)
                    t_audio.append(out.metadata["sparse_edit"]["edit_s"])
                st = out.metadata["sparse_edit"]
                lo, hi = int(region[0][0] * sr), int(region[0][1] * sr)
                pad = int(0.25 * sr)
                lo, hi = max(0, lo - pad), min(orig.shape[-1], hi + pad)
                p, r, o = out.audio[0, :, lo:hi], ref.audio[0, :, lo:hi], orig[:, lo:hi]
                row = {
                    "seconds": secs,
                    "share": share,
                    "tokens_run": st["tokens_recomputed"],
                    "units_computed": st["units_computed"],
                    "tokens": st["tokens"],
                    "macs_full": macs_full,
                    "macs_sparse_refresh": macs_sparse,
                    "macs_sparse_edit_only": macs_edit,
                    "wall_full_s": statistics.median(t_full),
                    "wall_sparse_s": statistics.median(t_sparse),
                    "wall_sparse_to_audio_s": statistics.median(t_audio),
                    "lsd_sparse_vs_full": lsd(p, r),
                    "lsd_full_vs_orig": lsd(r, o),
                    "mrstft_sparse_vs_full": mrstft(p, r),
                    "mrstft_full_vs_orig": mrstft(r, o),
                    **_seams(out.audio, ref.audio, orig, sr, region[0]),
                    "outside_identical": bool(
                        torch.equal(out.audio[0, :, : int(region[0][0] * sr)], orig[:, : int(region[0][0] * sr)])
                        and torch.equal(out.audio[0, :, int(region[0][1] * sr) :], orig[:, int(region[0][1] * sr) :])
                    ),
                    "cache_mb": cache_mb,
                    "disk_mb": disk_mb,
                }
                rows.append(row)
                print(
                    f"| {secs:g} s | {share:.0%} | {row['tokens_run']} / {row['units_computed']} / {row['tokens']} "
                    f"| {macs_full / 1e9:.1f} G / {macs_sparse / 1e9:.1f} G ({macs_full / macs_sparse:.1f}x); "
                    f"{macs_edit / 1e9:.1f} G ({macs_full / macs_edit:.1f}x) "
                    f"| {row['wall_full_s']:.2f} s / {row['wall_sparse_s']:.2f} s "
                    f"({row['wall_full_s'] / row['wall_sparse_s']:.1f}x; to audio "
                    f"{row['wall_full_s'] / row['wall_sparse_to_audio_s']:.1f}x) "
                    f"| {row['lsd_sparse_vs_full']:.2f} ({row['lsd_full_vs_orig']:.2f}) "
                    f"| {row['mrstft_sparse_vs_full']:.3f} ({row['mrstft_full_vs_orig']:.3f}) "
                    f"| {row['seam_v1_sparse']:.2f} / {row['seam_v1_full']:.2f}; "
                    f"{row['seam_excess_sparse']:.2f} / {row['seam_excess_full']:.2f} | {cache_mb:.3g} / {disk_mb:.3g} "
                    f"| {'yes' if row['outside_identical'] else 'NO'} |",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
