import pytest

from accelerando.data.scores import ScoreRef, list_scores, load_score
from accelerando.testing import write_test_score

pytest.importorskip("music21")


@pytest.fixture(scope="module")
def score34(tmp_path_factory):
    path = write_test_score(tmp_path_factory.mktemp("s") / "t.musicxml", meter="3/4", key="D", mode="minor")
    return load_score(ScoreRef("bach/test", "bach", str(path)))


def test_bars_track_pickup_and_expanded_repeats(score34):
    # pickup (1 beat) + A (2 bars) + A repeated + B (2 bars) = 1 + 12 + 6 quarter lengths
    assert [(b.start, b.length) for b in score34.bars] == [(0, 1), (1, 3), (4, 3), (7, 3), (10, 3), (13, 3), (16, 3)]
    assert score34.bars[0].bar_pos == 2.0  # the pickup is the last beat of a 3/4 bar
    assert all(b.bar_pos == 0 for b in score34.bars[1:])
    assert score34.repeats_expanded


def test_key_fermata_and_sections(score34):
    assert (score34.key.tonic, score34.key.mode, score34.key.source) == ("D", "minor", "score")
    assert score34.fermatas == [18.5]  # the last eighth note of the piece, starting on beat 3 of the last bar
    assert score34.section_starts == [0.0, 7.0, 13.0]
    assert score34.section_labels == ["A", "A", "B"]
    assert len(score34.parts) == 2


def test_key_from_signature_and_final(tmp_path):
    from music21 import converter, key

    path = write_test_score(tmp_path / "t.musicxml", key="G", mode="major", parts=1)
    s = converter.parse(path)
    for k in list(s.recurse().getElementsByClass(key.KeySignature)):  # drop the notated mode, keep 1 sharp
        k.activeSite.replace(k, key.KeySignature(1))
    s.write("musicxml", fp=str(tmp_path / "sig.musicxml"))
    sd = load_score(ScoreRef("bach/sig", "bach", str(tmp_path / "sig.musicxml")))
    assert sd.key.source == "signature+final"
    assert sd.key.mode in {"major", "minor", "dorian", "phrygian", "lydian", "mixolydian"}


def test_list_scores_is_deterministic_and_limited():
    a = list_scores(("bach", "essenFolksong"), limit=5)
    b = list_scores(("bach", "essenFolksong"), limit=5)
    assert a == b and len(a) == 10
    assert sum(r.collection == "bach" for r in a) == 5
    assert all(r.number is not None and "#" in r.score_id for r in a if r.collection == "essenFolksong")
