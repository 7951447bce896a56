import json

import pytest
import soundfile as sf

import accelerando.cli.generate as gen
from accelerando.cli.main import main
from accelerando.testing.models import tiny_pipeline


@pytest.fixture(autouse=True)
def _tiny(monkeypatch):
    monkeypatch.setattr(gen, "load_pipeline", lambda model: tiny_pipeline())


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_inpaint_extend_with_a_session(tmp_path, capsys):
    s, a = tmp_path / "sess", tmp_path / "a.wav"
    code, out, _ = _run(capsys, "generate", "x", "--bpm", "96", "--duration", "2", "--steps", "2", "--session", s,
                        "-o", a, "--json")  # fmt: skip
    rep = json.loads(out)
    assert code == 0 and rep["session"] == str(s) and rep["session_cache"]["cached_evals"] == 2
    assert (s / "session.json").is_file()
    b = tmp_path / "b.wav"
    code, out, err = _run(capsys, "inpaint", a, "--region", "0.5-1", "--session", s, "--seed", "3", "-o", b, "--json")
    rep = json.loads(out)
    assert code == 0 and rep["sparse"] is True and rep["bpm"] == 96  # the session's controls
    st = rep["sparse_edit"]
    assert 0 < st["tokens_recomputed"] < st["tokens"]
    x, _ = sf.read(a, dtype="float32")
    y, _ = sf.read(b, dtype="float32")
    assert (y[:12000] == x[:12000]).all() and (y[24000:] == x[24000:]).all() and not (y == x).all()
    # the session now follows b.wav: a second edit of b works, an edit of the stale a.wav is refused
    c = tmp_path / "c.wav"
    code, _, err = _run(capsys, "inpaint", a, "--region", "1-1.5", "--session", s, "-o", c)
    assert code == 2 and "does not match" in err and err.count("\n") == 1 and not c.exists()
    code, _, err = _run(capsys, "extend", b, "--seconds", "1", "--session", s, "-o", c)
    z, _ = sf.read(c, dtype="float32")
    assert code == 0 and len(z) == 72000 and (z[:48000] == y).all() and "sparse" in err


def test_edit_without_session_says_full_recompute(tmp_path, capsys):
    a = tmp_path / "a.wav"
    assert _run(capsys, "generate", "x", "--duration", "1", "--steps", "2", "-o", a)[0] == 0
    code, out, err = _run(capsys, "inpaint", a, "--region", "0.2-0.5", "--steps", "2", "-o", tmp_path / "b.wav",
                          "--json")  # fmt: skip
    assert code == 0 and json.loads(out)["sparse"] is False and "recomputed" in err


def test_session_errors_are_one_line(tmp_path, capsys):
    s, a = tmp_path / "sess", tmp_path / "a.wav"
    assert _run(capsys, "generate", "x", "--duration", "1", "--steps", "2", "--session", s, "-o", a)[0] == 0
    before = {p: p.read_bytes() for p in [a, *s.rglob("*")] if p.is_file()}
    for argv, needle in [
        (["inpaint", a, "--region", "0.2-0.4", "--session", tmp_path / "none"], "not found"),
        (["inpaint", a, "--region", "0.2-0.4", "--session", s, "--bpm", "100"], "--bpm 100 differs"),
        (["inpaint", a, "--region", "0.2-0.4", "--session", s, "--steps", "4"], "--steps 4 differs"),
        (
            ["inpaint", a, "--region", "0.2-0.4", "--session", s, "--guidance-interval", "0.5,1"],
            "--guidance-interval 0.5,1 differs from the session (all)",
        ),
        (["generate", "x", "--session", s, "--variations", "2"], "--variations 2"),
        (
            [
                "generate",
                "x",
                "--duration",
                "1",
                "--steps",
                "2",
                "--session",
                tmp_path / "t",
                "--cache-mb",
                "0.001",
                "--over-budget",
                "refuse",
                "-o",
                tmp_path / "t.wav",
            ],
            "budget",
        ),  # fmt: skip
    ]:
        code, _, err = _run(capsys, *argv, "-o", tmp_path / "o.wav") if "-o" not in argv else _run(capsys, *argv)
        assert code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
    (s / load_current(s) / "cache.safetensors").write_bytes(b"garbage")
    code, _, err = _run(capsys, "inpaint", a, "--region", "0.2-0.4", "--session", s, "-o", tmp_path / "o.wav")
    assert code == 2 and "corrupt" in err and err.count("\n") == 1 and not (tmp_path / "o.wav").exists()
    assert all(p.read_bytes() == raw for p, raw in before.items() if p.name != "cache.safetensors")
    assert not (tmp_path / "t").exists()


def load_current(s):
    return json.loads((s / "session.json").read_text())["current"]


def test_unet_model_session_runs_windowed(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(gen, "load_pipeline", lambda model: tiny_pipeline(backbone="unet"))
    s, a, b = tmp_path / "sess", tmp_path / "a.wav", tmp_path / "b.wav"
    code, out, _ = _run(capsys, "generate", "x", "--duration", "6", "--steps", "2", "--session", s, "-o", a, "--json")
    assert code == 0 and json.loads(out)["session_cache"]["cache_mb"] < 0.1  # GroupNorm statistics: kilobytes
    code, out, _ = _run(capsys, "inpaint", a, "--region", "3-3.2", "--session", s, "-o", b, "--json")
    st = json.loads(out)["sparse_edit"]
    assert code == 0 and st["cache_update"] == "reuse" and st["sparse_evals"] == 2
    assert 0 < st["tokens_recomputed"] < st["units_computed"] < st["tokens"]  # region + halo < receptive windows
    x, _ = sf.read(a, dtype="float32")
    y, _ = sf.read(b, dtype="float32")
    assert (y[:72000] == x[:72000]).all() and (y[76800:] == x[76800:]).all() and not (y == x).all()


def test_a_session_from_before_guidance_intervals_refuses_the_flag(tmp_path, capsys):
    s, a = tmp_path / "sess", tmp_path / "a.wav"
    assert _run(capsys, "generate", "x", "--duration", "1", "--steps", "2", "--session", s, "-o", a)[0] == 0
    mpath = s / load_current(s) / "manifest.json"
    m = json.loads(mpath.read_text())
    del m["controls"]["guidance_interval"]  # as recorded before the setting existed: replays every step guided
    mpath.write_text(json.dumps(m))
    argv = ["inpaint", a, "--region", "0.2-0.4", "--session", s, "-o", tmp_path / "b.wav"]
    code, _, err = _run(capsys, *argv, "--guidance-interval", "0.7,1")
    assert code == 2 and "--guidance-interval 0.7,1 differs from the session (all)" in err
    assert _run(capsys, *argv, "--guidance-interval", "all")[0] == 0
