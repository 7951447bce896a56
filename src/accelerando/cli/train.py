"""`accelerando train codec` and `accelerando data pack`: train the built-in models outside the work tree."""

import argparse
import json
import sys
from pathlib import Path

from accelerando.errors import UserError

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the built-in codec or generator")
    tsub = p.add_subparsers(dest="train_command", metavar="MODEL", parser_class=type(p))
    c = tsub.add_parser("codec", help="train the mel-latent codec on an audio pack")
    c.add_argument("--data", type=Path, required=True, help="audio pack (.flac + .json) from `accelerando pack`")
    c.add_argument("--val", type=Path, default=None, help="validation pack")
    c.add_argument("--out", type=Path, default=None, help="run directory (default: $ACCELERANDO_CACHE/runs/codec)")
    c.add_argument("--steps", type=int, default=20000)
    c.add_argument("--batch-size", type=int, default=16)
    c.add_argument("--lr", type=float, default=5e-4)
    c.add_argument("--max-minutes", type=float, default=None, help="stop with a checkpoint after this long")
    c.add_argument(
        "--no-bf16", action="store_true", help="train in float32 (the default where the device has no bf16 arithmetic)"
    )
    c.add_argument("--tiny", action="store_true", help="tiny model (for smoke tests)")
    c.add_argument("--latent", choices=("learned", "mel"), default="learned", help="learned bottleneck or log-mel")
    c.add_argument("--latent-dim", type=int, default=64)
    c.add_argument("--dec-dim", type=int, default=256)
    c.add_argument("--mel-weight", type=float, default=1.0)
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=_codec)
    g = tsub.add_parser("generator", help="train the MusicDiT generator on a latent pack")
    g.add_argument("--data", type=Path, required=True, help="latent pack from `accelerando latents`")
    g.add_argument("--out", type=Path, default=None, help="run directory (default: $ACCELERANDO_CACHE/runs/generator)")
    g.add_argument("--steps", type=int, default=20000)
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--seconds", type=float, default=10.0, help="training crop length")
    g.add_argument("--lr", type=float, default=3e-4)
    g.add_argument("--backbone", choices=("dit", "unet"), default="dit", help="transformer or 1-D conv U-Net")
    g.add_argument("--width", type=int, default=384, help="DiT width (U-Net: conditioning width)")
    g.add_argument("--channels", default="192,256,384", help="U-Net channels per level, comma-separated")
    g.add_argument(
        "--norm",
        choices=("group", "frame"),
        default="group",
        help="U-Net normalisation: group (statistics over the clip) or frame (per frame: sparse edits exact, no cache)",
    )
    g.add_argument("--depth", type=int, default=6)
    g.add_argument("--heads", type=int, default=6)
    g.add_argument("--max-minutes", type=float, default=None, help="stop with a checkpoint after this long")
    g.add_argument("--ckpt-every", type=int, default=1000, help="steps between checkpoints")
    g.add_argument(
        "--phase-guidance",
        action="store_true",
        help="drop the beat grid with the controls, so guidance also locks the beat (also switches it on when "
        "resuming a run trained without it)",
    )
    g.add_argument(
        "--tempo-stretch",
        type=float,
        default=0.0,
        help="tempo augmentation: resample each crop by a random factor within exp(+-X), moving bpm and beats "
        "with it (0 = off; 0.2 is about +-22%%)",
    )
    g.add_argument(
        "--ema",
        type=float,
        default=0.0,
        help="keep an exponential moving average of the weights with this decay (e.g. 0.999) and export it (0 = off)",
    )
    g.add_argument(
        "--no-bf16", action="store_true", help="train in float32 (the default where the device has no bf16 arithmetic)"
    )
    g.add_argument("--quiet", action="store_true")
    g.set_defaults(func=_generator)
    e = tsub.add_parser("export", help="export a generator run's latest checkpoint as shippable weights")
    e.add_argument("run", type=Path, help="run directory (the --out of `train generator`)")
    e.add_argument("-o", "--out", type=Path, required=True, help="output .safetensors")
    e.add_argument("--default-cfg", type=float, default=None, help="guidance scale recorded as the model's default")
    e.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="weights dtype (float16)")
    e.add_argument(
        "--default-rhythm-cfg", type=float, default=None, help="rhythm guidance scale recorded as the model's default"
    )
    e.add_argument(
        "--default-guidance-interval",
        default=None,
        metavar="LO,HI",
        help="flow times at which guidance runs, recorded as the model's default (e.g. 0.7,1)",
    )
    e.add_argument(
        "--default-grid-guidance",
        default=None,
        metavar="X|off",
        help="beat-grid guidance strength (0-4, or off) recorded as the model's default",
    )
    e.add_argument(
        "--default-key-guidance",
        default=None,
        metavar="X|off",
        help="key guidance strength (0-4, or off) recorded as the model's default",
    )
    e.add_argument("--raw", action="store_true", help="export the raw weights even when the run keeps an EMA")
    e.set_defaults(func=_export)
    p.set_defaults(func=lambda args: p.print_help(sys.stderr) or 2)

    lat = sub.add_parser("latents", help="encode corpus clips into a compact latent pack for generator training")
    lat.add_argument("--corpus", type=Path, default=None)
    lat.add_argument("--split", default="train", choices=("train", "valid"), help="never the test split")
    lat.add_argument("--clips", type=int, default=None, help="at most this many clips (random, seeded)")
    lat.add_argument("--max-seconds", type=float, default=None, help="one window of at most this long per clip")
    lat.add_argument("--seed", type=int, default=0)
    lat.add_argument("-o", "--out", type=Path, required=True)
    lat.set_defaults(func=_latents)

    k = sub.add_parser("pack", help="cut training segments from a corpus into one compact FLAC pack")
    k.add_argument("--corpus", type=Path, default=None, help="corpus directory (default: the cache corpus)")
    k.add_argument("--split", default="train", choices=("train", "valid"), help="never the test split")
    k.add_argument("--segments", type=int, default=500)
    k.add_argument("--seconds", type=float, default=4.0)
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("-o", "--out", type=Path, required=True, help="output path (.flac and .json are written)")
    k.set_defaults(func=_pack)


