import numpy as np
import pytest

from accelerando.data.labels import plan_clip, transpose_key
from accelerando.data.scores import ScoreRef, load_score
from accelerando.testing import write_test_score

pytest.importorskip("music21")


@pytest.fixture(scope="module", params=["3/4", "6/8", "2/2", "4/4"])
def score(request, tmp_path_factory):
    path = write_test_score(tmp_path_factory.mktemp("s") / "t.musicxml", meter=request.param)
    return load_score(ScoreRef("bach/test", "bach", str(path)))


@pytest.mark.parametrize("bpm", [47, 90, 133])
def test_beats_are_evenly_spaced_at_the_label_bpm(score, bpm):
    t = plan_clip(score, bpm)
    assert np.allclose(np.diff(t.beats), 60.0 / bpm)
    assert t.beats[0] == 0.0  # the pickup beat
    beats_per_bar = len(score.bars[1].beat_offsets)
    assert np.allclose(np.diff(t.downbeats), beats_per_bar * 60.0 / bpm)
    assert t.downbeats[0] == pytest.approx(60.0 / bpm)  # first downbeat after the one-beat pickup
    assert t.beat_numbers[:2] == [beats_per_bar, 1]
    # every note of the test score starts on a beat
    starts = sorted({n[0] for part in t.notes for n in part})
    assert np.allclose(starts, t.beats[: len(starts)])


def test_truncation_cuts_at_a_bar_line(score):
    full = plan_clip(score, 120)
    cut = plan_clip(score, 120, max_seconds=full.music_end * 0.6)
    assert cut.truncated and not full.truncated
    assert cut.music_end <= full.music_end * 0.6 + 1e-9
    end_of_music = max(n[1] for part in cut.notes for n in part)
    assert all(b < end_of_music + 1e-9 for b in cut.beats)
    assert any(abs(d - max(cut.beats) - 60 / 120) < 1e-9 or d > max(cut.beats) for d in full.downbeats)


def test_transpose_updates_pitches_and_key(score):
    t0, t3 = plan_clip(score, 100), plan_clip(score, 100, transpose=3)
    assert [n[2] + 3 for n in t0.notes[0]] == [n[2] for n in t3.notes[0]]
    assert transpose_key("D", "major", 3) == "F"
    assert transpose_key("A", "minor", 1) == "Bb"
    assert transpose_key("F#", "minor", -1) == "F"
    assert transpose_key("Bb", "major", 2) == "C"


def test_sections_and_phrases_scale_with_tempo(score):
    t = plan_clip(score, 60)
    sec = 60.0 / (60 * score.beat_ql)
    assert [s["start"] for s in t.sections] == pytest.approx([x * sec for x in score.section_starts])
    assert [s["label"] for s in t.sections] == ["A", "A", "B"]
    assert t.phrase_ends == pytest.approx([f * sec for f in score.fermatas])
