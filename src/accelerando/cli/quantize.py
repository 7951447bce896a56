"""`accelerando quantize`: post-training quantization of the generator backbone with a named preset.

    accelerando quantize --model builtin|PATH --config PRESET [--calib-prompts N] [--rank R] [--recover-steps N]
        [--other-linears float|w8a16] [--act-scale token|tensor] [--reduce-range] [--no-clip-search]
        -o OUT.safetensors [--json]

The output is a safetensors file (written next to its final name, then renamed) that ``accelerando generate
--model OUT.safetensors`` loads. Presets, calibration and the report are described in ``docs/quantization.md``.
"""

import argparse
import json
import sys
from pathlib import Path

from accelerando.errors import UserError

__all__ = ["register", "load_pipeline"]


def load_pipeline(model: str = "builtin"):
    """The float pipeline for ``--model`` (tests replace this function with a tiny pipeline)."""
    from accelerando.pipelines.text_to_music import TextToMusicPipeline

    return TextToMusicPipeline.from_pretrained(model)


def register(sub: argparse._SubParsersAction) -> None:
    from accelerando.quant.presets import PRESETS

    q = sub.add_parser("quantize", help="quantize the generator backbone (W8A8, W4A8, SVDQuant-Audio, ...)")
    q.add_argument("--model", default="builtin", help="'builtin' or a float generator .safetensors file")
    q.add_argument("--config", required=True, metavar="PRESET", help=f"one of: {', '.join(PRESETS)}")
    q.add_argument("--calib-prompts", type=int, default=8, help="train-split calibration prompts to generate")
    q.add_argument("--rank", type=int, default=None, help="low-rank branch rank of the SVD presets (default 32)")
    q.add_argument(
        "--group-size",
        type=int,
        default=None,
        help="input features per weight scale of the 4-bit presets (default 64, which keeps the built-in U-Net's "
        "key adherence within 10%%; 0: one scale per output channel)",
    )
    q.add_argument(
        "--recover-steps",
        type=int,
        default=None,
        metavar="N",
        help="low-rank recovery steps after calibration (SVD / SmoothQuant presets; default 60 for "
        "w4a8-svd-stft-rec, else 0 = off)",
    )
    q.add_argument(
        "--other-linears",
        choices=("float", "w8a16"),
        default="float",
        help="the backbone's Linears outside the DiT blocks: keep float32 (default) or weight-only int8",
    )
    q.add_argument(
        "--act-scale",
        choices=("token", "tensor"),
        default="token",
        help="activation scales of the A8 presets: one per token (default) or one per call, which runs a U-Net's "
        "quantized convolutions as oneDNN int8 convolutions on the CPU",
    )
    q.add_argument(
        "--reduce-range",
        action="store_true",
        help="weight codes within [-64, 64] (8-bit weights rounded to 7 bits), so that a CPU without VNNI (AVX2) "
        "runs --act-scale tensor convolutions through oneDNN's int8 kernels too",
    )
    q.add_argument(
        "--no-clip-search",
        action="store_true",
        help="SVD presets: pick each layer's smoothing alpha by MSE without also searching its residual clipping "
        "(the default searches both)",
    )
    q.add_argument(
        "--stft-method",
        choices=("sensitivity", "search", "uniform"),
        default=None,
        help="how the stft presets pick each layer's settings: by complex-STFT sensitivity (default), by an "
        "end-to-end search, or the uniform-weight ablation",
    )
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("-o", "--out", type=Path, required=True, help="output .safetensors file")
    q.add_argument("--json", action="store_true", help="print one JSON report on stdout")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=_run)


def _slow_here(pipe, args: argparse.Namespace) -> bool:
    """Whether the file asked for would run slowly on this CPU: per-tensor activations on a U-Net without
    ``--reduce-range``, where oneDNN's int8 convolution is inexact for larger weight codes (no VNNI)."""
    from accelerando.models.unet import MusicUNet
    from accelerando.quant import int8_conv

    if args.act_scale != "tensor" or args.reduce_range or not isinstance(pipe.model.dit, MusicUNet):
        return False
    return int8_conv.op_available() and not int8_conv.available()


