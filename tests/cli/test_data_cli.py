import json
import sys

import pytest

from accelerando.cli.main import main

pytest.importorskip("music21")


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--collections", "bach,mozartt"], "unknown collection 'mozartt'"),
        (["--instrumentations", "kazoo"], "unknown instrumentation 'kazoo'"),
        (["--soundfont", "/nonexistent/font.sf2"], "soundfont '/nonexistent/font.sf2' does not exist"),
        (["--sample-rate", "1000"], "sample_rate=1000"),
        (["--limit", "zero"], "--limit 'zero' is not a number"),
        (["--limit", "0"], "--limit 0 must be at least 1"),
        (["--variants", "0"], "variants=0"),
        (["--channels", "3"], "invalid choice: 3"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, needle):
    code, out, err = _run(capsys, "data", "build", "--out", str(tmp_path / "c"), "--quiet", *argv)
    assert code == 2
    assert needle in err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_unwritable_output_directory(tmp_path, capsys, soundfont):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _run(capsys, "data", "build", "--out", str(blocker / "c"), "--soundfont", soundfont, "--quiet")
    assert code == 2 and "is not writable" in err and str(blocker / "c") in err and "--out" in err


def test_missing_soundfont_names_the_package(tmp_path, capsys, monkeypatch):
    import accelerando.data.render as render

    monkeypatch.delenv("ACCELERANDO_SOUNDFONT", raising=False)
    monkeypatch.setattr(render, "SOUNDFONT_CANDIDATES", ("/nonexistent/a.sf2",))
    code, _, err = _run(capsys, "data", "build", "--out", str(tmp_path / "c"), "--quiet")
    assert code == 2 and "fluid-soundfont-gm" in err


def test_missing_fluidsynth_names_the_package(tmp_path, capsys, monkeypatch, soundfont):
    monkeypatch.setitem(sys.modules, "fluidsynth", None)  # makes `import fluidsynth` fail
    code, _, err = _run(capsys, "data", "build", "--out", str(tmp_path / "c"), "--soundfont", soundfont, "--quiet")
    assert code == 2 and "fluidsynth" in err.lower() and "install" in err


def test_format_change_in_an_existing_corpus_is_refused(tmp_path, capsys, soundfont):
    args = ["data", "build", "--out", str(tmp_path / "c"), "--soundfont", soundfont, "--quiet"]
    args += ["--collections", "bach", "--limit", "1", "--variants", "1", "--max-seconds", "8", "--workers", "1"]
    assert _run(capsys, *args)[0] == 0
    code, _, err = _run(capsys, *args, "--sample-rate", "16000")
    assert code == 2 and "sample_rate=24000" in err and "--out" in err


def test_build_resume_and_manifest(tmp_path, capsys, soundfont, monkeypatch):
    out = tmp_path / "c"
    args = ["data", "build", "--out", str(out), "--soundfont", soundfont, "--quiet", "--json"]
    args += ["--collections", "bach,ryansMammoth", "--limit", "1", "--variants", "2", "--max-seconds", "8"]
    args += ["--workers", "1"]
    code, stdout, _ = _run(capsys, *args)
    assert code == 0
    summary = json.loads(stdout)
    assert summary["clips"] == 4 and set(summary["hours_by"]["collection"]) == {"bach", "ryansMammoth"}
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    for r in rows:
        label = json.loads((out / r["path"] / "label.json").read_text())
        assert label["split"] == r["split"] and label["duration"] <= 8 + 1.0 + 1e-6
        assert (out / r["path"] / "mix.flac").exists()
    # a second run renders nothing: every score is already done
    import accelerando.data.clip as clip

    def boom(*a, **k):
        raise AssertionError("a finished clip was rendered again")

    monkeypatch.setattr(clip, "write_clip", boom)
    code, stdout, err = _run(capsys, *args)
    assert code == 0 and json.loads(stdout)["clips"] == 4


def test_failed_render_is_logged_and_leaves_no_clip(tmp_path, capsys, soundfont, monkeypatch):
    import soundfile

    calls = {"n": 0}
    real_write = soundfile.write

    def flaky(path, *a, **k):
        calls["n"] += 1
        if "stems" in str(path):
            raise OSError("disk full (simulated)")
        return real_write(path, *a, **k)

    monkeypatch.setattr(soundfile, "write", flaky)
    out = tmp_path / "c"
    args = ["data", "build", "--out", str(out), "--soundfont", soundfont, "--quiet", "--json", "--workers", "1"]
    args += ["--collections", "bach", "--limit", "2", "--variants", "1", "--max-seconds", "8"]
    code, stdout, _ = _run(capsys, *args)
    assert code == 0 and json.loads(stdout)["clips"] == 0
    failures = [json.loads(x) for x in (out / "failures.jsonl").read_text().splitlines()]
    assert len(failures) == 2 and "disk full" in failures[0]["error"]
    assert not list((out / "clips").glob("*/*/label.json"))
    # the next run (disk fixed) cleans the half-written directories and finishes the clips
    monkeypatch.setattr(soundfile, "write", real_write)
    code, stdout, _ = _run(capsys, *args)
    assert json.loads(stdout)["clips"] == 2
    assert not list((out / "clips").glob("*/.tmp-*"))


def test_python_dash_m_and_help(capsys):
    import subprocess

    res = subprocess.run([sys.executable, "-m", "accelerando", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("accelerando ")
    code, _, err = _run(capsys, "nonsense")
    assert code == 2 and "invalid choice" in err
