"""`accelerando listen init|serve|report`: Stage-2 listening tests (MUSHRA and ABX) served from a local web page."""

import argparse
import json
import sys
from pathlib import Path

from accelerando.errors import UserError

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("listen", help="MUSHRA and ABX listening tests: serve the pages, report the statistics")
    lsub = p.add_subparsers(dest="listen_command", metavar="ACTION", parser_class=type(p))

    s = lsub.add_parser("serve", help="serve the test pages; answers go to SQLite")
    s.add_argument("--config", type=Path, required=True, help="test definition (YAML, see docs/listening.md)")
    s.add_argument("--db", type=Path, default=None, help="answers database (default: <config>.answers.sqlite)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=_port, default=8765)
    s.set_defaults(func=_serve)

    r = lsub.add_parser("report", help="statistics of the answers: ABX binomial p, MUSHRA screening and tests")
    r.add_argument("--config", type=Path, required=True)
    r.add_argument("--db", type=Path, default=None, help="answers database (default: <config>.answers.sqlite)")
    r.add_argument("--json", action="store_true", help="print the report as one JSON object instead of Markdown")
    r.add_argument("-o", "--out", type=Path, default=None, help="also write the Markdown (or JSON) report here")
    r.set_defaults(func=_report)

    i = lsub.add_parser("init", help="write a test file from a reference directory and one directory per condition")
    i.add_argument("--reference", type=Path, required=True, help="directory of reference clips")
    i.add_argument(
        "--condition",
        action="append",
        default=[],
        type=_condition,
        metavar="NAME=DIR",
        help="a condition under test: clips with the reference's file names (repeat the flag)",
    )
    i.add_argument("--abx-repeats", type=int, default=0, help="add ABX reference-vs-condition pages, N per clip")
    i.add_argument("--title", default="Listening test")
    i.add_argument("-o", "--out", type=Path, required=True, help="test file to write, e.g. test.yaml")
    i.set_defaults(func=_init)
    p.set_defaults(func=lambda args: p.print_help(sys.stderr) or 2)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--port must be an integer, got {text!r}") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"--port must be in 1..65535, got {port}")
    return port


def _condition(text: str) -> tuple[str, Path]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"--condition must look like NAME=DIR, got {text!r}")
    return name, Path(folder)


def _db(args: argparse.Namespace, config) -> Path:
    return args.db if args.db is not None else config.default_db_path()


def _serve(args: argparse.Namespace) -> int:
    from accelerando.listen.config import load_config

    config = load_config(args.config)
    try:
        import uvicorn

        from accelerando.listen.server import create_app
    except ImportError as err:
        raise UserError(f"`listen serve` needs the web extra: pip install 'accelerando[listen]' ({err})") from None
    app = create_app(config, _db(args, config))
    print(f"listening test {config.title!r}: open http://{args.host}:{args.port}/ (Ctrl-C stops)", file=sys.stderr)
    print(f"answers go to {app.state.store.path}", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _report(args: argparse.Namespace) -> int:
    from accelerando.listen.config import load_config
    from accelerando.listen.report import build_report, render_markdown
    from accelerando.listen.store import AnswerStore

    config = load_config(args.config)
    db = _db(args, config)
    if not db.is_file():
        raise UserError(f"no answers database at {db}; run `accelerando listen serve` first or pass --db")
    report = build_report(config, AnswerStore(db))
    text = json.dumps(report, indent=2) if args.json else render_markdown(report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


def _init(args: argparse.Namespace) -> int:
    from accelerando.listen.scaffold import scaffold_config, write_config

    conditions = dict(args.condition)
    if len(conditions) != len(args.condition):
        raise UserError("each --condition NAME must be unique")
    if args.abx_repeats < 0:
        raise UserError(f"--abx-repeats must be >= 0, got {args.abx_repeats}")
    data, skipped = scaffold_config(args.reference, conditions, args.out, args.abx_repeats, args.title)
    if skipped:
        print(f"skipped {len(skipped)} clip(s) missing from a condition: {', '.join(skipped)}", file=sys.stderr)
    write_config(data, args.out)
    print(f"wrote {args.out}: {len(data['mushra']['trials'])} MUSHRA trials", file=sys.stderr)
    return 0
