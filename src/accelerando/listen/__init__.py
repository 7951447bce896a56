"""Stage-2 listening tests: MUSHRA and ABX pages served locally, answers in SQLite, statistics in a report.

See ``docs/listening.md``. The web stack (FastAPI, uvicorn) is imported only by :func:`create_app` and the CLI.
"""

from .config import ListenConfig, load_config
from .report import build_report, render_markdown
from .server import create_app
from .store import AnswerStore

__all__ = ["AnswerStore", "ListenConfig", "build_report", "create_app", "load_config", "render_markdown"]
