"""Musical controls: parsing and validation of bpm, key, meter and instrumentation, per-frame musical time, and the
embedding of the controls into one conditioning vector.

The controls are read from a corpus ``label.json`` dict (:meth:`ControlSpec.from_label`) for training and from user
arguments (:meth:`ControlSpec.from_user`) for generation, so both paths meet in the same :class:`ControlSpec`.
Dims: ``B`` batch, ``T`` frames, ``W`` width of the control vector.
"""

import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from accelerando.conditioning.phases import frame_phases
from accelerando.data.instrumentations import INSTRUMENTATIONS

__all__ = [
    "BPM_RANGE",
    "MODES",
    "METER_VOCAB",
    "INSTRUMENTATION_VOCAB",
    "parse_key",
    "parse_meter",
    "check_bpm",
    "meter_index",
    "instrumentation_index",
    "ControlSpec",
    "collate",
    "frame_phases",
    "ControlEncoder",
]

# The bpm range generation accepts. The rendered corpus spans 30-235 beats per minute of the meter's beat unit, but
# about 99% of its clips lie inside 40-200, so the model is only trusted there; labels outside it still encode.
BPM_RANGE = (40.0, 200.0)
MODES = ("major", "minor")  # the model's key modes; church modes map onto them
# Common meters of the corpus (index 0: unknown/other). Unknown meters still get exact phases from frame_phases.
METER_VOCAB = ("<unknown>", "4/4", "2/4", "3/4", "2/2", "3/2", "4/2", "6/8", "9/8", "12/8", "3/8", "6/4")
INSTRUMENTATION_VOCAB = ("<none>", *INSTRUMENTATIONS)  # index 0: unknown or not given

_LETTER_PC = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
_MODE_WORDS = {
    "": "major", "major": "major", "maj": "major", "ionian": "major", "lydian": "major", "mixolydian": "major",
    "minor": "minor", "min": "minor", "m": "minor", "aeolian": "minor", "dorian": "minor", "phrygian": "minor",
    "locrian": "minor",
}  # fmt: skip
_KEY_RE = re.compile(r"^\s*([a-g])((?:[#b\u266f\u266d]|\s*(?:sharp|flat)\b)*)\s*([a-z]*)\s*$", re.IGNORECASE)
_KEY_FORMS = (
    "'C', 'F# minor', 'Bb major', 'Ebm', 'A dorian', 'c# MINOR', 'F sharp minor' (modes: "
    + ", ".join(sorted(m for m in _MODE_WORDS if m))
    + ")"
)


def key_mode_word(name: str) -> str:
    """The mode word of a key name as written, lower-cased (``"Adorian"`` -> ``"dorian"``, ``"F# minor"`` ->
    ``"minor"``, ``"Ebm"`` -> ``"m"``, a bare tonic -> ``""``); ValueError for a name :func:`parse_key` refuses."""
    parse_key(name)
    return _KEY_RE.match(name).group(3).lower()


def parse_key(name: str) -> tuple[int, str]:
    """``"F# minor"`` -> ``(6, "minor")``: the tonic's pitch class (C = 0) and the mode as "major" or "minor".

    Dorian, phrygian, aeolian and locrian count as minor; ionian, lydian and mixolydian as major. A bare tonic is
    major; a trailing ``m`` is minor (``"Ebm"``). Case is ignored except in that one-letter suffix (``"CM"`` is major).
    """
    match = _KEY_RE.match(name) if isinstance(name, str) else None
    mode_word = match.group(3) if match else ""
    mode = "major" if mode_word == "M" else _MODE_WORDS.get(mode_word.lower())
    if match is None or mode is None:
        raise ValueError(f"unknown key {name!r}; write a tonic and an optional mode, e.g. {_KEY_FORMS}")
    acc = match.group(2).lower()
    shift = acc.count("#") + acc.count("\u266f") + acc.count("sharp") - acc.count("\u266d") - acc.count("flat")
    shift -= acc.replace("flat", "").count("b")
    return (_LETTER_PC[match.group(1).lower()] + shift) % 12, mode


def parse_meter(meter: str) -> tuple[int, int, int, float]:
    """``"6/8"`` -> ``(6, 8, 2, 1.5)``: numerator, denominator, beats per bar and the beat's length in quarter notes.

    Follows the corpus (music21) convention: numerators 6, 9, 12, ... are compound (numerator / 3 beats of dotted
    notes: 6/8 -> 2 dotted quarters, 6/4 -> 2 dotted halves); 3/8 and 3/16 are one dotted beat; every other meter
    counts its denominator (3/4 -> 3 quarters, 2/2 -> 2 halves, 4/8 -> 4 eighths).
    """
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", meter) if isinstance(meter, str) else None
    num, den = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if not (1 <= num <= 64 and den in (1, 2, 4, 8, 16, 32)):
        raise ValueError(
            f"invalid meter {meter!r}; write 'N/D' with N in 1..64 and D in 1, 2, 4, 8, 16, 32 (e.g. '4/4', '6/8')"
        )
    note = 4.0 / den  # the denominator's note in quarter notes
    if num % 3 == 0 and (num > 3 or den >= 8):
        return num, den, num // 3, 3 * note
    return num, den, num, note


