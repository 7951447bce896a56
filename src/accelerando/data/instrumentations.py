"""Instrumentations: General MIDI programs assigned to score parts, top voice first."""

from dataclasses import dataclass

__all__ = ["Instrumentation", "INSTRUMENTATIONS", "parse_instrumentations", "GM_NAMES"]

# General MIDI program numbers (0-based) used here, with their stem names.
GM_NAMES = {
    0: "piano",
    6: "harpsichord",
    19: "church_organ",
    21: "accordion",
    24: "nylon_guitar",
    40: "violin",
    41: "viola",
    42: "cello",
    43: "contrabass",
    46: "harp",
    52: "choir",
    56: "trumpet",
    57: "trombone",
    58: "tuba",
    60: "french_horn",
    68: "oboe",
    70: "bassoon",
    71: "clarinet",
    73: "flute",
    110: "fiddle",
}


@dataclass(frozen=True)
class Instrumentation:
    name: str
    programs: tuple[int, ...]  # ordered from the highest voice to the lowest
    caption: str  # caption phrase, e.g. "string quartet"
    max_parts: int = 16  # scores with more parts than this are not given this instrumentation

    def assign(self, n_parts: int) -> list[int]:
        """Return one GM program per part (part 0 is the top voice), spreading the ensemble over the parts."""
        k = len(self.programs)
        if n_parts == 1:
            return [self.programs[0]]
        return [self.programs[round(i * (k - 1) / (n_parts - 1))] for i in range(n_parts)]


INSTRUMENTATIONS: dict[str, Instrumentation] = {
    i.name: i
    for i in (
        Instrumentation("string_quartet", (40, 40, 41, 42, 43), "string quartet"),
        Instrumentation("piano", (0,), "solo piano"),
        Instrumentation("organ", (19,), "pipe organ"),
        Instrumentation("brass", (56, 60, 57, 58), "brass ensemble"),
        Instrumentation("woodwinds", (73, 68, 71, 70), "woodwind ensemble"),
        Instrumentation("guitar", (24,), "classical guitar", max_parts=4),
        Instrumentation("choir", (52,), "choir"),
        Instrumentation("harpsichord", (6,), "harpsichord"),
        Instrumentation("harp", (46,), "harp", max_parts=4),
        Instrumentation("fiddle", (110, 42), "fiddle", max_parts=2),
        Instrumentation("accordion", (21,), "accordion", max_parts=2),
        Instrumentation("flute", (73, 70), "flute", max_parts=2),
    )
}


def parse_instrumentations(spec: str | None) -> tuple[str, ...]:
    """Parse ``"piano,organ"`` into instrumentation names (all when empty); raise ValueError naming an unknown one."""
    if not spec:
        return tuple(INSTRUMENTATIONS)
    names = tuple(dict.fromkeys(s.strip() for s in spec.split(",") if s.strip()))
    for name in names:
        if name not in INSTRUMENTATIONS:
            raise ValueError(f"unknown instrumentation {name!r}; choose from {', '.join(INSTRUMENTATIONS)}")
    if not names:
        raise ValueError("--instrumentations is empty; name at least one instrumentation")
    return names
