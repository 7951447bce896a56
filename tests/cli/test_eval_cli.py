import json

import numpy as np
import pytest
import soundfile as sf

from accelerando.cli.main import main

pytest.importorskip("librosa")
SR = 22050


def _clicks(path, bpm=120.0, seconds=12.0):
    y = np.zeros(int(seconds * SR))
    for b in np.arange(0.25, seconds - 0.5, 60.0 / bpm):
        i = int(b * SR)
        y[i : i + 64] += np.hanning(64) * np.sin(2 * np.pi * 2000 * np.arange(64) / SR)
    sf.write(path, y, SR, subtype="PCM_16")
    return y


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_single_file_and_paired_metrics(tmp_path, capsys):
    _clicks(tmp_path / "a.wav")
    code, out, _ = _run(
        capsys,
        "eval",
        "metrics",
        "--pred",
        str(tmp_path / "a.wav"),
        "--ref",
        str(tmp_path / "a.wav"),
        "--requested-bpm",
        "120",
        "--metrics",
        "tempo,lsd,mrstft,si_sdr",
        "--json",
    )
    assert code == 0
    res = json.loads(out)
    assert abs(res["tempo_bpm"] - 120) / 120 < 0.04 and res["tempo"]["acc1"] == 1.0
    assert res["lsd"] == 0.0 and res["mrstft"] == 0.0 and res["si_sdr"] > 60
    assert isinstance(res["key"], str) and res["sample_rate"] == SR


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--metrics", "fadd"], "unknown metric 'fadd'"),
        (["--metrics", "lsd"], "pass --ref"),
        (["--metrics", "structure"], "--ref-label"),
        (["--metrics", "key", "--requested-key", "H major"], "H major"),
    ],
)
def test_errors_are_one_line(tmp_path, capsys, extra, needle):
    _clicks(tmp_path / "a.wav")
    code, _, err = _run(capsys, "eval", "metrics", "--pred", str(tmp_path / "a.wav"), *extra)
    assert code == 2 and needle in err and err.count("\n") == 1


def test_missing_file_and_misaligned_reference(tmp_path, capsys):
    code, _, err = _run(capsys, "eval", "metrics", "--pred", str(tmp_path / "nope.wav"))
    assert code == 2 and "nope.wav" in err
    _clicks(tmp_path / "a.wav", seconds=12)
    _clicks(tmp_path / "b.wav", seconds=10)
    code, _, err = _run(
        capsys,
        "eval",
        "metrics",
        "--pred",
        str(tmp_path / "a.wav"),
        "--ref",
        str(tmp_path / "b.wav"),
        "--metrics",
        "lsd",
    )
    assert code == 2 and "align them first" in err


def _noise_dir(path, seed, tone=False, n=3, seconds=30.0):
    path.mkdir()
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    for i in range(n):
        y = 0.1 * rng.standard_normal(t.size)
        if tone:
            y = 0.3 * np.sin(2 * np.pi * (220 + 110 * i) * t) + 0.01 * y
        sf.write(path / f"{i}.wav", y, SR, subtype="PCM_16")
    return path


def test_distribution_metrics_on_directories(tmp_path, capsys):
    ref = _noise_dir(tmp_path / "ref", 0)
    same = _noise_dir(tmp_path / "same", 1)
    tones = _noise_dir(tmp_path / "tones", 2, tone=True)
    res = {}
    for name, d in (("same", same), ("tones", tones)):
        code, out, _ = _run(
            capsys, "eval", "metrics", "--pred", str(d), "--ref", str(ref), "--metrics", "fad,per_clip_fad,kad"
        )
        assert code == 0
        res[name] = json.loads(out)
    assert res["same"]["n_pred_files"] == 3 and res["same"]["embedder"].startswith("emb-melflow")
    assert 0 <= res["same"]["fad"] < res["tones"]["fad"]
    assert len(res["tones"]["per_clip_fad"]) == 3 and res["same"]["kad"] < res["tones"]["kad"]


def test_distribution_metric_errors_are_one_line(tmp_path, capsys):
    ref = _noise_dir(tmp_path / "ref", 0, n=1, seconds=3.0)
    (tmp_path / "empty").mkdir()
    cases = [
        (["--pred", str(ref), "--metrics", "fad"], "pass --ref"),
        (["--pred", str(ref), "--ref", str(tmp_path / "empty"), "--metrics", "fad"], "no audio files"),
        (["--pred", str(ref), "--ref", str(ref), "--metrics", "fad,tempo"], "cannot be mixed"),
        (["--pred", str(ref), "--metrics", "tempo"], "is a directory"),
        (["--pred", str(ref), "--ref", str(ref), "--metrics", "fad"], "need at least"),
    ]
    for argv, msg in cases:
        code, out, err = _run(capsys, "eval", "metrics", *argv)
        assert code == 2 and out == "" and msg in err and len(err.strip().splitlines()) == 1, (argv, err)