def _codec(args: argparse.Namespace) -> int:
    from accelerando.models.codec import CodecConfig
    from accelerando.paths import cache_dir
    from accelerando.training.codec_trainer import CodecTrainConfig, train_codec

    for pack in (args.data, args.val):
        if pack is not None and not pack.with_suffix(".json").is_file():
            raise UserError(f"no audio pack at {pack} (.json missing); make one with `accelerando pack -o {pack}`")
    try:
        cfg = CodecTrainConfig(
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            max_minutes=args.max_minutes,
            bf16=False if args.no_bf16 else None,  # None: bf16 where the device has bf16 arithmetic
            mel_weight=args.mel_weight,
        )
        if args.tiny:
            codec_cfg = CodecConfig.tiny()
        elif args.latent == "mel":
            codec_cfg = CodecConfig.mel_vocoder(dec_dim=args.dec_dim)
        else:
            codec_cfg = CodecConfig(latent_dim=args.latent_dim, dec_dim=args.dec_dim)
    except ValueError as err:
        raise UserError(str(err)) from None
    out = args.out or cache_dir("runs", "codec")
    path = train_codec(args.data, out, codec_cfg, cfg, args.val, progress=not args.quiet)
    print(path)
    return 0


def _pack(args: argparse.Namespace) -> int:
    from accelerando.data.build import default_corpus_dir
    from accelerando.training.audio_pack import write_pack

    corpus = args.corpus or default_corpus_dir()
    if not (corpus / "manifest.jsonl").is_file():
        raise UserError(f"no corpus manifest in {corpus}; run `accelerando data build --out {corpus}` first")
    sr = json.loads((corpus / "build.json").read_text())["format"]["sample_rate"]
    meta = write_pack(corpus, args.out, args.segments, args.seconds, sr, args.seed, args.split)
    print(f"{len(meta['segments'])} segments of {args.seconds} s -> {args.out.with_suffix('.flac')}")
    return 0


