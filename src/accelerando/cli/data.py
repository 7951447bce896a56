"""`accelerando data build|summary`: render the training corpus and report on it."""

import argparse
import json
import sys
from pathlib import Path

from accelerando.errors import UserError

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="build and inspect the rendered music corpus")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", parser_class=type(p))
    b = dsub.add_parser("build", help="render music21 scores with FluidSynth into clips with exact labels")
    b.add_argument("--out", type=Path, default=None, help="output directory (default: $ACCELERANDO_CACHE/corpus)")
    b.add_argument(
        "--limit", type=_limit, default=250, help="scores per collection, a deterministic sample (default 250; 'all')"
    )
    b.add_argument("--collections", default=None, help="comma-separated, e.g. bach,ryansMammoth (default: all)")
    b.add_argument("--instrumentations", default=None, help="comma-separated, e.g. piano,string_quartet")
    b.add_argument("--sample-rate", type=int, default=24000)
    b.add_argument("--channels", type=int, default=1, choices=(1, 2))
    b.add_argument("--variants", type=int, default=2, help="renderings per score (instrumentation, tempo, key)")
    b.add_argument("--max-seconds", type=float, default=60.0, help="cut longer scores at a bar line")
    b.add_argument("--workers", type=int, default=2)
    b.add_argument(
        "--splits",
        default=None,
        help="render only these splits, e.g. test (evaluation audio in minutes; a later full build resumes); "
        "--limit picks the scores first, then the split filter keeps about 5%% of them for test",
    )
    b.add_argument("--soundfont", default=None, help="GM .sf2 file (default: the Debian fluid-soundfont-gm)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    b.set_defaults(func=_build)
    s = dsub.add_parser("summary", help="hours per split and per collection of a built corpus")
    s.add_argument("--out", type=Path, default=None)
    s.set_defaults(func=_summary)
    p.set_defaults(func=lambda args: p.print_help(sys.stderr) or 2)


def _build(args: argparse.Namespace) -> int:
    from accelerando.data.build import BuildConfig, build_corpus, default_corpus_dir
    from accelerando.data.collections import parse_collections
    from accelerando.data.instrumentations import parse_instrumentations
    from accelerando.data.render import RenderSetupError

    try:
        cfg = BuildConfig(
            out=args.out or default_corpus_dir(),
            collections=parse_collections(args.collections),
            instrumentations=parse_instrumentations(args.instrumentations),
            sample_rate=args.sample_rate,
            channels=args.channels,
            variants=args.variants,
            limit=args.limit,
            max_seconds=args.max_seconds,
            workers=args.workers,
            soundfont=args.soundfont,
            splits=None if args.splits is None else tuple(s.strip() for s in args.splits.split(",") if s.strip()),
        )
        res = build_corpus(cfg, progress=not args.quiet)
    except (ValueError, PermissionError, RenderSetupError) as err:
        raise UserError(str(err)) from None
    if args.json:
        print(json.dumps({"out": str(cfg.out), **res.summary}))
    else:
        _print_summary(res.summary, sys.stderr)
        print(
            f"scores: {res.scores_total} total, {res.scores_skipped} already done, {res.scores_failed} failed "
            f"(see {cfg.out / 'failures.jsonl'}); {res.clips_written} clips, "
            f"{res.audio_seconds / 3600:.2f} h rendered in {res.wall_seconds:.0f} s "
            f"({res.audio_seconds / max(res.wall_seconds, 1e-9):.1f} s audio per s)",
            file=sys.stderr,
        )
    return 0


def _limit(text: str) -> int | None:
    if text == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--limit {text!r} is not a number; give N or 'all'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--limit {value} must be at least 1 (or 'all')")
    return value


def _print_summary(summary: dict, file) -> None:
    print(
        f"corpus: {summary['clips']} clips, {summary['hours']:.2f} h, {summary['disk_bytes'] / 1e9:.2f} GB", file=file
    )
    for by, table in summary["hours_by"].items():
        print(f"  hours by {by}: " + ", ".join(f"{k} {v:.2f}" for k, v in table.items()), file=file)


def _summary(args: argparse.Namespace) -> int:
    from accelerando.data.build import default_corpus_dir, write_manifest

    out = args.out or default_corpus_dir()
    if not (out / "clips").is_dir():
        raise UserError(f"no corpus at {out}; build one with `accelerando data build --out {out}`")
    summary = write_manifest(out)
    _print_summary(summary, sys.stdout)
    return 0
