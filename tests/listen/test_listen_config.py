import pytest

from accelerando.errors import UserError
from accelerando.listen.config import load_config


def test_valid_config_resolves_paths(config_path, clips):
    cfg = load_config(config_path)
    assert cfg.title == "tiny test" and cfg.seed == 3 and cfg.anchors
    assert [t.name for t in cfg.mushra] == ["c1", "c2"]
    assert cfg.mushra[0].reference == (clips / "ref" / "c1.wav").resolve()
    assert cfg.condition_names == ["good", "bad"]
    assert cfg.all_condition_names == ["good", "bad", "reference", "anchor_3.5k", "anchor_7k"]
    assert cfg.abx[0].repeats == 2 and cfg.abx[0].b == (clips / "bad" / "c1.wav").resolve()
    assert cfg.default_db_path() == config_path.resolve().with_name("test.answers.sqlite")


def _error(write_config, data) -> str:
    with pytest.raises(UserError) as info:
        load_config(write_config(data))
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_unknown_key_is_named(write_config, example):
    example["mushra"]["trials"][1]["refrence"] = "ref/c2.wav"
    msg = _error(write_config, example)
    assert "mushra.trials[1]" in msg and "'refrence'" in msg


def test_missing_audio_file_names_field_and_value(write_config, example):
    example["mushra"]["trials"][0]["conditions"]["bad"] = "bad/nope.wav"
    msg = _error(write_config, example)
    assert "mushra.trials[0].conditions.bad" in msg and "bad/nope.wav" in msg


def test_unreadable_audio_is_named(write_config, example, clips):
    (clips / "junk.wav").write_text("not audio")
    example["abx"]["comparisons"][0]["b"] = "junk.wav"
    msg = _error(write_config, example)
    assert "abx.comparisons[0].b" in msg and "junk.wav" in msg


@pytest.mark.parametrize("repeats", [0, -1, "four", True])
def test_bad_repeats_value_is_named(write_config, example, repeats):
    example["abx"]["comparisons"][0]["repeats"] = repeats
    msg = _error(write_config, example)
    assert "abx.comparisons[0].repeats" in msg and repr(repeats) in msg


def test_reserved_and_bad_names(write_config, example):
    example["mushra"]["trials"][0]["conditions"] = {"reference": "good/c1.wav"}
    assert "reserved" in _error(write_config, example) and "'reference'" in _error(write_config, example)
    example["mushra"]["trials"][0]["conditions"] = {"good": "good/c1.wav", "bad": "bad/c1.wav"}
    example["mushra"]["trials"][1]["name"] = "has space"
    msg = _error(write_config, example)
    assert "mushra.trials[1].name" in msg and "'has space'" in msg


def test_duplicate_trial_and_mismatched_conditions(write_config, example):
    example["mushra"]["trials"][1]["name"] = "c1"
    assert "duplicate trial name 'c1'" in _error(write_config, example)
    example["mushra"]["trials"][1]["name"] = "c2"
    del example["mushra"]["trials"][1]["conditions"]["bad"]
    msg = _error(write_config, example)
    assert "mushra.trials[1].conditions" in msg and "['good']" in msg


def test_version_anchors_and_empty(write_config, example):
    assert "unsupported version 2" in _error(write_config, {**example, "version": 2})
    example["mushra"]["anchors"] = "yes"
    assert "mushra.anchors" in _error(write_config, example) and "'yes'" in _error(write_config, example)
    assert "no trials" in _error(write_config, {"version": 1, "title": "empty"})


def test_not_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("mushra: [unclosed")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "missing.yaml")