def _generator(args: argparse.Namespace) -> int:
    from accelerando.models.dit import MusicDiTConfig
    from accelerando.models.unet import MusicUNetConfig
    from accelerando.paths import cache_dir
    from accelerando.training.generator_trainer import GeneratorTrainConfig, train_generator

    if not args.data.is_file():
        raise UserError(f"no latent pack at {args.data}; make one with `accelerando latents -o {args.data}`")
    try:
        cfg = GeneratorTrainConfig(
            steps=args.steps,
            batch_size=args.batch_size,
            seconds=args.seconds,
            lr=args.lr,
            max_minutes=args.max_minutes,
            bf16=False if args.no_bf16 else None,  # None: bf16 where the device has bf16 arithmetic
            ckpt_every=args.ckpt_every,
            phase_guidance=True if args.phase_guidance else None,
            tempo_stretch=args.tempo_stretch,
            ema=args.ema,
        )
        if args.backbone == "unet":
            try:
                channels = [int(c) for c in args.channels.split(",")]
            except ValueError:
                raise UserError(f"--channels {args.channels!r}: give integers separated by commas") from None
            dit = MusicUNetConfig(channels=channels, width=args.width, norm=args.norm)
        else:
            dit = MusicDiTConfig(width=args.width, depth=args.depth, heads=args.heads)
    except ValueError as err:
        raise UserError(str(err)) from None
    out = args.out or cache_dir("runs", "generator")
    print(train_generator(args.data, out, dit, cfg, progress=not args.quiet))
    return 0


def _export(args: argparse.Namespace) -> int:
    import torch

    from accelerando.models.generator import MusicGenerator, backbone_config
    from accelerando.models.io import save_model
    from accelerando.training.checkpoint import Checkpoint

    ckpt = Checkpoint(args.run, "generator")
    if not ckpt.exists():
        raise UserError(f"no generator checkpoint in {args.run} (expected {ckpt.dir / 'state.json'})")
    for flag, value in (("--default-cfg", args.default_cfg), ("--default-rhythm-cfg", args.default_rhythm_cfg)):
        if value is not None and not 0 <= value <= 20:
            raise UserError(f"{flag} {value}; use a guidance scale between 0 and 20")
    interval = None
    if args.default_guidance_interval is not None:
        from accelerando.cli.generate import _interval_value

        text = args.default_guidance_interval
        try:
            value = _interval_value(text)
        except argparse.ArgumentTypeError as err:
            raise UserError(f"--default-guidance-interval {err}") from None
        if value == "all":
            raise UserError("--default-guidance-interval all is the default already; give LO,HI or leave it out")
        interval = value  # [lo, hi], range checked by _interval_value
    latent_defaults = {}  # default_grid_guidance / default_key_guidance -> strength
    for name in ("grid_guidance", "key_guidance"):
        text = getattr(args, f"default_{name}")
        if text is not None:
            from accelerando.cli.generate import _grid_value

            try:
                value = _grid_value(text, name)
            except argparse.ArgumentTypeError as err:
                raise UserError(f"--default-{name.replace('_', '-')} {err}") from None
            latent_defaults[f"default_{name}"] = 0.0 if value == "off" else value
    if args.out.suffix != ".safetensors":
        raise UserError(f"-o {args.out}: the output must be a .safetensors file")
    state = ckpt.state()
    try:
        model = MusicGenerator(backbone_config(state["dit_config"]))
        use_ema = ckpt.has_ema() and not args.raw
        ckpt.load_ema(model) if use_ema else ckpt.load_weights(model)
    except (KeyError, ValueError, TypeError, RuntimeError) as err:
        raise UserError(f"cannot read the checkpoint in {args.run}: {' '.join(str(err).split())}") from None
    if args.default_cfg is not None:
        model.config.default_cfg = args.default_cfg
    if args.default_rhythm_cfg is not None:
        model.config.default_rhythm_cfg = args.default_rhythm_cfg
    if interval is not None:
        model.config.default_guidance_interval = interval
    for field, value in latent_defaults.items():
        setattr(model.config, field, value)
    dtype = torch.float16 if args.dtype == "float16" else torch.float32
    save_model(model.eval(), args.out, "generator", model.config.to_dict(), dtype=dtype)
    kind = "EMA weights" if use_ema else "weights"
    print(f"step {state['step']} ({kind}) -> {args.out} ({args.out.stat().st_size / 1e6:.1f} MB, {args.dtype})")
    return 0


def _latents(args: argparse.Namespace) -> int:
    from accelerando.data.build import default_corpus_dir
    from accelerando.training.latent_pack import build_latent_pack

    corpus = args.corpus or default_corpus_dir()
    if not (corpus / "manifest.jsonl").is_file():
        raise UserError(f"no corpus manifest in {corpus}; run `accelerando data build --out {corpus}` first")
    info = build_latent_pack(corpus, args.out, args.clips, args.split, args.seed, args.max_seconds)
    print(f"{info['clips']} clips, {info['frames']} frames, {info['bytes'] / 1e6:.1f} MB -> {args.out}")
    return 0
