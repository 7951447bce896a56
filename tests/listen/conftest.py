import numpy as np
import pytest
import soundfile as sf
import yaml

SR = 16000


def tone(path, freq: float, seconds: float = 0.5, sr: int = SR, amp: float = 0.3):
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, amp * np.sin(2 * np.pi * freq * t), sr, subtype="PCM_16")
    return path


@pytest.fixture
def clips(tmp_path):
    """Two clips: a reference and two conditions each, as tiny 16 kHz WAVs in tmp_path."""
    for d in ("ref", "good", "bad"):
        (tmp_path / d).mkdir()
    for k, name in enumerate(("c1.wav", "c2.wav")):
        tone(tmp_path / "ref" / name, 440.0 * (k + 1))
        tone(tmp_path / "good" / name, 440.0 * (k + 1), amp=0.29)
        tone(tmp_path / "bad" / name, 440.0 * (k + 1) + 30.0)
    return tmp_path


def example_data(abx_repeats: int = 2) -> dict:
    return {
        "version": 1,
        "title": "tiny test",
        "seed": 3,
        "mushra": {
            "trials": [
                {
                    "name": f"c{k}",
                    "reference": f"ref/c{k}.wav",
                    "conditions": {"good": f"good/c{k}.wav", "bad": f"bad/c{k}.wav"},
                }
                for k in (1, 2)
            ]
        },
        "abx": {"repeats": abx_repeats, "comparisons": [{"name": "c1-bad", "a": "ref/c1.wav", "b": "bad/c1.wav"}]},
    }


def write_yaml(path, data):
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def example():
    """A fresh copy of the example test definition (paths relative to the `clips` directory)."""
    return example_data()


@pytest.fixture
def config_path(clips, example):
    return write_yaml(clips / "test.yaml", example)


@pytest.fixture
def write_config(clips):
    """``write_config(data)`` writes a test definition next to the clips and returns its path."""
    return lambda data, name="test.yaml": write_yaml(clips / name, data)
