"""Listening-test answers in SQLite, durable per answer.

The database runs in WAL mode with ``synchronous=FULL``. Each submitted page is written in one transaction that
commits before the HTTP response is sent, so once a listener sees the next page, the answer is on disk and
survives a crash of the server (or of the machine). Each call opens its own connection, so the store is safe to
use from the server's worker threads.
"""

import secrets
import sqlite3
import time
from contextlib import closing
from pathlib import Path

__all__ = ["AnswerStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS listeners (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS mushra (
    listener TEXT NOT NULL REFERENCES listeners(id),
    trial TEXT NOT NULL,
    condition TEXT NOT NULL,
    score REAL NOT NULL CHECK (score >= 0 AND score <= 100),
    submitted REAL NOT NULL,
    PRIMARY KEY (listener, trial, condition)
);
CREATE TABLE IF NOT EXISTS abx (
    listener TEXT NOT NULL REFERENCES listeners(id),
    comparison TEXT NOT NULL,
    repeat INTEGER NOT NULL,
    x_is TEXT NOT NULL CHECK (x_is IN ('A', 'B')),
    answer TEXT NOT NULL CHECK (answer IN ('A', 'B')),
    correct INTEGER NOT NULL,
    submitted REAL NOT NULL,
    PRIMARY KEY (listener, comparison, repeat)
);
"""


class AnswerStore:
    """Answers of one listening test, in the SQLite file ``path`` (created with its tables when missing)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as conn:
            conn.execute("PRAGMA journal_mode=WAL")  # persistent: stored in the database file
            conn.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)  # autocommit; explicit BEGIN below
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _write(self, sql: str, rows: list[tuple]) -> None:
        """Run ``sql`` over ``rows`` in one transaction; it is committed (and synced) when this returns."""
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(sql, rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        with closing(self._connect()) as conn:
            return conn.execute(sql, params).fetchall()

    def add_listener(self, name: str) -> str:
        """Register a listener and return their id, a random token used in their page URLs."""
        token = secrets.token_hex(8)
        self._write("INSERT INTO listeners (id, name, created) VALUES (?, ?, ?)", [(token, name, time.time())])
        return token

    def listener_name(self, listener: str) -> str | None:
        """The name given for ``listener``, or ``None`` for an unknown id."""
        rows = self._read("SELECT name FROM listeners WHERE id = ?", (listener,))
        return rows[0][0] if rows else None

    def listeners(self) -> dict[str, str]:
        """Listener id -> name, in order of arrival."""
        return dict(self._read("SELECT id, name FROM listeners ORDER BY created, id"))

    def save_mushra(self, listener: str, trial: str, scores: dict[str, float]) -> None:
        """Store one MUSHRA page (condition -> score in [0, 100]) atomically; a resubmission replaces it."""
        now = time.time()
        rows = [(listener, trial, cond, float(score), now) for cond, score in scores.items()]
        self._write("INSERT OR REPLACE INTO mushra VALUES (?, ?, ?, ?, ?)", rows)

    def save_abx(self, listener: str, comparison: str, repeat: int, x_is: str, answer: str) -> None:
        """Store one ABX answer; ``correct`` is derived here from the hidden ``x_is``."""
        row = (listener, comparison, int(repeat), x_is, answer, int(x_is == answer), time.time())
        self._write("INSERT OR REPLACE INTO abx VALUES (?, ?, ?, ?, ?, ?, ?)", [row])

    def done(self, listener: str) -> tuple[set[str], set[tuple[str, int]]]:
        """``(mushra trial names, {(comparison name, repeat)})`` that ``listener`` has answered."""
        mushra = {r[0] for r in self._read("SELECT DISTINCT trial FROM mushra WHERE listener = ?", (listener,))}
        abx = {(r[0], r[1]) for r in self._read("SELECT comparison, repeat FROM abx WHERE listener = ?", (listener,))}
        return mushra, abx

    def mushra_rows(self) -> list[tuple[str, str, str, float]]:
        """Every MUSHRA score as ``(listener, trial, condition, score)``."""
        return self._read("SELECT listener, trial, condition, score FROM mushra ORDER BY listener, trial, condition")

    def abx_rows(self) -> list[tuple[str, str, int, str, str, int]]:
        """Every ABX answer as ``(listener, comparison, repeat, x_is, answer, correct)``."""
        sql = (
            "SELECT listener, comparison, repeat, x_is, answer, correct FROM abx ORDER BY listener, comparison, repeat"
        )
        return self._read(sql)
