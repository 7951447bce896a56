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
        (["--metrics", "fad"], "unknown metric 'fad'"),
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
