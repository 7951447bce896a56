import numpy as np
import pytest

from accelerando.eval.structure import SEGMENT_VERSION, estimate_segments, segment_scores, structure_accuracy

pytest.importorskip("librosa")
mir_eval = pytest.importorskip("mir_eval")


def _section(midis: list[int], seconds: float, partials: int, sr: int) -> np.ndarray:
    """A chord re-struck every 0.5 s, with ``partials`` harmonics (1/k amplitudes) per note: [S]."""
    t = np.arange(int(seconds * sr)) / sr
    tone = sum(
        np.sin(2 * np.pi * 440 * 2 ** ((m - 69) / 12) * k * t) / k for m in midis for k in range(1, partials + 1)
    )
    return np.exp(-3 * (t % 0.5)) * tone


def _abca(sr: int, lengths: tuple[float, ...], names: str) -> tuple[np.ndarray, list[dict]]:
    chords = {"A": ([60, 64, 67], 1), "B": ([54, 57, 61], 7), "C": ([62, 65, 69], 3)}
    y = np.concatenate([_section(chords[n][0], s, chords[n][1], sr) for n, s in zip(names, lengths, strict=True)])
    edges = np.cumsum([0, *lengths])
    return y, [
        {"start": float(a), "end": float(b), "label": n} for a, b, n in zip(edges[:-1], edges[1:], names, strict=True)
    ]


def test_aba_structure_is_found():
    sr = 22050
    y, ref = _abca(sr, (8, 8, 8), "ABA")
    intervals, labels = estimate_segments(y, sr)
    assert labels == ["A", "B", "A"]
    assert np.allclose(intervals[1:, 0], [8, 16], atol=0.25) and intervals[0, 0] == 0 and intervals[-1, 1] == 24
    scores = structure_accuracy(y, sr, ref)
    assert scores["version"] == SEGMENT_VERSION and scores["n_est_segments"] == 3
    assert scores["hit_f_500ms"] == 1.0 and scores["hit_f_3s"] == 1.0
    assert scores["pairwise_f"] > 0.95


def test_abca_labels_and_oracle_count():
    sr = 11025
    y, ref = _abca(sr, (6, 6, 6, 6), "ABCA")
    intervals, labels = estimate_segments(y, sr)
    assert labels == ["A", "B", "C", "A"]
    scores = segment_scores(ref, intervals, labels)
    assert scores["hit_f_500ms"] == 1.0 and scores["pairwise_f"] > 0.95
    # asking for fewer segments keeps the strongest boundaries; a label count merges clusters
    two, _ = estimate_segments(y, sr, n_segments=2)
    assert len(two) == 2 and min(abs(two[0, 1] - b) for b in (6, 12, 18)) < 0.25
    assert len(set(estimate_segments(y, sr, n_labels=2)[1])) == 2


def test_homogeneous_audio_is_one_segment():
    sr = 11025
    intervals, labels = estimate_segments(_section([60, 64, 67], 20, 1, sr), sr)
    assert intervals.tolist() == [[0.0, 20.0]] and labels == ["A"]


def test_segment_scores_match_mir_eval():
    ref = [{"start": 0.0, "end": 10.0, "label": "verse"}, {"start": 10.0, "end": 20.0, "label": "chorus"}]
    ref_int = np.array([[0.0, 10.0], [10.0, 20.0]])
    perfect = segment_scores(ref, ref_int, ["x", "y"])
    assert all(perfect[k] == 1.0 for k in perfect if k != "version")
    late = np.array([[0.0, 11.0], [11.0, 20.0]])  # boundary 1 s late: a miss at 0.5 s, a hit at 3 s
    scores = segment_scores(ref, late, ["x", "y"])
    assert scores["hit_f_500ms"] == 0.0 and scores["hit_f_3s"] == 1.0
    assert scores["hit_f_3s"] == mir_eval.segment.detection(ref_int, late, window=3.0, trim=True)[2]
    expected = mir_eval.segment.pairwise(ref_int, ["verse", "chorus"], late, ["x", "y"], frame_size=0.1)
    assert (scores["pairwise_p"], scores["pairwise_r"], scores["pairwise_f"]) == pytest.approx(expected)
    # an estimate running past the reference end is cut to it; no labels -> no pairwise score
    long = np.array([[0.0, 10.2], [10.2, 25.0]])
    assert segment_scores(ref, long, ["x", "y"])["pairwise_f"] > 0.95
    assert np.isnan(segment_scores([{"start": 0, "end": 10}, {"start": 10, "end": 20}], long)["pairwise_f"])
    assert np.isnan(segment_scores(ref[:1], long, ["x", "y"])["hit_f_3s"])  # no inner boundary to find


def test_bad_input_raises():
    sr = 11025
    with pytest.raises(ValueError, match="at least 6 s"):
        estimate_segments(np.ones(2 * sr), sr)
    with pytest.raises(ValueError, match="non-finite"):
        estimate_segments(np.full(10 * sr, np.nan), sr)
    with pytest.raises(ValueError, match="n_segments"):
        estimate_segments(np.ones(10 * sr), sr, n_segments=0)
    with pytest.raises(ValueError, match="no sections"):
        structure_accuracy(np.ones(10 * sr), sr, [])
    with pytest.raises(ValueError, match="start < end"):
        segment_scores([{"start": 5.0, "end": 1.0, "label": "A"}], np.array([[0.0, 5.0]]))
    with pytest.raises(ValueError, match="'start' and 'end'"):
        segment_scores([{"begin": 0.0, "end": 1.0}], np.array([[0.0, 5.0]]))
