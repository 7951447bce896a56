"""Deterministic train/valid/test split by score id.

Every rendering of a score (all instrumentations, tempi and transpositions) lands in the same split, so the test
split never leaks into training through another arrangement of the same piece. No training code may read clips
whose split is ``"test"``; :func:`training_splits` is the one place that says which splits training may use.
"""

from accelerando.data.scores import stable_hash

__all__ = ["SPLIT_VERSION", "split_for", "training_splits", "SPLITS"]

SPLIT_VERSION = "split-v1"  # changing the rule below must change this tag
SPLITS = ("train", "valid", "test")
_FRACTIONS = (0.90, 0.05, 0.05)


def split_for(score_id: str) -> str:
    """The split of ``score_id``: a pure function of the id (sha1), identical on every machine and run."""
    u = stable_hash(f"{SPLIT_VERSION}:{score_id}")
    if u < _FRACTIONS[0]:
        return "train"
    if u < _FRACTIONS[0] + _FRACTIONS[1]:
        return "valid"
    return "test"


def training_splits() -> tuple[str, ...]:
    """Splits that training may read. The test split is reserved for evaluation."""
    return ("train",)
