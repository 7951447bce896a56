"""`accelerando demo`: the main job with the built-in components (see README)."""

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="generate 20 s with the built-in generator (or analyse corpus excerpts)")
    p.add_argument("--out", default=None, help="where to write (default: $ACCELERANDO_CACHE/demo)")
    p.add_argument("--model", default=None, help="generator .safetensors (default: the built-in one if shipped)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from accelerando.demo import run_demo

    return run_demo(args.out, args.model)
