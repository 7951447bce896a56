import json

import pytest


def test_demo_renders_analyses_and_round_trips(tmp_path, soundfont, monkeypatch, capsys):
    pytest.importorskip("librosa")
    from accelerando.demo import run_corpus_demo

    monkeypatch.setenv("ACCELERANDO_SOUNDFONT", soundfont)
    assert run_corpus_demo(tmp_path) == 0
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "demo.json").read_text())
    assert len(results) == 3
    for r in results:
        assert r["label_bpm"] > 0 and 0 <= r["beat_f"] <= 1 and r["codec_mrstft"] > 0
        assert (tmp_path / "codec").is_dir() and r["codec_audio"].endswith(".wav")
    assert out.count("codec ") == 3 and out.count("tempo ") == 3


def test_generation_demo_writes_wav_png_and_report(tmp_path, monkeypatch, capsys):
    pytest.importorskip("librosa")
    pytest.importorskip("matplotlib")
    from accelerando import demo
    from accelerando.audio import load
    from accelerando.pipelines.text_to_music import TextToMusicPipeline
    from accelerando.testing.models import tiny_pipeline

    monkeypatch.setattr(TextToMusicPipeline, "from_pretrained", classmethod(lambda cls, name: tiny_pipeline()))
    monkeypatch.setitem(demo.DEMO_REQUEST, "duration", 3.0)
    assert demo.run_demo(tmp_path, model="tiny") == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report == json.loads((tmp_path / "demo.json").read_text())
    wav, sr = load(report["outputs"][0])
    assert sr == report["sample_rate"] and abs(wav.shape[-1] / sr - 3.0) < 0.05
    assert (report["bpm"], report["key"], report["meter"]) == (96.0, "D major", "4/4")
    assert 0 <= report["key_score_mirex"] <= 1 and report["tempo_acc1"] in (0.0, 1.0)
    assert (tmp_path / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_spectrogram_png_rejects_bad_input(tmp_path):
    pytest.importorskip("matplotlib")
    import torch

    from accelerando.audio.spectrogram_png import save_spectrogram_png

    with pytest.raises(ValueError, match="png"):
        save_spectrogram_png(tmp_path / "x.jpg", torch.zeros(100), 8000)
    with pytest.raises(ValueError, match="shape"):
        save_spectrogram_png(tmp_path / "x.png", torch.zeros(1, 2, 3), 8000)
    p = save_spectrogram_png(tmp_path / "s.png", torch.randn(2, 8000) * 0.1, 8000, beats=[0.0, 0.5])
    assert p.stat().st_size > 1000 and not list(tmp_path.glob(".*tmp"))
