import re

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from accelerando.listen.config import load_config  # noqa: E402
from accelerando.listen.design import abx_x, mushra_slots  # noqa: E402
from accelerando.listen.server import create_app  # noqa: E402
from accelerando.listen.store import AnswerStore  # noqa: E402


@pytest.fixture
def setup(config_path, tmp_path):
    cfg = load_config(config_path)
    db = tmp_path / "answers.sqlite"
    return cfg, db, TestClient(create_app(cfg, db))


def _start(client, name="ann") -> tuple[str, str]:
    r = client.post("/start", data={"name": name})
    assert r.status_code == 200
    lid = re.search(r"/l/([0-9a-f]+)/", str(r.url)).group(1)
    return lid, str(r.url)


def test_full_round_trip_lands_in_sqlite(setup):
    cfg, db, client = setup
    assert "tiny test" in client.get("/").text
    lid, url = _start(client)
    assert "/mushra/" in url  # MUSHRA pages come first
    wanted_scores = {"good": 91.0, "bad": 35.0, "reference": 100.0, "anchor_7k": 60.0, "anchor_3.5k": 20.0}
    answers = {}
    for _ in range(10):
        page = client.get(url)
        if "/mushra/" in url:
            i = int(url.rsplit("/", 1)[1])
            slots = mushra_slots(cfg, lid, i)
            assert page.text.count('type="range"') == len(slots) == 5
            assert not any(s in page.text for s in ("good/", "bad/", "anchor_", ".wav"))  # blind: no names or files
            r = client.post(url, data={f"score_{k}": str(wanted_scores[c]) for k, c in enumerate(slots)})
        else:
            i, rep = map(int, url.rsplit("/", 2)[1:])
            answer = abx_x(cfg, lid, i, rep) if rep == 0 else "AB"[abx_x(cfg, lid, i, rep) == "A"]
            answers[rep] = answer
            r = client.post(url, data={"answer": answer})
        assert r.status_code == 200
        url = str(r.url)
        if "All done" in r.text:
            break
    else:
        pytest.fail("never reached the thank-you page")
    store = AnswerStore(db)
    rows = store.mushra_rows()
    assert len(rows) == 10 and all(score == wanted_scores[c] for _, _, c, score in rows)
    assert {t for _, t, _, _ in rows} == {"c1", "c2"}
    abx = store.abx_rows()
    assert [(r[1], r[2], r[4], r[5]) for r in abx] == [("c1-bad", 0, answers[0], 1), ("c1-bad", 1, answers[1], 0)]
    assert "All done, ann" in client.get(f"/l/{lid}").text  # revisiting after the end


def test_audio_slots_serve_the_right_files(setup):
    cfg, _, client = setup
    lid, _ = _start(client)
    trial = cfg.mushra[0]
    for k, cond in enumerate(mushra_slots(cfg, lid, 0)):
        body = client.get(f"/audio/{lid}/mushra/0/{k}").content
        if cond == "reference":
            assert body == trial.reference.read_bytes()
        elif cond in trial.conditions:
            assert body == trial.conditions[cond].read_bytes()
        else:
            assert body[:4] == b"RIFF" and body != trial.reference.read_bytes()  # a low-pass anchor
    assert client.get(f"/audio/{lid}/mushra/0/ref").content == trial.reference.read_bytes()
    x = client.get(f"/audio/{lid}/abx/0/0/X").content
    assert x == (cfg.abx[0].a if abx_x(cfg, lid, 0, 0) == "A" else cfg.abx[0].b).read_bytes()
    ranged = client.get(f"/audio/{lid}/abx/0/0/A", headers={"Range": "bytes=0-3"})
    assert ranged.status_code == 206 and ranged.content == b"RIFF"  # seeking in <audio> needs range requests


def test_bad_input_is_refused_and_nothing_stored(setup):
    cfg, db, client = setup
    lid, _ = _start(client)
    n = len(mushra_slots(cfg, lid, 0))
    form = {f"score_{k}": "50" for k in range(n)}
    for bad in (
        {**form, "score_0": "101"},
        {**form, "score_1": "abc"},
        {k: v for k, v in form.items() if k != "score_2"},
    ):
        r = client.post(f"/l/{lid}/mushra/0", data=bad)
        assert r.status_code == 400 and "score must be a number from 0 to 100" in r.text
    assert client.post(f"/l/{lid}/abx/0/0", data={"answer": "C"}).status_code == 400
    assert AnswerStore(db).mushra_rows() == [] and AnswerStore(db).abx_rows() == []
    assert client.post("/start", data={"name": "   "}).status_code == 400
    assert client.get("/l/0123456789abcdef/mushra/0").status_code == 404
    assert client.get(f"/l/{lid}/mushra/7").status_code == 404
    assert client.get(f"/l/{lid}/abx/0/5").status_code == 404
    assert client.get(f"/audio/{lid}/mushra/0/99").status_code == 404


def test_answers_persist_across_app_restart(setup):
    cfg, db, client = setup
    lid, url = _start(client)
    n = len(mushra_slots(cfg, lid, 0))
    i = int(url.rsplit("/", 1)[1])
    client.post(url, data={f"score_{k}": "42" for k in range(n)})
    restarted = TestClient(create_app(load_config(cfg.path), db))  # a new app on the same database
    r = restarted.get(f"/l/{lid}")
    assert r.status_code == 200 and str(r.url).endswith(f"/mushra/{1 - i}")  # resumes at the unanswered trial
    assert len(AnswerStore(db).mushra_rows()) == n
