import json

import pytest


def test_demo_renders_analyses_and_round_trips(tmp_path, soundfont, monkeypatch, capsys):
    pytest.importorskip("librosa")
    from accelerando.demo import run_demo

    monkeypatch.setenv("ACCELERANDO_SOUNDFONT", soundfont)
    assert run_demo(tmp_path) == 0
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "demo.json").read_text())
    assert len(results) == 3
    for r in results:
        assert r["label_bpm"] > 0 and 0 <= r["beat_f"] <= 1 and r["codec_mrstft"] > 0
        assert (tmp_path / "codec").is_dir() and r["codec_audio"].endswith(".wav")
    assert out.count("codec ") == 3 and out.count("tempo ") == 3
