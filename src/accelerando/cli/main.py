"""Entry point of the `accelerando` console script.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets ``func`` to a callable
taking the parsed arguments and returning an exit code. Bad input raises :class:`accelerando.errors.UserError`,
which is printed as one line on stderr with exit code 2.
"""

import argparse
import importlib
import sys

from accelerando import __version__
from accelerando.errors import UserError
from accelerando.runtime import apply_malloc_setting

__all__ = ["main", "build_parser"]

# Subcommand modules, imported lazily so `accelerando --help` stays fast.
_COMMANDS = (
    "accelerando.cli.data",
    "accelerando.cli.demo",
    "accelerando.cli.train",
    "accelerando.cli.generate",
    "accelerando.cli.eval",
    "accelerando.cli.listen",
    "accelerando.cli.bench",
    "accelerando.cli.quantize",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage + message and exits 2; keep it to one line
        raise UserError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="accelerando", description="Efficient music generation, full stack.")
    parser.add_argument("--version", action="version", version=f"accelerando {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        apply_malloc_setting()  # keep freed memory in the process (accelerando.runtime)
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return 2
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; finished work is kept and a rerun resumes", file=sys.stderr)
        return 130
