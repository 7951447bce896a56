import sqlite3
import subprocess
import sys
import textwrap

import pytest

from accelerando.listen.store import AnswerStore


def test_wal_mode_and_round_trip(tmp_path):
    store = AnswerStore(tmp_path / "a.sqlite")
    lid = store.add_listener("ann")
    store.save_mushra(lid, "c1", {"good": 95.0, "reference": 100.0})
    store.save_mushra(lid, "c1", {"good": 80.0, "reference": 100.0})  # a resubmission replaces the page
    store.save_abx(lid, "cmp", 0, "A", "B")
    store.save_abx(lid, "cmp", 1, "B", "B")
    assert store.listener_name(lid) == "ann" and store.listener_name("nobody") is None
    assert store.mushra_rows() == [(lid, "c1", "good", 80.0), (lid, "c1", "reference", 100.0)]
    assert store.abx_rows() == [(lid, "cmp", 0, "A", "B", 0), (lid, "cmp", 1, "B", "B", 1)]
    assert store.done(lid) == ({"c1"}, {("cmp", 0), ("cmp", 1)})
    with sqlite3.connect(tmp_path / "a.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_out_of_range_score_is_rejected_whole(tmp_path):
    store = AnswerStore(tmp_path / "a.sqlite")
    lid = store.add_listener("bob")
    with pytest.raises(sqlite3.IntegrityError):
        store.save_mushra(lid, "c1", {"good": 50.0, "bad": 101.0})
    assert store.mushra_rows() == []  # one transaction: nothing of the page was kept


def test_answers_survive_a_killed_process(tmp_path):
    """A writer that dies abruptly (os._exit, no cleanup) right after saving keeps every saved answer."""
    db = tmp_path / "a.sqlite"
    script = textwrap.dedent(
        f"""
        import os
        from accelerando.listen.store import AnswerStore
        store = AnswerStore({str(db)!r})
        lid = store.add_listener("carol")
        store.save_mushra(lid, "c1", {{"good": 70.0, "reference": 99.0}})
        store.save_abx(lid, "cmp", 0, "A", "A")
        print(lid, flush=True)
        os._exit(9)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 9, proc.stderr
    lid = proc.stdout.strip()
    store = AnswerStore(db)  # a fresh process view: a new connection to the same file
    assert store.listeners() == {lid: "carol"}
    assert sorted(store.mushra_rows()) == [(lid, "c1", "good", 70.0), (lid, "c1", "reference", 99.0)]
    assert store.abx_rows() == [(lid, "cmp", 0, "A", "A", 1)]
