"""`accelerando generate | extend | inpaint | remix`: text-to-music and edits with exact tempo, key and meter."""

import argparse
import json
import re
import resource
import sys
import time
from pathlib import Path

from accelerando.errors import UserError

__all__ = ["register", "load_pipeline"]


def load_pipeline(model: str = "builtin"):
    """The pipeline for ``--model`` (tests replace this function with a tiny pipeline)."""
    from accelerando.pipelines.text_to_music import TextToMusicPipeline

    return TextToMusicPipeline.from_pretrained(model)


def _controls(p: argparse.ArgumentParser, prompt_required: bool) -> None:
    if prompt_required:
        p.add_argument("prompt", help="text description, e.g. 'a baroque chorale for string quartet'")
    else:
        p.add_argument("--prompt", default="", help="text description")
    p.add_argument("--bpm", type=float, default=120.0, help="tempo in beats per minute of the meter's beat")
    p.add_argument("--key", default="C major", help='e.g. "F# minor", "Bb major"')
    p.add_argument("--meter", default="4/4", help="e.g. 3/4, 6/8")
    p.add_argument("--instruments", default=None, help="instrumentation, e.g. string_quartet, piano, choir")
    p.add_argument("--steps", type=int, default=8, help="sampling steps")
    p.add_argument("--cfg", type=float, default=3.0, help="classifier-free guidance scale")
    p.add_argument("--sampler", choices=("euler", "heun"), default="euler")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="builtin", help="'builtin' or a generator .safetensors file")
    p.add_argument("-o", "--out", type=Path, default=Path("out.wav"), help="output audio file (.wav or .flac)")
    p.add_argument("--json", action="store_true", help="print one JSON report on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("generate", help="generate music from a prompt and exact controls")
    _controls(g, prompt_required=True)
    g.add_argument("--duration", type=float, default=10.0, help="seconds")
    g.add_argument("--variations", type=int, default=1, help="how many variations (OUT_1.wav, OUT_2.wav, ...)")
    g.set_defaults(func=_run, mode="generate")

    e = sub.add_parser("extend", help="continue an audio file")
    e.add_argument("input", type=Path)
    e.add_argument("--seconds", type=float, required=True, help="seconds to add")
    _controls(e, prompt_required=False)
    e.set_defaults(func=_run, mode="extend")

    i = sub.add_parser("inpaint", help="regenerate regions of an audio file, keeping the rest sample-exact")
    i.add_argument("input", type=Path)
    i.add_argument("--region", action="append", required=True, help="START-END in seconds; repeatable")
    _controls(i, prompt_required=False)
    i.set_defaults(func=_run, mode="inpaint")

    r = sub.add_parser("remix", help="audio-to-audio: keep the structure, follow a new prompt")
    r.add_argument("input", type=Path)
    r.add_argument("--strength", type=float, required=True, help="0 keeps the input, 1 ignores it")
    _controls(r, prompt_required=True)
    r.set_defaults(func=_run, mode="remix")


def _regions(specs: list[str], length: float) -> list[tuple[float, float]]:
    out = []
    for spec in specs:
        m = re.fullmatch(r"\s*([0-9.]+)\s*-\s*([0-9.]+)\s*", spec)
        if not m:
            raise UserError(f"--region {spec!r} is not START-END in seconds, e.g. --region 4.5-8")
        a, b = float(m.group(1)), float(m.group(2))
        if not 0 <= a < b <= length:
            raise UserError(f"--region {spec!r} must satisfy 0 <= START < END <= {length:.2f} (the input's length)")
        out.append((a, b))
    return out


def _outputs(out: Path, n: int) -> list[Path]:
    if out.suffix.lower() not in (".wav", ".flac"):
        raise UserError(f"-o {out}: use a .wav or .flac file name")
    if n == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{k + 1}{out.suffix}") for k in range(n)]


def _run(args: argparse.Namespace) -> int:
    import torch

    from accelerando.audio import load
    from accelerando.conditioning.controls import ControlSpec

    try:  # validate the controls before loading anything
        ControlSpec.from_user(bpm=args.bpm, key=args.key, meter=args.meter, instruments=args.instruments)
    except ValueError as err:
        raise UserError(str(err)) from None
    n = getattr(args, "variations", 1)
    if n < 1 or n > 16:
        raise UserError(f"--variations {n}; use 1-16")
    paths = _outputs(args.out, n)
    kwargs: dict = {}
    if args.mode == "generate":
        duration = args.duration
    else:
        wav, sr = load(args.input)
        length = wav.shape[-1] / sr
        kwargs.update(init_audio=wav, init_sample_rate=sr)
        if args.mode == "extend":
            if args.seconds <= 0:
                raise UserError(f"--seconds {args.seconds}; give a positive number of seconds to add")
            duration = length + args.seconds
        elif args.mode == "inpaint":
            duration = length
            kwargs["regions"] = _regions(args.region, length)
        else:
            duration = length
            kwargs["strength"] = args.strength
    t0 = time.perf_counter()
    pipe = load_pipeline(args.model)
    bar = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=args.steps if args.sampler == "euler" else 2 * args.steps - 1, desc=args.mode, leave=False)
    out = pipe(
        args.prompt,
        bpm=args.bpm,
        key=args.key,
        meter=args.meter,
        instruments=args.instruments,
        duration=duration,
        steps=args.steps,
        cfg=args.cfg,
        sampler=args.sampler,
        num_outputs=n,
        generator=torch.Generator().manual_seed(args.seed),
        callback=(lambda *a: bar.update(1)) if bar else None,
        **kwargs,
    )
    if bar:
        bar.close()
    for k, path in enumerate(paths):
        out.save(path, index=k)
    wall = time.perf_counter() - t0
    audio_seconds = out.audio.shape[-1] / out.sample_rate * n
    report = {
        "outputs": [str(p) for p in paths],
        "sample_rate": out.sample_rate,
        "audio_seconds": audio_seconds,
        "wall_seconds": wall,
        "rtf": audio_seconds / wall,
        "steps": args.steps,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "model": args.model,
        "seed": args.seed,
        "bpm": out.metadata["bpm"],
        "key": out.metadata["key"],
        "meter": out.metadata["meter"],
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"wrote {', '.join(report['outputs'])} ({audio_seconds:.1f} s of audio in {wall:.1f} s)", file=sys.stderr)
    return 0
