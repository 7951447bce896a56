"""`accelerando generate | extend | inpaint | remix`: text-to-music and edits with exact tempo, key and meter.

With ``--session DIR``, ``generate`` records an edit session (see docs/editing.md) and ``inpaint`` / ``extend`` reuse
it: only the edited stretch is recomputed (token-sparse backbone, sparse codec decode) and the session is updated.
Edits take the session's controls, steps and sampler; giving different ones is an error.
"""

import argparse
import json
import re
import resource
import sys
import time
from pathlib import Path

from accelerando.errors import UserError
from accelerando.modules.precision import use_bf16
from accelerando.quant.primitives import int_mm_native

__all__ = ["register", "load_pipeline"]


def load_pipeline(model: str = "builtin"):
    """The pipeline for ``--model`` (tests replace this function with a tiny pipeline)."""
    from accelerando.pipelines.text_to_music import TextToMusicPipeline

    return TextToMusicPipeline.from_pretrained(model)


def _controls(p: argparse.ArgumentParser, prompt_required: bool) -> None:
    if prompt_required:
        p.add_argument("prompt", help="text description, e.g. 'a baroque chorale for string quartet'")
    else:
        p.add_argument("--prompt", default=None, help="text description (with --session: the session's)")
    # None = not given: the defaults below, or the session's values for an edit with --session
    p.add_argument("--bpm", type=float, default=None, help="tempo in beats per minute of the meter's beat (120)")
    p.add_argument("--key", default=None, help='e.g. "F# minor", "Bb major" (C major)')
    p.add_argument("--meter", default=None, help="e.g. 3/4, 6/8 (4/4)")
    p.add_argument("--instruments", default=None, help="instrumentation, e.g. string_quartet, piano, choir")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (8)")
    p.add_argument("--cfg", type=float, default=None, help="guidance scale (default: the model's own)")
    p.add_argument(
        "--rhythm-cfg",
        type=_rhythm_value,
        default=None,
        metavar="X|off",
        help="separate guidance for bpm, key, meter and beat grid (default: the model's own; off: plain guidance)",
    )
    p.add_argument(
        "--guidance-interval",
        type=_interval_value,
        default=None,
        metavar="LO,HI|all",
        help="guide only the steps at flow times LO-HI (1 = noise); the others run one branch (default: the "
        "model's own; all: every step)",
    )
    p.add_argument(
        "--grid-guidance",
        type=_grid_value,
        default=None,
        metavar="X|off",
        help="beat-grid guidance strength 0-4: pull the onsets onto the requested beats (default: the model's own)",
    )
    p.add_argument(
        "--key-guidance",
        type=lambda text: _grid_value(text, "key_guidance"),
        default=None,
        metavar="X|off",
        help="key guidance strength 0-4: pull the pitch content into the requested key (default: the model's own)",
    )
    p.add_argument("--sampler", choices=("euler", "heun"), default=None, help="euler (default) or heun")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="builtin", help="'builtin' or a generator .safetensors file")
    p.add_argument("--device", default="cpu", help="where to run: cpu (default), cuda or cuda:N")
    p.add_argument("-o", "--out", type=Path, default=Path("out.wav"), help="output audio file (.wav or .flac)")
    p.add_argument("--json", action="store_true", help="print one JSON report on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


# cfg None: the model's recommended scale (default_cfg, stored with its weights)
_DEFAULTS = {"prompt": "", "bpm": 120.0, "key": "C major", "meter": "4/4", "steps": 8, "cfg": None, "sampler": "euler"}


def _session_args(p: argparse.ArgumentParser, record: bool) -> None:
    if record:
        p.add_argument("--session", type=Path, default=None, help="record an edit session in DIR for fast edits")
        p.add_argument("--cache-mb", type=float, default=2048.0, help="budget of the session's cache (MB)")
        p.add_argument(
            "--over-budget",
            choices=("fewer-steps", "refuse"),
            default="fewer-steps",
            help="over the budget: cache only the first steps that fit, or refuse",
        )
    else:
        p.add_argument("--session", type=Path, default=None, help="edit session DIR recorded by generate --session")
        p.add_argument(
            "--halo",
            type=float,
            default=None,
            help="seconds recomputed on each side of the edit (default: 0.5 for a DiT, 0 for a per-frame U-Net)",
        )
        p.add_argument("--cache-mb", type=float, default=2048.0, help="budget of the session's cache (MB)")


def register(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("generate", help="generate music from a prompt and exact controls")
    _controls(g, prompt_required=True)
    g.add_argument("--duration", type=float, default=10.0, help="seconds")
    g.add_argument("--variations", type=int, default=1, help="how many variations (OUT_1.wav, OUT_2.wav, ...)")
    _session_args(g, record=True)
    g.set_defaults(func=_run, mode="generate")

    e = sub.add_parser("extend", help="continue an audio file")
    e.add_argument("input", type=Path)
    e.add_argument("--seconds", type=float, required=True, help="seconds to add")
    _controls(e, prompt_required=False)
    _session_args(e, record=False)
    e.set_defaults(func=_run, mode="extend")

    i = sub.add_parser("inpaint", help="regenerate regions of an audio file, keeping the rest sample-exact")
    i.add_argument("input", type=Path)
    i.add_argument("--region", action="append", required=True, help="START-END in seconds; repeatable")
    _controls(i, prompt_required=False)
    _session_args(i, record=False)
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


def _resolve_controls(args: argparse.Namespace, manifest: dict | None) -> None:
    """Fill in controls left unset: from the session (edits with --session) or the defaults; refuse conflicts."""
    if manifest is None:
        for name, value in _DEFAULTS.items():
            if getattr(args, name) is None:
                setattr(args, name, value)
        return
    from accelerando.cache.edit import LEGACY_SETTINGS

    # a session recorded before a setting existed replays its legacy value: compare flags against that
    recorded = {**LEGACY_SETTINGS, **manifest["controls"], "steps": manifest["steps"], "sampler": manifest["sampler"]}
    for name, value in recorded.items():
        if not hasattr(args, name):
            continue  # a control without a flag here: the editor replays the session's value itself
        given = getattr(args, name)
        if given is None:
            setattr(args, name, value)
        elif given != value:
            given_s, value_s = (_flag_text(x) for x in (given, value))
            flag = f"--{name.replace('_', '-')} {given_s}"
            raise UserError(f"{flag} differs from the session ({value_s}); edits keep its {name}, drop {flag}")
    # prompt and cfg may change per edit; None = the session's


def _flag_text(value) -> str:
    """A control's value as its flag is written: 96 for 96.0, 0.7,1 for [0.7, 1.0]."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ",".join(_flag_text(float(v)) for v in value)
    return str(value)


def _rhythm_value(text: str) -> float | str:
    """``--rhythm-cfg``: a number or ``off`` (argparse reports a bad value as a one-line usage error)."""
    if text == "off":
        return "off"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a guidance scale (e.g. 7) or off") from None


def _grid_value(text: str, name: str = "grid_guidance") -> float | str:
    """``--grid-guidance`` / ``--key-guidance``: a strength in [0, 4] or ``off`` (0 is ``off``); a bad value is a
    one-line usage error."""
    from accelerando.pipelines.grid_guidance import check_grid_guidance

    try:
        value = check_grid_guidance("off" if text == "off" else float(text), name)
    except (ValueError, UserError) as err:
        raise argparse.ArgumentTypeError(f"{text!r}: give a strength between 0 and 4, or off ({err})") from None
    return "off" if value == 0 else value


def _interval_value(text: str) -> list[float] | str:
    """``--guidance-interval``: ``LO,HI`` flow times with ``0 <= LO <= HI <= 1``, or ``all``."""
    if text == "all":
        return "all"
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give two flow times LO,HI (e.g. 0.7,1) or all") from None
    if not 0 <= lo <= hi <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: use 0 <= LO <= HI <= 1 (flow time: 1 = noise, 0 = data)")
    return [lo, hi]


def _device(name: str):
    """``--device`` as a torch.device; a one-line error for an unknown name or a missing GPU."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name!r}: use cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA device is available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def _run(args: argparse.Namespace) -> int:
    import torch

    from accelerando.audio import load

    session = getattr(args, "session", None)
    editing = session is not None and args.mode in ("inpaint", "extend")
    manifest = None
    if editing:
        from accelerando.cache.session import read_manifest

        manifest = read_manifest(session)  # one-line error for a missing session, before compute (full check later)
    _resolve_controls(args, manifest)
    if not editing and args.prompt is None:
        args.prompt = ""
    from accelerando.conditioning.controls import ControlSpec

    try:  # validate the controls before loading anything
        ControlSpec.from_user(bpm=args.bpm, key=args.key, meter=args.meter, instruments=args.instruments)
    except ValueError as err:
        raise UserError(str(err)) from None
    n = getattr(args, "variations", 1)
    if n < 1 or n > 16:
        raise UserError(f"--variations {n}; use 1-16")
    if session is not None and n != 1:
        raise UserError(f"--session records one clip; drop --variations {n}")
    device = _device(args.device)
    precision = "bf16" if use_bf16(device) else "float32"  # a bad ACCELERANDO_BF16 fails here, before any work
    int_mm_native("cpu")  # and a bad ACCELERANDO_QUANT_INT_MM
    if session is not None and device.type != "cpu":
        raise UserError(f"--session edits run on the CPU; drop --device {args.device}")
    paths = _outputs(args.out, n)
    kwargs: dict = {}
    wav = sr = None
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
    if editing and (sr != manifest["sample_rate"] or wav.shape[-1] != manifest["samples"]):
        raise UserError(
            f"{args.input} ({wav.shape[-1]} samples at {sr} Hz) is not the clip of session {session} "
            f"({manifest['samples']} at {manifest['sample_rate']} Hz); pass the file its last run wrote"
        )
    t0 = time.perf_counter()
    pipe = load_pipeline(args.model).to(device)
    bar = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=args.steps if args.sampler == "euler" else 2 * args.steps - 1, desc=args.mode, leave=False)
    callback = (lambda *a: bar.update(1)) if bar else None
    saved = False

    def store(out):  # the session holds the audio exactly as the output file reads back
        nonlocal saved
        out.save(paths[0])
        saved = True
        return load(paths[0])[0]

    if session is not None:
        from accelerando.cache.edit import SparseEditConfig, apply_sparse_edit

        config = SparseEditConfig(
            max_cache_mb=args.cache_mb,
            over_budget=getattr(args, "over_budget", "fewer-steps").replace("-", "_"),
            halo_s=getattr(args, "halo", None),
        )
        editor = apply_sparse_edit(pipe, config).sparse_edit
    controls = {"bpm": args.bpm, "key": args.key, "meter": args.meter, "instruments": args.instruments}
    if session is not None and args.mode == "generate":
        out = editor.generate(
            session,
            args.prompt,
            seed=args.seed,
            **controls,
            duration=duration,
            steps=args.steps,
            cfg=args.cfg,
            rhythm_cfg=args.rhythm_cfg,
            guidance_interval=args.guidance_interval,
            grid_guidance=args.grid_guidance,
            key_guidance=args.key_guidance,
            sampler=args.sampler,
            callback=callback,
            store_audio=store,
        )
    elif editing:
        out = editor.edit(
            session,
            regions=kwargs.get("regions"),
            extend_s=args.seconds if args.mode == "extend" else None,
            prompt=args.prompt,
            cfg=args.cfg,
            seed=args.seed,
            audio=wav,
            callback=callback,
            store_audio=store,
        )
    else:
        if args.mode in ("inpaint", "extend"):
            print(f"{args.mode}: no --session, so the whole clip is recomputed (sparse: false)", file=sys.stderr)
        out = pipe(
            args.prompt,
            **controls,
            duration=duration,
            steps=args.steps,
            cfg=args.cfg,
            rhythm_cfg=args.rhythm_cfg,
            guidance_interval=args.guidance_interval,
            grid_guidance=args.grid_guidance,
            key_guidance=args.key_guidance,
            sampler=args.sampler,
            num_outputs=n,
            generator=torch.Generator().manual_seed(args.seed),
            callback=callback,
            **kwargs,
        )
    if bar:
        bar.close()
    if not saved:
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
        "device": str(device),
        "precision": precision,
        "rhythm_cfg": out.metadata.get("rhythm_cfg"),
        "guidance_interval": out.metadata.get("guidance_interval"),
        "grid_guidance": out.metadata.get("grid_guidance"),
        "key_guidance": out.metadata.get("key_guidance"),
        "seed": args.seed,
        "bpm": out.metadata["bpm"],
        "key": out.metadata["key"],
        "meter": out.metadata["meter"],
    }
    if session is not None:
        report["session"] = str(session)
    if args.mode in ("inpaint", "extend"):
        report["sparse"] = editing
        if editing:
            report["sparse_edit"] = out.metadata["sparse_edit"]
    elif session is not None:
        report["session_cache"] = out.metadata["session"]
    if args.json:
        print(json.dumps(report))
    else:
        how = ""
        if editing:
            st = out.metadata["sparse_edit"]
            how = (
                f"; sparse: {st['tokens_recomputed']} of {st['tokens']} units regenerated, "
                f"{st['units_computed']} run, session updated"
            )
        elif session is not None:
            how = f"; session recorded in {session}"
        print(
            f"wrote {', '.join(report['outputs'])} ({audio_seconds:.1f} s of audio in {wall:.1f} s{how})",
            file=sys.stderr,
        )
    return 0
