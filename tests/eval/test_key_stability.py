import numpy as np
import pytest

from accelerando.eval.key_stability import KSI_VERSION, key_adherence, key_stability_index, parse_key

pytest.importorskip("librosa")
mir_eval = pytest.importorskip("mir_eval")
SR = 11025  # chroma_cqt tops out near 4 kHz, so 11.025 kHz is enough and keeps the CQT cheap


def _chord(root_midi: int, minor: bool, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    third = 3 if minor else 4
    return np.exp(-1.5 * t) * sum(np.sin(2 * np.pi * 440 * 2 ** ((root_midi + i - 69) / 12) * t) for i in (0, third, 7))


def _cadences(tonic: int, minor: bool, seconds: float) -> np.ndarray:
    """I-IV-V-I (i-iv-V-i in minor), one chord a second, on MIDI root ``60 + tonic``."""
    degrees = [(0, minor), (5, minor), (7, False), (0, minor)]
    chords = [_chord(60 + tonic + d, m) for d, m in (degrees * int(np.ceil(seconds / 4)))[: int(seconds)]]
    return np.concatenate(chords)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("F# minor", ("F#", "minor")),
        ("Bb major", ("Bb", "major")),
        ("G mixolydian", ("G", "major")),
        ("D dorian", ("D", "minor")),
        ("C#m", ("C#", "minor")),
        ("a# Minor", ("Bb", "minor")),
        ("Cb major", ("B", "major")),
        ("E#:min", ("F", "minor")),
        ("Eb", ("Eb", "major")),
        ("b minor", ("B", "minor")),
        ("Ab\u266d locrian", ("G", "minor")),
    ],
)
def test_parse_key_names(name, expected):
    assert parse_key(name) == expected
    mir_eval.key.validate_key(" ".join(parse_key(name)))


@pytest.mark.parametrize("bad", ["H major", "F# blues", "", "X", None, "C major minor"])
def test_parse_key_rejects_unknown_names(bad):
    with pytest.raises(ValueError, match="unknown key name"):
        parse_key(bad)


def test_ksi_is_one_for_a_stable_key_and_drops_on_modulation():
    stable = key_stability_index(_cadences(0, False, 24), SR)
    assert stable["version"] == KSI_VERSION
    assert stable["global_key"] == "C major" and stable["ksi"] == 1.0
    assert stable["window_starts"] == [0.0, 4.0, 8.0, 12.0, 16.0]
    modulating = key_stability_index(np.concatenate([_cadences(0, False, 16), _cadences(6, False, 16)]), SR)
    assert set(modulating["window_keys"]) == {"C major", "F# major"}  # a tritone away: weighted score 0
    assert 0.3 < modulating["ksi"] < 0.7
    assert modulating["ksi"] == pytest.approx(np.mean(modulating["window_scores"]))


def test_ksi_windows_cover_the_tail_and_skip_silence():
    y = np.concatenate([_cadences(9, True, 12), np.zeros(9 * SR)])  # A minor, then 9 s of silence
    r = key_stability_index(y, SR)
    assert r["window_starts"] == [0.0, 4.0, 8.0]  # [12, 20] and the tail window [13, 21] are silent
    assert r["global_key"] == "A minor" and r["ksi"] == 1.0


def test_key_adherence_matches_mir_eval_weighted_score():
    y = _cadences(7, False, 8)  # G major
    for requested in ["G major", "G mixolydian", "D major", "C major", "E minor", "G minor", "C# major"]:
        expected = mir_eval.key.weighted_score(" ".join(parse_key(requested)), "G major")
        assert key_adherence(y, SR, requested) == expected
    assert key_adherence(y, SR, "C major") == 0.5  # the estimate is a fifth above the request


def test_key_functions_reject_bad_audio():
    with pytest.raises(ValueError, match="at least 8 s"):
        key_stability_index(np.ones(4 * SR), SR)
    with pytest.raises(ValueError, match="empty"):
        key_adherence(np.zeros(0), SR, "C major")
    with pytest.raises(ValueError, match="silent"):
        key_adherence(np.zeros(SR), SR, "C major")
    with pytest.raises(ValueError, match="non-finite"):
        key_adherence(np.full(SR, np.nan), SR, "C major")
    with pytest.raises(ValueError, match="unknown key name 'Q major'"):
        key_adherence(_chord(60, False), SR, "Q major")
    with pytest.raises(ValueError, match="hop_s"):
        key_stability_index(np.ones(10 * SR), SR, hop_s=0)
