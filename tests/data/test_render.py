import json

import numpy as np
import pytest
import soundfile as sf

from accelerando.data.clip import Variant, write_clip
from accelerando.data.render import Renderer
from accelerando.data.scores import ScoreRef, load_score
from accelerando.testing import write_test_score

pytest.importorskip("music21")
SR = 24000


@pytest.fixture(scope="module")
def renderer(soundfont):
    return Renderer(soundfont, SR)


def _onset_near(env: np.ndarray, t: float, sr: int) -> float:
    """First time in [t-40 ms, t+60 ms] where the 1 ms peak envelope rises 20% of the way from floor to peak."""
    lo, pre, hi = max(int((t - 0.04) * sr), 0), max(int((t - 0.01) * sr), 0), int((t + 0.06) * sr)
    seg = env[lo:hi]
    floor = env[lo:pre].max() if pre > lo else 0.0  # what still rings from the previous note
    return (lo + int(np.argmax(seg >= floor + 0.2 * (seg.max() - floor)))) / sr


@pytest.mark.parametrize("meter,bpm,instrumentation", [("3/4", 100, "piano"), ("6/8", 72, "harpsichord")])
def test_rendered_onsets_match_labelled_beats_within_10ms(tmp_path, renderer, meter, bpm, instrumentation):
    path = write_test_score(tmp_path / "t.musicxml", meter=meter, parts=1)
    score = load_score(ScoreRef("bach/onsets", "bach", str(path)))
    label = write_clip(score, Variant(instrumentation, bpm, 0), renderer, tmp_path / "out", max_seconds=None)
    clip = tmp_path / "out" / "clips" / "bach" / label["clip_id"]
    y, sr = sf.read(clip / "mix.flac")
    frame = int(0.001 * sr)
    env = np.abs(y)
    env = np.array([env[max(0, i - frame) : i + 1].max() for i in range(len(env))])
    errors = np.array([_onset_near(env, b, sr) - b for b in label["beats"]])
    assert len(errors) == len(label["beats"]) > 10
    assert np.abs(errors).max() < 0.010, errors


def test_clip_files_stems_sum_to_mix_and_label_fields(tmp_path, renderer):
    path = write_test_score(tmp_path / "t.musicxml", meter="4/4", parts=3)
    score = load_score(ScoreRef("bach/stems", "bach", str(path)))
    label = write_clip(score, Variant("string_quartet", 90, 2), renderer, tmp_path, max_seconds=None)
    clip = tmp_path / "clips" / "bach" / label["clip_id"]
    mix, sr = sf.read(clip / "mix.flac", always_2d=True)
    stems = [sf.read(clip / inst["stem"], always_2d=True)[0] for inst in label["instruments"]]
    assert sr == SR and mix.shape == (label["num_samples"], 1)
    # each file is 16-bit, so the sum may differ from the mix by half an LSB per file
    tol = (len(stems) + 1) * 0.5 / 32768 + 1e-9
    assert np.abs(sum(stems) - mix).max() <= tol
    assert np.abs(mix).max() <= 0.89 + 1 / 32768
    assert json.loads((clip / "label.json").read_text()) == label
    assert label["key"]["name"] == "E major"  # D major transposed up 2 semitones
    assert label["bpm"] == 90 and label["meter"] == "4/4"
    assert [i["program"] for i in label["instruments"]] == [40, 41, 43]
    assert "E major" in label["caption"] and "90 BPM" in label["caption"]
    assert not list(clip.parent.glob(".tmp-*"))


def test_a_stem_carries_nothing_from_the_previous_one(renderer):
    notes = [(0.1, 0.4, 60, 90), (0.5, 0.9, 64, 90)]
    a = renderer.render_part(notes, 0, SR)
    renderer.render_part([(0.0, 0.95, 48, 127)], 19, SR)  # a loud organ note cut off at the end of its stem
    b = renderer.render_part(notes, 0, SR)
    assert a.shape == (2, SR) and np.abs(a).max() > 0.01
    assert np.abs(b[:, : int(0.1 * SR)]).max() < 1e-6  # silence (-120 dB) until the first note: no tail
    # FluidSynth is not bit-exact between renders of the same notes (its reverb and voice state drift), but the
    # difference stays 26 dB below the signal
    assert np.sqrt(np.mean((a - b) ** 2)) < 0.05 * np.sqrt(np.mean(a**2))
