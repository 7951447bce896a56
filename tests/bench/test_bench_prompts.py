import json

import pytest
from bench_helpers import write_suite

from accelerando.bench.prompts import FAMILIES, available_suites, instrument_family, load_suite, select_prompts
from accelerando.conditioning.controls import BPM_RANGE, ControlSpec
from accelerando.data.instrumentations import INSTRUMENTATIONS
from accelerando.data.split import split_for
from accelerando.errors import UserError


@pytest.mark.parametrize(("name", "n", "seconds"), [("quick", 16, 10.0), ("full", 64, 20.0)])
def test_shipped_suites(name, n, seconds):
    assert f"{name}-v1" in available_suites()
    suite = load_suite(name)
    assert suite.id == f"{name}-v1" and len(suite.prompts) == n
    assert len({p.id for p in suite.prompts}) == n and len({p.seed for p in suite.prompts}) == n
    assert {p.duration for p in suite.prompts} == {seconds}
    assert len({p.family for p in suite.prompts}) == len(set(FAMILIES.values()))  # every family is covered
    for p in suite.prompts:
        assert split_for(p.score_id) == "test", p.clip_id  # never a training or validation score
        assert BPM_RANGE[0] <= p.bpm <= BPM_RANGE[1]
        assert p.family == instrument_family(p.instruments)
        ControlSpec.from_user(duration=p.duration, bpm=p.bpm, key=p.key, meter=p.meter, instruments=p.instruments)
    assert load_suite(f"{name}-v1").sha256 == suite.sha256


def test_every_instrumentation_has_a_family():
    assert set(INSTRUMENTATIONS) <= set(FAMILIES)


def test_unknown_suite_and_bad_files(tmp_path):
    with pytest.raises(UserError, match="unknown suite 'huge'.*quick"):
        load_suite("huge")
    with pytest.raises(UserError, match="suite file not found"):
        load_suite(str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "other"}))
    with pytest.raises(UserError, match="schema"):
        load_suite(str(bad))
    path = write_suite(tmp_path / "s.json")
    data = json.loads(path.read_text())
    del data["prompts"][0]["seed"]
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match="lacks seed"):
        load_suite(str(path))


def test_limit(tmp_path):
    suite = load_suite(str(write_suite(tmp_path / "s.json", n=3)))
    assert [p.id for p in suite.limit(2).prompts] == ["p0", "p1"]
    assert suite.limit(None) is suite
    with pytest.raises(UserError, match="--limit 0"):
        suite.limit(0)


def _rows():
    rows = []
    for coll, n_scores in (("a", 3), ("b", 2), ("c", 1)):
        for s in range(n_scores):
            for inst in ("piano", "brass", "choir"):
                split = "test" if s < n_scores else "train"
                rows.append(
                    {
                        "clip_id": f"{coll}{s}-{inst}",
                        "score_id": f"{coll}/{s}",
                        "collection": coll,
                        "split": split,
                        "instrumentation": inst,
                        "bpm": 100.0,
                        "key": "C major",
                        "meter": "4/4",
                        "caption": f"{coll} {s} {inst}",
                    }
                )
    rows.append(dict(rows[0], clip_id="train-clip", score_id="t/0", split="train"))
    rows.append(dict(rows[0], clip_id="too-fast", score_id="f/0", bpm=230.0))
    return rows


def test_select_prompts_is_deterministic_and_spread():
    rows = _rows()
    picked = select_prompts(rows, 6, 10.0, salt="x", seed_base=5)
    assert picked == select_prompts(list(reversed(rows)), 6, 10.0, salt="x", seed_base=5)
    assert [p.seed for p in picked] == list(range(5, 11))
    ids = {p.clip_id for p in picked}
    assert "train-clip" not in ids and "too-fast" not in ids
    # all six scores are used once before any score repeats
    assert len({p.score_id for p in picked}) == 6
    # round robin over collections: a, b, c, a, b, a
    assert [p.collection for p in picked] == ["a", "b", "c", "a", "b", "a"]
    # families balanced: 3 families over 6 prompts -> 2 each
    fams = [p.family for p in picked]
    assert sorted(fams.count(f) for f in set(fams)) == [2, 2, 2]
    # more prompts than scores: a second clip of a score is allowed
    assert len(select_prompts(rows, 9, 10.0, salt="x")) == 9
    with pytest.raises(ValueError, match="only 18 usable"):
        select_prompts(rows, 40, 10.0, salt="x")