def _run(args: argparse.Namespace) -> int:
    from accelerando.quant.presets import PRESETS, preset_config, quantize_pipeline, save_quantized_generator

    if args.config not in PRESETS:
        preset_config(args.config)  # raises the UserError naming it and listing the valid presets
    # a UserError for --act-scale tensor on an A16 / A4 preset, or --reduce-range on one without weight codes
    clip = False if args.no_clip_search else None
    preset_config(args.config, act_scale=args.act_scale, reduce_range=args.reduce_range, clip_search=clip)
    if args.out.suffix != ".safetensors":
        raise UserError(f"-o {args.out}: use a .safetensors file name")
    if args.calib_prompts < 1 or args.calib_prompts > 62:
        raise UserError(f"--calib-prompts {args.calib_prompts}; use 1-62 (the shipped train-split prompt set)")
    if args.rank is not None and args.rank < 0:
        raise UserError(f"--rank {args.rank}; use an int >= 0")
    if args.group_size is not None and args.group_size != 0 and (args.group_size < 2 or args.group_size % 2):
        raise UserError(f"--group-size {args.group_size}; use an even int >= 2, or 0 for one scale per output channel")
    if args.recover_steps is not None:
        if args.recover_steps < 0 or args.recover_steps > 100_000:
            raise UserError(f"--recover-steps {args.recover_steps}; use an int between 0 and 100000")
        if args.recover_steps and "svd" not in args.config and "smooth" not in args.config:
            raise UserError(f"--recover-steps needs an SVD or SmoothQuant preset, not {args.config!r}")
    pipe = load_pipeline(args.model)
    if _slow_here(pipe, args):
        print(
            "note: this CPU has no VNNI; without --reduce-range this file's per-tensor convolutions with weight codes "
            "beyond ±64 run here as float32 convolutions of the codes, slower than float32 "
            '(docs/quantization.md, "CPUs without VNNI")',
            file=sys.stderr,
        )

    bars: dict = {}

    def progress(stage: str, done: int, total: int) -> None:
        if args.quiet or not sys.stderr.isatty():
            return
        from tqdm import tqdm

        if stage not in bars:
            for b in bars.values():
                b.close()
            desc = {
                "calibrate": "calibrating",
                "sensitivity": "stft sensitivities",
                "stft": "stft calibration",
                "recover": "recovery",
            }.get(stage, stage)
            bars[stage] = tqdm(total=total, desc=desc, leave=False, file=sys.stderr)
        bar = bars[stage]
        bar.total = max(bar.total or 0, total)
        bar.update(done - bar.n)

    options = {
        "seed": args.seed,
        "callback": progress,
        "other_linears": args.other_linears,
        "act_scale": args.act_scale,
        "reduce_range": args.reduce_range,
        "clip_search": clip,
    }
    if args.recover_steps is not None:
        options["recover_steps"] = args.recover_steps
    if args.rank is not None:
        options["rank"] = args.rank
    if args.stft_method is not None:
        options["stft_method"] = args.stft_method
    if args.group_size is not None:
        options["group_size"] = args.group_size or None  # 0: per output channel
    try:
        quantize_pipeline(pipe, args.config, calib_prompts=args.calib_prompts, **options)
    finally:
        for b in bars.values():
            b.close()
    rep = pipe.model.quant_report
    extra = {
        "preset": args.config,
        "source_model": str(args.model),
        "calib_prompts": rep["calib_prompts"],
        "calib_seconds": rep["calib_seconds"],
        "other_linears": args.other_linears,
        "recovery": rep["recovery"] and {k: v for k, v in rep["recovery"].items() if k != "history"},
    }
    out = save_quantized_generator(pipe.model, args.out, extra)
    report = {
        "output": str(out),
        "config": args.config,
        "quant_config": rep["config"],
        "model": str(args.model),
        "weight_bytes_before": rep["weight_bytes_before"],
        "weight_bytes_after": rep["weight_bytes_after"],
        "weight_bytes_bf16": rep["weight_bytes_bf16"],
        "size": rep["size"],
        "quantized_layer_bytes_before_bf16": rep["quantized_layer_bytes_before_bf16"],
        "quantized_layer_bytes_after": rep["quantized_layer_bytes_after"],
        "file_bytes": out.stat().st_size,
        "calib_seconds": rep["calib_seconds"],
        "calib_prompts": len(rep["calib_prompts"]),
        "sqnr_db": rep["sqnr_db"],
        "layers": [
            {k: layer[k] for k in ("name", "in_features", "out_features", "sqnr_db", "alpha", "rank")}
            for layer in rep["layers"]
        ],
        "stft_calibration": rep["stft_calibration"]
        and {k: v for k, v in rep["stft_calibration"].items() if k != "layers"},
        "recovery": rep["recovery"],
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"wrote {out} ({args.config}: {rep['weight_bytes_before'] / 1e6:.2f} MB -> "
            f"{rep['weight_bytes_after'] / 1e6:.2f} MB, median layer SQNR {rep['sqnr_db']['median']:.1f} dB, "
            f"calibration {rep['calib_seconds']:.1f} s)",
            file=sys.stderr,
        )
    return 0
