"""``accelerando data build --splits``: only the scores of the named splits are rendered, and a bad split name is a
one-line error."""

from accelerando.cli.main import main
from accelerando.data import build
from accelerando.data.scores import ScoreRef
from accelerando.data.split import split_for


def test_build_renders_only_the_named_splits(tmp_path, monkeypatch):
    refs = [ScoreRef(f"bach/piece{i}.mxl", "bach", f"piece{i}.mxl") for i in range(200)]
    rendered = []

    def fake_run(cfg, todo):
        for ref in todo:
            rendered.append(ref.score_id)
            yield {"score_id": ref.score_id, "clips": [], "seconds": 0.0, "error": None}

    monkeypatch.setattr(build, "list_scores", lambda collections, limit: refs)
    monkeypatch.setattr(build, "_run", fake_run)
    monkeypatch.setattr("accelerando.data.render.find_soundfont", lambda sf: "/x/GM.sf2")
    monkeypatch.setattr("accelerando.data.render.check_fluidsynth", lambda: None)
    res = build.build_corpus(build.BuildConfig(out=tmp_path, splits=("test",)), progress=False)
    expected = [r.score_id for r in refs if split_for(r.score_id) == "test"]
    assert 0 < len(expected) < len(refs)
    assert sorted(rendered) == sorted(expected) and res.scores_total == len(expected)


def test_bad_split_name_is_a_one_line_error(capsys, tmp_path):
    assert main(["data", "build", "--out", str(tmp_path), "--splits", "test,holdout"]) == 2
    err = capsys.readouterr().err.strip()
    assert "holdout" in err and "\n" not in err
