import json

import pytest
import yaml

from accelerando.cli import main as cli_main
from accelerando.listen.config import load_config
from accelerando.listen.store import AnswerStore


@pytest.fixture
def run(monkeypatch, capsys):
    """``run(*argv) -> (code, out, err)`` through the real ``main``, with the listen commands registered."""
    if "accelerando.cli.listen" not in cli_main._COMMANDS:
        monkeypatch.setattr(cli_main, "_COMMANDS", (*cli_main._COMMANDS, "accelerando.cli.listen"))

    def _run(*argv):
        code = cli_main.main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return _run


def test_init_writes_a_valid_test(run, clips):
    (clips / "ref" / "only_ref.wav").write_bytes((clips / "ref" / "c1.wav").read_bytes())
    out = clips / "sub" / "t.yaml"
    code, _, err = run(
        "listen", "init", "--reference", clips / "ref", "--condition", f"good={clips / 'good'}",
        "--condition", f"bad={clips / 'bad'}", "--abx-repeats", 3, "-o", out,
    )  # fmt: skip
    assert code == 0, err
    assert "skipped 1 clip(s)" in err and "only_ref.wav" in err
    cfg = load_config(out)
    assert [t.name for t in cfg.mushra] == ["c1", "c2"] and cfg.condition_names == ["good", "bad"]
    assert cfg.anchors  # 16 kHz clips are enough for the 7 kHz anchor
    assert [(c.name, c.repeats) for c in cfg.abx] == [("c1-good", 3), ("c1-bad", 3), ("c2-good", 3), ("c2-bad", 3)]
    assert yaml.safe_load(out.read_text())["mushra"]["trials"][0]["reference"] == "../ref/c1.wav"  # relative paths


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--condition", "reference=good"], "reserved"),
        (["--condition", "nodir"], "NAME=DIR"),
        (["--condition", "x=missing_dir"], "not a directory"),
        ([], "at least one --condition"),
    ],
)
def test_init_errors_are_one_line(run, clips, monkeypatch, extra, message):
    monkeypatch.chdir(clips)
    code, _, err = run("listen", "init", "--reference", "ref", *extra, "-o", "t.yaml")
    assert code == 2 and message in err and err.count("\n") == 1


def test_serve_builds_the_app_and_runs_uvicorn(run, config_path, tmp_path, monkeypatch):
    uvicorn = pytest.importorskip("uvicorn")
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    code, _, err = run("listen", "serve", "--config", config_path, "--db", tmp_path / "x.sqlite", "--port", 9999)
    assert code == 0 and "http://127.0.0.1:9999/" in err
    assert seen["host"] == "127.0.0.1" and seen["port"] == 9999
    assert seen["app"].state.store.path == tmp_path / "x.sqlite" and (tmp_path / "x.sqlite").is_file()
    code, _, err = run("listen", "serve", "--config", tmp_path / "nope.yaml")
    assert code == 2 and "listening-test config not found" in err
    code, _, err = run("listen", "serve", "--config", config_path, "--port", 70000)
    assert code == 2 and "--port must be in 1..65535" in err


def test_report_markdown_and_json(run, config_path, tmp_path):
    cfg = load_config(config_path)
    store = AnswerStore(cfg.default_db_path())
    for k in range(4):
        lid = store.add_listener(f"l{k}")
        for t in ("c1", "c2"):
            ref = 30.0 if k == 3 else 100.0  # l3 fails post-screening
            store.save_mushra(lid, t, {"good": 95.0 - k, "bad": 40.0 + k, "reference": ref, "anchor_7k": 60.0,
                                       "anchor_3.5k": 20.0})  # fmt: skip
        store.save_abx(lid, "c1-bad", 0, "A", "A")
        store.save_abx(lid, "c1-bad", 1, "B", "B")
    code, out, err = run("listen", "report", "--config", config_path, "-o", tmp_path / "r" / "report.md")
    assert code == 0, err
    assert "## MUSHRA" in out and "## ABX" in out and "excluded l3" in out and "| c1-bad | 8 | 8 | 1.00 |" in out
    assert "Friedman test across good, bad, reference (6 blocks)" in out
    assert (tmp_path / "r" / "report.md").read_text().strip() == out.strip()
    code, out, _ = run("listen", "report", "--config", config_path, "--json")
    rep = json.loads(out)
    assert rep["abx"][0]["p_value"] == pytest.approx(0.5**8)
    assert list(rep["mushra"]["excluded"]) == [lid for lid, name in store.listeners().items() if name == "l3"]
    means = {c["condition"]: c["mean"] for c in rep["mushra"]["conditions"]}
    assert means["reference"] == 100.0 and means["good"] == pytest.approx(94.0)
    code, _, err = run("listen", "report", "--config", config_path, "--db", tmp_path / "none.sqlite")
    assert code == 2 and "no answers database" in err


def test_init_turns_anchors_off_for_low_sample_rates(run, tmp_path):
    import numpy as np
    import soundfile as sf

    for d in ("ref", "x"):
        (tmp_path / d).mkdir()
        sf.write(tmp_path / d / "a.wav", np.zeros(4000), 8000, subtype="PCM_16")
    code, _, err = run("listen", "init", "--reference", tmp_path / "ref", "--condition", f"x={tmp_path / 'x'}",
                       "-o", tmp_path / "t.yaml")  # fmt: skip
    assert code == 0, err
    assert load_config(tmp_path / "t.yaml").anchors is False