def check_bpm(bpm: float) -> float:
    """Return ``bpm`` as a float, or raise ValueError if it lies outside :data:`BPM_RANGE`."""
    lo, hi = BPM_RANGE
    if not isinstance(bpm, int | float) or not lo <= bpm <= hi:
        raise ValueError(f"bpm={bpm!r} is outside the supported range {lo:g}-{hi:g} beats per minute")
    return float(bpm)


def meter_index(meter: str) -> int:
    """Index of ``meter`` in :data:`METER_VOCAB` (0 for a valid meter outside the vocabulary)."""
    num, den, _, _ = parse_meter(meter)
    name = f"{num}/{den}"
    return METER_VOCAB.index(name) if name in METER_VOCAB else 0


def instrumentation_index(name: str | None) -> int:
    """Index of an instrumentation name in :data:`INSTRUMENTATION_VOCAB` (0 for None)."""
    return 0 if name is None else INSTRUMENTATION_VOCAB.index(name)


def _instrumentation(name: str | None) -> str | None:
    """Accept a name ("string_quartet"), its caption ("string quartet") or None; raise ValueError otherwise."""
    if name is None or name.strip().lower() in ("", "none", "any"):
        return None
    key = name.strip().lower()
    for inst in INSTRUMENTATIONS.values():
        if key in (inst.name, inst.name.replace("_", " "), inst.caption):
            return inst.name
    raise ValueError(f"unknown instrumentation {name!r}; choose from {', '.join(INSTRUMENTATIONS)} (or None)")


@dataclass(frozen=True)
class ControlSpec:
    """The explicit controls of one clip. ``beats``/``downbeats`` (seconds) are set only from corpus labels."""

    bpm: float  # beats per minute of the meter's beat unit (dotted quarter in 6/8)
    key_pc: int  # tonic pitch class, C = 0
    key_mode: str  # "major" or "minor"
    meter: str  # "3/4"
    instrumentation: str | None  # a key of accelerando.data.instrumentations.INSTRUMENTATIONS, or None
    duration: float  # seconds
    beats: tuple[float, ...] | None = None  # labelled beat times, seconds
    downbeats: tuple[float, ...] | None = None  # labelled downbeat times, seconds

    def __post_init__(self):
        if not (math.isfinite(self.bpm) and self.bpm > 0):
            raise ValueError(f"bpm={self.bpm!r} must be a positive number")
        if not (isinstance(self.key_pc, int) and 0 <= self.key_pc < 12):
            raise ValueError(f"key_pc={self.key_pc!r} must be an int pitch class in 0..11")
        if self.key_mode not in MODES:
            raise ValueError(f"key_mode={self.key_mode!r} must be one of {MODES}")
        parse_meter(self.meter)
        if self.instrumentation is not None and self.instrumentation not in INSTRUMENTATIONS:
            raise ValueError(f"instrumentation={self.instrumentation!r}; choose from {', '.join(INSTRUMENTATIONS)}")
        if not (math.isfinite(self.duration) and self.duration > 0):
            raise ValueError(f"duration={self.duration!r} must be a positive number of seconds")
        if (self.beats is None) != (self.downbeats is None):
            raise ValueError("give both beats and downbeats, or neither")

    @property
    def beats_per_bar(self) -> int:
        return parse_meter(self.meter)[2]

    @classmethod
    def from_label(cls, label: dict) -> "ControlSpec":
        """Controls of a corpus clip from its ``label.json`` dict (bpm, key, meter, instrumentation, beats, ...)."""
        key = label["key"]
        key_pc, key_mode = parse_key(f"{key['tonic']} {key['mode']}")
        beats, downbeats = label.get("beats"), label.get("downbeats")
        has_grid = bool(beats) and bool(downbeats)
        return cls(
            bpm=float(label["bpm"]),
            key_pc=key_pc,
            key_mode=key_mode,
            meter=label["meter"],
            instrumentation=_instrumentation(label.get("instrumentation")),
            duration=float(label["duration"]),
            beats=tuple(map(float, beats)) if has_grid else None,
            downbeats=tuple(map(float, downbeats)) if has_grid else None,
        )

    @classmethod
    def from_user(
        cls, bpm: float, key: str, meter: str = "4/4", instruments: str | None = None, duration: float = 10.0
    ) -> "ControlSpec":
        """Validated controls from user input: bpm in :data:`BPM_RANGE`, a key name, a meter and an instrumentation."""
        key_pc, key_mode = parse_key(key)
        num, den, _, _ = parse_meter(meter)
        return cls(check_bpm(bpm), key_pc, key_mode, f"{num}/{den}", _instrumentation(instruments), float(duration))

    def phases(self, n_frames: int, frame_rate: float) -> torch.Tensor:
        """Per-frame musical time [n_frames, 4] from the labelled beats when present, else from bpm and meter."""
        return frame_phases(
            n_frames, frame_rate, self.bpm, self.beats_per_bar, beats=self.beats, downbeats=self.downbeats
        )


