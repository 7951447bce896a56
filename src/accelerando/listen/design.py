"""What each listener sees: trial order, MUSHRA slider order and the hidden ABX assignment.

Every draw comes from a generator seeded with ``sha256(config.seed, listener, purpose...)``, so the same listener
sees the same order on every page load and after a server restart, while different listeners get independent
orders. The server recomputes these on submission; the browser never learns which condition sits behind a slider
or whether X is A or B.
"""

import hashlib
from dataclasses import dataclass

import numpy as np

from .config import ANCHORS, HIDDEN_REFERENCE, ListenConfig

__all__ = ["Step", "abx_x", "listener_rng", "mushra_slots", "steps"]


@dataclass(frozen=True)
class Step:
    kind: str  # "mushra" or "abx"
    index: int  # index into config.mushra or config.abx
    repeat: int = 0  # ABX repeat number; always 0 for MUSHRA

    @property
    def url_path(self) -> str:
        return f"mushra/{self.index}" if self.kind == "mushra" else f"abx/{self.index}/{self.repeat}"


def listener_rng(config: ListenConfig, listener: str, *purpose: object) -> np.random.Generator:
    """A generator that depends only on the test seed, the listener id and ``purpose``."""
    key = "\x1f".join(str(p) for p in (config.seed, listener, *purpose)).encode()
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))


def steps(config: ListenConfig, listener: str) -> list[Step]:
    """The listener's pages in order: all MUSHRA trials (shuffled), then all ABX trials (shuffled)."""
    mushra = [Step("mushra", i) for i in range(len(config.mushra))]
    abx = [Step("abx", i, r) for i, c in enumerate(config.abx) for r in range(c.repeats)]
    rng = listener_rng(config, listener, "order")
    return [mushra[i] for i in rng.permutation(len(mushra))] + [abx[i] for i in rng.permutation(len(abx))]


def mushra_slots(config: ListenConfig, listener: str, trial: int) -> list[str]:
    """Condition names in slider order for MUSHRA trial ``trial``: conditions, hidden reference and anchors."""
    names = [*config.mushra[trial].conditions, HIDDEN_REFERENCE, *(ANCHORS if config.anchors else ())]
    rng = listener_rng(config, listener, "mushra", config.mushra[trial].name)
    return [names[i] for i in rng.permutation(len(names))]


def abx_x(config: ListenConfig, listener: str, comparison: int, repeat: int) -> str:
    """Which of ``"A"`` and ``"B"`` is played as X in this ABX trial."""
    rng = listener_rng(config, listener, "abx", config.abx[comparison].name, repeat)
    return "A" if rng.integers(2) == 0 else "B"
