"""The music21 corpus collections that the corpus builder knows how to render.

Each collection names the corpus folder it reads, a default composer, a plausible tempo range (in quarter notes
per minute; the beat-unit bpm label is derived from it and the meter) and words for captions.
"""

from dataclasses import dataclass

__all__ = ["Collection", "COLLECTIONS", "DEFAULT_COLLECTIONS", "parse_collections"]


@dataclass(frozen=True)
class Collection:
    name: str  # corpus folder name inside music21's core corpus
    composer: str  # used when the score's metadata names none
    qpm_range: tuple[int, int]  # plausible tempo, quarter notes per minute
    style: str  # caption phrase, e.g. "Baroque chorale"
    era: str  # caption word
    extensions: tuple[str, ...] = (".mxl", ".xml", ".musicxml", ".krn", ".abc", ".mid")


COLLECTIONS: dict[str, Collection] = {
    c.name: c
    for c in (
        Collection("bach", "Johann Sebastian Bach", (60, 100), "chorale", "Baroque"),
        Collection("ryansMammoth", "traditional", (90, 150), "fiddle tune", "Anglo-American"),
        Collection("oneills1850", "traditional", (90, 150), "dance tune", "Irish"),
        Collection("essenFolksong", "traditional", (70, 130), "folk song", "European"),
        Collection("palestrina", "Giovanni Pierluigi da Palestrina", (100, 160), "mass movement", "Renaissance"),
        Collection("trecento", "anonymous", (70, 120), "polyphonic song", "medieval Italian"),
        Collection("beethoven", "Ludwig van Beethoven", (70, 150), "string quartet movement", "Classical"),
        Collection("haydn", "Joseph Haydn", (70, 150), "string quartet movement", "Classical"),
        Collection("mozart", "Wolfgang Amadeus Mozart", (70, 150), "string quartet movement", "Classical"),
        Collection("monteverdi", "Claudio Monteverdi", (80, 140), "madrigal", "late Renaissance", (".mxl", ".xml")),
    )
}

# What `accelerando data build` renders when --collections is not given.
DEFAULT_COLLECTIONS = (
    "bach",
    "ryansMammoth",
    "oneills1850",
    "essenFolksong",
    "palestrina",
    "trecento",
    "beethoven",
    "haydn",
    "mozart",
)


def parse_collections(spec: str | None) -> tuple[str, ...]:
    """Parse ``"bach,ryansMammoth"`` into collection names; raise ValueError naming an unknown one."""
    if not spec:
        return DEFAULT_COLLECTIONS
    names = tuple(dict.fromkeys(s.strip() for s in spec.split(",") if s.strip()))
    for name in names:
        if name not in COLLECTIONS:
            raise ValueError(f"unknown collection {name!r}; choose from {', '.join(COLLECTIONS)}")
    if not names:
        raise ValueError("--collections is empty; name at least one collection")
    return names
