"""Conditioning for the built-in generator: text encoders, explicit controls and per-frame musical time.

Importing this package is light: the pretrained text encoder (and ``transformers``) loads on first use.
"""

from accelerando.conditioning.controls import (
    BPM_RANGE,
    INSTRUMENTATION_VOCAB,
    METER_VOCAB,
    MODES,
    ControlEncoder,
    ControlSpec,
    check_bpm,
    collate,
    instrumentation_index,
    meter_index,
    parse_key,
    parse_meter,
)
from accelerando.conditioning.phases import PHASE_FEATURES, frame_phases
from accelerando.conditioning.text import MINILM_DIM, LookupTextEncoder, TextEncoder, minilm_path

__all__ = [
    "BPM_RANGE",
    "INSTRUMENTATION_VOCAB",
    "METER_VOCAB",
    "MODES",
    "MINILM_DIM",
    "PHASE_FEATURES",
    "ControlEncoder",
    "ControlSpec",
    "LookupTextEncoder",
    "TextEncoder",
    "check_bpm",
    "collate",
    "frame_phases",
    "instrumentation_index",
    "meter_index",
    "minilm_path",
    "parse_key",
    "parse_meter",
]
