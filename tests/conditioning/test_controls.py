import math

import pytest
import torch

from accelerando.conditioning import (
    BPM_RANGE,
    INSTRUMENTATION_VOCAB,
    METER_VOCAB,
    ControlEncoder,
    ControlSpec,
    check_bpm,
    collate,
    frame_phases,
    parse_key,
    parse_meter,
)
from accelerando.data.instrumentations import INSTRUMENTATIONS


@pytest.mark.parametrize(
    "name, expected",
    [
        ("F# minor", (6, "minor")),
        ("Bb major", (10, "major")),
        ("Ebm", (3, "minor")),
        ("A dorian", (9, "minor")),
        ("c# MINOR", (1, "minor")),
        ("E phrygian", (4, "minor")),
        ("D aeolian", (2, "minor")),
        ("G mixolydian", (7, "major")),
        ("F lydian", (5, "major")),
        ("C ionian", (0, "major")),
        ("B", (11, "major")),
        ("CM", (0, "major")),
        ("Cb", (11, "major")),
        ("E flat major", (3, "major")),
        ("f\u266f minor", (6, "minor")),
    ],
)
def test_parse_key(name, expected):
    assert parse_key(name) == expected


@pytest.mark.parametrize("bad", ["H major", "C blues", "", "F#x", "major"])
def test_parse_key_error_names_value_and_forms(bad):
    with pytest.raises(ValueError, match=f"unknown key {bad!r}.*'F# minor'.*dorian"):
        parse_key(bad)


@pytest.mark.parametrize(
    "meter, expected",
    [
        ("2/4", (2, 4, 2, 1.0)),
        ("3/4", (3, 4, 3, 1.0)),
        ("4/4", (4, 4, 4, 1.0)),
        ("2/2", (2, 2, 2, 2.0)),
        ("3/2", (3, 2, 3, 2.0)),
        ("4/2", (4, 2, 4, 2.0)),
        ("6/8", (6, 8, 2, 1.5)),
        ("9/8", (9, 8, 3, 1.5)),
        ("12/8", (12, 8, 4, 1.5)),
        ("3/8", (3, 8, 1, 1.5)),  # the corpus (music21) counts 3/8 as one dotted-quarter beat
        ("6/4", (6, 4, 2, 3.0)),
        ("4/8", (4, 8, 4, 0.5)),
    ],
)
def test_parse_meter(meter, expected):
    assert parse_meter(meter) == expected


@pytest.mark.parametrize("bad", ["4/3", "0/4", "4", "x/4", "4/4/4", ""])
def test_parse_meter_rejects(bad):
    with pytest.raises(ValueError, match=f"invalid meter {bad!r}"):
        parse_meter(bad)


def test_bpm_range():
    assert BPM_RANGE == (40, 200)
    assert check_bpm(40) == 40.0 and check_bpm(200.0) == 200.0
    for bad in (39.9, 250, float("nan")):
        with pytest.raises(ValueError, match="range 40-200"):
            check_bpm(bad)


def _label(beats, downbeats, meter="3/4", bpm=100.0):
    """A corpus-style label dict (the fields ControlSpec reads)."""
    return {
        "bpm": bpm,
        "key": {"tonic": "F#", "mode": "dorian", "name": "F# dorian", "source": "score"},
        "meter": meter,
        "instrumentation": "string_quartet",
        "duration": 12.5,
        "beats": beats,
        "downbeats": downbeats,
        "caption": "A slow chorale for string quartet in F# dorian, 3/4 time at 100 BPM.",
    }


def test_control_spec_from_label_and_user():
    spec = ControlSpec.from_label(_label([0.0, 0.6, 1.2], [0.6]))
    assert (spec.bpm, spec.key_pc, spec.key_mode, spec.meter) == (100.0, 6, "minor", "3/4")
    assert spec.instrumentation == "string_quartet" and spec.duration == 12.5
    assert spec.beats == (0.0, 0.6, 1.2) and spec.downbeats == (0.6,) and spec.beats_per_bar == 3
    user = ControlSpec.from_user(120, "Bb major", "6/8", "string quartet", duration=8)
    assert (user.key_pc, user.key_mode, user.meter, user.instrumentation) == (10, "major", "6/8", "string_quartet")
    assert ControlSpec.from_user(90, "C", instruments=None).instrumentation is None
    with pytest.raises(ValueError, match="range 40-200"):
        ControlSpec.from_user(300, "C")
    with pytest.raises(ValueError, match="unknown instrumentation 'kazoo'"):
        ControlSpec.from_user(90, "C", instruments="kazoo")
    with pytest.raises(ValueError, match="duration"):
        ControlSpec.from_user(90, "C", duration=0)


def test_vocabularies():
    assert INSTRUMENTATION_VOCAB[0] == "<none>" and set(INSTRUMENTATION_VOCAB[1:]) == set(INSTRUMENTATIONS)
    assert METER_VOCAB[0] == "<unknown>"
    batch = collate([ControlSpec.from_user(90, "D minor", "5/4", None), ControlSpec.from_user(90, "C", "6/8", "piano")])
    assert batch["key_mode"].tolist() == [1, 0] and batch["key_pc"].tolist() == [2, 0]
    assert batch["meter_idx"].tolist() == [0, METER_VOCAB.index("6/8")]
    assert batch["instr_idx"].tolist() == [0, INSTRUMENTATION_VOCAB.index("piano")]


