"""`accelerando bench run | compare`: the music-aware benchmark of generator variants (see docs/bench.md)."""

import argparse
import importlib
import json
import shlex
import sys
from pathlib import Path

from accelerando.errors import UserError

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark generator variants: adherence, fidelity, FAD, speed, memory")
    bsub = p.add_subparsers(dest="bench_command", metavar="ACTION", parser_class=type(p))

    r = bsub.add_parser("run", help="generate a prompt suite with each variant and score everything")
    r.add_argument("--suite", default="quick", help="quick | full | NAME-vN | path to a suite .json (default: quick)")
    r.add_argument(
        "--variants",
        action="append",
        default=None,
        help="comma-separated variant specs, first = baseline: builtin, PATH, NAME=MODEL+TECHNIQUE[:ARG][:K=V]... "
        "(repeatable; default: builtin)",
    )
    r.add_argument("--out", type=Path, default=None, help="output folder (default: $ACCELERANDO_CACHE/bench/SUITE-ID)")
    r.add_argument("--ref", type=Path, default=None, help="reference audio folder for FAD (default: corpus test split)")
    r.add_argument("--limit", type=int, default=None, help="only the first N prompts of the suite")
    r.add_argument("--plugin", action="append", default=[], help="import MODULE first (it registers techniques)")
    r.add_argument(
        "--interleave",
        action="store_true",
        help="load all variants at once and alternate them prompt by prompt (fairer speed ratios on a shared machine)",
    )
    r.add_argument("--no-warmup", action="store_true", help="skip the unsaved warm-up generation of each variant")
    r.add_argument("--no-plots", action="store_true", help="skip the matplotlib plots")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument("--json", action="store_true", help="print results.json on stdout")
    r.set_defaults(func=_run)

    c = bsub.add_parser("compare", help="per-metric deltas between two results.json (B − A)")
    c.add_argument("a", type=Path, help="results.json or run folder (A, the reference)")
    c.add_argument("b", type=Path, help="results.json or run folder (B)")
    c.add_argument("--json", action="store_true", help="print the comparison as JSON")
    c.set_defaults(func=_compare)

    s = bsub.add_parser("list", help="list the shipped suites and the registered techniques")
    s.set_defaults(func=_list)
    p.set_defaults(func=lambda args: p.print_help(sys.stderr) or 2)


def _import_plugins(modules: list[str]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise UserError(f"--plugin {name}: cannot import it ({' '.join(str(err).split())})") from None


def _run(args: argparse.Namespace) -> int:
    from accelerando.bench.prompts import load_suite
    from accelerando.bench.runner import BenchConfig, run_bench
    from accelerando.bench.store import clean_json
    from accelerando.bench.variants import parse_variants
    from accelerando.paths import cache_dir

    _import_plugins(args.plugin)
    suite = load_suite(args.suite).limit(args.limit)
    variants = parse_variants(args.variants or ["builtin"])
    out = args.out if args.out is not None else cache_dir("bench", suite.id)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    argv = ["accelerando", "bench", "run", "--suite", args.suite, "--variants", ",".join(v.spec for v in variants)]
    argv += ["--out", str(out)] + (["--ref", str(args.ref)] if args.ref else [])
    argv += ["--limit", str(args.limit)] if args.limit else []
    argv += ["--interleave"] if args.interleave else []
    cfg = BenchConfig(
        suite=suite,
        variants=variants,
        out=out,
        ref=args.ref,
        progress=not args.quiet,
        command=shlex.join(argv),
        plots=not args.no_plots,
        warmup=not args.no_warmup,
        interleave=args.interleave,
    )
    results = run_bench(cfg)
    if args.json:
        print(json.dumps(clean_json(results)))
    else:
        for v in results["variants"]:
            s, e = v["summary"], v["efficiency"]
            print(
                f"{v['name']}: speed {_f(e.get('speedup_vs_baseline'))}x, RTF {_f(e.get('rtf_median'))}, "
                f"tempo acc2 {_f(s.get('tempo_acc2'))}, key {_f(s.get('key_adherence_mean'))}, "
                f"FAD-inf {_f(s.get('fad_inf'))}",
                file=sys.stderr,
            )
            if v.get("edit"):
                ed = v["edit"]
                print(
                    f"  edit {_f(ed.get('fraction'))}: {_f(ed.get('speedup_wall_to_audio_median'))}x sooner to "
                    f"audio, {_f(ed.get('speedup_wall_median'))}x total, MACs {_f(ed.get('macs_ratio_median'))}x, "
                    f"LSD vs full {_f(ed.get('lsd_relative_median'))} of the edit's change",
                    file=sys.stderr,
                )
        for note in results["notes"]:
            print(f"note: {note}", file=sys.stderr)
        print(f"wrote {out / 'results.json'} and {out / 'report.md'}", file=sys.stderr)
    return 0


def _f(v) -> str:
    return "–" if v is None else f"{v:.3g}"


def _compare(args: argparse.Namespace) -> int:
    from accelerando.bench.compare import compare_results, format_comparison, load_results
    from accelerando.bench.store import clean_json

    cmp = compare_results(load_results(args.a), load_results(args.b))
    print(json.dumps(clean_json(cmp)) if args.json else format_comparison(cmp))
    return 0


def _list(args: argparse.Namespace) -> int:
    from accelerando.bench.prompts import available_suites, load_suite
    from accelerando.bench.variants import known_techniques

    for sid in available_suites():
        s = load_suite(sid)
        durs = ", ".join(f"{d:g}" for d in sorted({p.duration for p in s.prompts}))
        print(f"suite {sid}: {len(s.prompts)} prompts x {durs} s  {s.description}")
    for kind, t in sorted(known_techniques().items()):
        print(f"technique {kind} (main argument: {t.arg}): {t.description}")
    return 0