def collate(specs: list[ControlSpec]) -> dict[str, torch.Tensor]:
    """Batch specs into the keyword arguments of :meth:`ControlEncoder.forward` (each a [B] tensor)."""
    return {
        "bpm": torch.tensor([s.bpm for s in specs], dtype=torch.float32),
        "key_pc": torch.tensor([s.key_pc for s in specs], dtype=torch.long),
        "key_mode": torch.tensor([MODES.index(s.key_mode) for s in specs], dtype=torch.long),
        "meter_idx": torch.tensor([meter_index(s.meter) for s in specs], dtype=torch.long),
        "instr_idx": torch.tensor([instrumentation_index(s.instrumentation) for s in specs], dtype=torch.long),
    }


class ControlEncoder(nn.Module):
    """Embed explicit controls into one vector [B, W], the sum of four field embeddings (see :meth:`tokens`).

    bpm: sinusoidal features of log(bpm), scaled so :data:`BPM_RANGE` spans [0, 1], then an MLP; key: tonic
    pitch-class embedding (12) plus mode embedding (2); meter: an embedding over :data:`METER_VOCAB`;
    instrumentation: an embedding over :data:`INSTRUMENTATION_VOCAB`. Classifier-free guidance replaces dropped
    fields by learned null embeddings.
    """

    FIELDS = ("bpm", "key", "meter", "instrumentation")

    def __init__(self, dim: int, bpm_freqs: int = 8, hidden: int | None = None):
        super().__init__()
        if dim < 1 or bpm_freqs < 1:
            raise ValueError(f"dim={dim} and bpm_freqs={bpm_freqs} must be positive")
        self.dim, self.bpm_freqs = dim, bpm_freqs
        hidden = hidden or dim
        self.bpm_mlp = nn.Sequential(nn.Linear(1 + 2 * bpm_freqs, hidden), nn.SiLU(), nn.Linear(hidden, dim))
        self.key_pc = nn.Embedding(12, dim)
        self.key_mode = nn.Embedding(len(MODES), dim)
        self.meter = nn.Embedding(len(METER_VOCAB), dim)
        self.instrumentation = nn.Embedding(len(INSTRUMENTATION_VOCAB), dim)
        self.null = nn.Parameter(torch.empty(len(self.FIELDS), dim))  # [4, W]: one learned null per field
        for p in (self.key_pc.weight, self.key_mode.weight, self.meter.weight, self.instrumentation.weight, self.null):
            nn.init.normal_(p, std=0.02)

    def bpm_features(self, bpm: torch.Tensor) -> torch.Tensor:
        """bpm [B] -> [B, 1 + 2 * bpm_freqs]: u = log(bpm) rescaled so BPM_RANGE maps to [0, 1], sin/cos of u."""
        lo, hi = math.log(BPM_RANGE[0]), math.log(BPM_RANGE[1])
        u = (bpm.float().log() - lo) / (hi - lo)  # [B]
        freqs = math.pi * 2.0 ** torch.arange(self.bpm_freqs, device=bpm.device, dtype=torch.float32)  # [F]
        ang = u[:, None] * freqs[None]  # [B, F]
        return torch.cat([u[:, None], ang.sin(), ang.cos()], dim=-1)

    def tokens(
        self,
        bpm: torch.Tensor,
        key_pc: torch.Tensor,
        key_mode: torch.Tensor,
        meter_idx: torch.Tensor,
        instr_idx: torch.Tensor,
        drop: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One embedding per field [B, 4, W] (bpm, key, meter, instrumentation); see :meth:`forward`."""
        parts = torch.stack(
            [
                self.bpm_mlp(self.bpm_features(bpm)),
                self.key_pc(key_pc) + self.key_mode(key_mode),
                self.meter(meter_idx),
                self.instrumentation(instr_idx),
            ],
            dim=1,
        )  # [B, 4, W]
        if drop is None:
            return parts
        drop = drop.to(device=parts.device, dtype=torch.bool)
        if drop.ndim == 1:
            drop = drop[:, None].expand(-1, len(self.FIELDS))  # [B] -> [B, 4]
        if drop.shape != parts.shape[:2]:
            raise ValueError(f"drop must have shape [B] or [B, 4] = {tuple(parts.shape[:2])}; got {tuple(drop.shape)}")
        return torch.where(drop[..., None], self.null[None].to(parts.dtype), parts)

    def forward(
        self,
        bpm: torch.Tensor,
        key_pc: torch.Tensor,
        key_mode: torch.Tensor,
        meter_idx: torch.Tensor,
        instr_idx: torch.Tensor,
        drop: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Controls -> [B, W].

        bpm [B] float; key_pc [B] long in 0..11; key_mode [B] long (0 major, 1 minor); meter_idx [B] long into
        METER_VOCAB; instr_idx [B] long into INSTRUMENTATION_VOCAB; drop [B] bool (drop every field of an item) or
        [B, 4] bool (per field, in the order of ``FIELDS``) replaces the dropped fields by their null embeddings.
        ``collate(specs)`` returns the first five arguments as a dict.
        """
        return self.tokens(bpm, key_pc, key_mode, meter_idx, instr_idx, drop).sum(dim=1)