def _phase(sin, cos):
    return torch.remainder(torch.atan2(sin, cos) / (2 * math.pi), 1.0)


def test_frame_phases_exact_at_labelled_beats_with_pickup():
    fr, bpb = 50.0, 3
    beat_frames = [5, 30, 52, 80, 101, 125, 150, 170, 200]  # an uneven tempo; beat 0 is a pickup
    down_frames = [30, 101, 170]
    beats, downbeats = [f / fr for f in beat_frames], [f / fr for f in down_frames]
    ph = frame_phases(230, fr, bpm=100, beats_per_bar=bpb, beats=beats, downbeats=downbeats)
    assert ph.shape == (230, 4) and ph.dtype == torch.float32
    assert (ph[beat_frames, 0] == 0).all() and (ph[beat_frames, 1] == 1).all()
    assert (ph[down_frames, 2] == 0).all() and (ph[down_frames, 3] == 1).all()
    assert (ph[[52, 80, 125, 150, 200], 2] != 0).all()
    pickup = _phase(ph[5, 2], ph[5, 3])
    assert pickup.item() == pytest.approx((bpb - 1) / bpb, abs=1e-6)
    bar = _phase(ph[:, 2], ph[:, 3])
    assert bar[52].item() == pytest.approx(1 / 3, abs=1e-6) and bar[80].item() == pytest.approx(2 / 3, abs=1e-6)
    mid = _phase(ph[41, 0], ph[41, 1])  # halfway between the beats at frames 30 and 52
    assert mid.item() == pytest.approx(0.5, abs=1e-6)


def test_frame_phases_label_path_matches_bpm_path_at_constant_tempo():
    bpm, bpb, fr = 96.0, 4, 93.75
    period = 60.0 / bpm
    beats = [k * period for k in range(33)]  # one pickup beat, then eight bars
    downbeats = beats[1::bpb]
    n = int(24 * fr)  # beyond the last beat: both paths extrapolate at the same tempo
    from_label = frame_phases(n, fr, bpm, bpb, beats=beats, downbeats=downbeats)
    from_bpm = frame_phases(n, fr, bpm, bpb, offset_seconds=period)
    torch.testing.assert_close(from_label, from_bpm, rtol=0, atol=1e-5)
    spec = ControlSpec.from_label(_label(beats, downbeats, meter="4/4", bpm=bpm))
    torch.testing.assert_close(spec.phases(n, fr), from_label, rtol=0, atol=0)


def test_frame_phases_bpm_path_and_errors():
    ph = frame_phases(100, 50.0, bpm=120, beats_per_bar=2)  # a beat every 25 frames, a bar every 50
    assert (ph[::25, 0] == 0).all() and (ph[::25, 1] == 1).all() and (ph[::50, 2] == 0).all()
    assert frame_phases(0, 50.0, 120, 4).shape == (0, 4)
    with pytest.raises(ValueError, match="not one of the beats"):
        frame_phases(10, 50.0, 120, 4, beats=[0.0, 0.5], downbeats=[0.25])
    with pytest.raises(ValueError, match="both beats and downbeats"):
        frame_phases(10, 50.0, 120, 4, beats=[0.0, 0.5])


def _batch(B=4):
    specs = [
        ControlSpec.from_user(60 + 30 * i, key, meter, instr)
        for i, (key, meter, instr) in enumerate(
            [("C", "4/4", "piano"), ("F# minor", "6/8", None), ("Bb", "3/4", "brass"), ("A dorian", "7/8", "harp")][:B]
        )
    ]
    return collate(specs)


def test_control_encoder_shapes_and_dropout():
    torch.manual_seed(0)
    enc = ControlEncoder(dim=32)
    batch = _batch()
    out = enc(**batch)
    assert out.shape == (4, 32) and out.dtype == torch.float32
    assert enc.tokens(**batch).shape == (4, 4, 32)
    drop = torch.tensor([True, False, True, False])
    dropped = enc(**batch, drop=drop)
    torch.testing.assert_close(dropped[0], enc.null.sum(0))
    torch.testing.assert_close(dropped[2], enc.null.sum(0))
    torch.testing.assert_close(dropped[[1, 3]], out[[1, 3]])
    per_field = torch.zeros(4, 4, dtype=torch.bool)
    per_field[:, 3] = True  # drop only the instrumentation
    torch.testing.assert_close(enc.tokens(**batch, drop=per_field)[:, :3], enc.tokens(**batch)[:, :3], rtol=0, atol=0)
    with pytest.raises(ValueError, match="drop must have shape"):
        enc(**batch, drop=torch.zeros(4, 3, dtype=torch.bool))
    bpm_only = dict(batch, bpm=batch["bpm"] + 5)
    assert not torch.allclose(enc(**bpm_only), out)


def test_control_encoder_gradients_flow():
    enc = ControlEncoder(dim=16)
    out = enc(**_batch(), drop=torch.tensor([False, True, False, False]))
    out.pow(2).sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
