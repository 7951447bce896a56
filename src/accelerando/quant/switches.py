"""Process-wide on/off switches of the quantized execution paths, usable as a call or as a context manager.

``StateSwitch`` is the shared mechanism: a subclass names the dict and key it flips; the call sets the value at
once, and leaving a ``with`` block restores the previous one. ``use_group_folding`` lives here rather than in
:mod:`accelerando.quant.linear` so that :mod:`accelerando.quant.fused` (which ``linear`` imports) can read it too.
"""

import os

__all__ = ["StateSwitch", "group_folding_enabled", "int8_convs_enabled", "use_group_folding", "use_int8_convs"]


class StateSwitch:
    """Set ``_state[_key]`` to ``bool(enabled)`` now; as a context manager, restore the previous value on exit."""

    _state: dict
    _key: str

    def __init__(self, enabled: bool = True):
        self._prev = self._state[self._key]
        self._state[self._key] = bool(enabled)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._state[self._key] = self._prev
        return False


_GROUPS = {"fold": os.environ.get("ACCELERANDO_QUANT_GROUPS", "folded").strip().lower() != "exact"}


class use_group_folding(StateSwitch):
    """Fold 4-bit group scales into int8 codes (one GEMM per layer, the default) or run one GEMM per group (exact
    grouped math); ``ACCELERANDO_QUANT_GROUPS=exact`` starts with it off.

    Folding rounds each weight to a sixteenth of the 4-bit step of its row's coarsest group (tests check the SQNR
    against the exact grouped product). On the dev CPU one GEMM per group of 64 ran several times slower than a
    single GEMM (BENCHMARKS.md, "Group-scale folding").
    """

    _state, _key = _GROUPS, "fold"


def group_folding_enabled() -> bool:
    """Whether 4-bit grouped A8 layers currently run as one folded int8 GEMM."""
    return _GROUPS["fold"]


_CONVS = {"onednn": os.environ.get("ACCELERANDO_QUANT_CONVS", "onednn").strip().lower() != "unfold"}


class use_int8_convs(StateSwitch):
    """Run convolutions whose quantized layer has per-tensor activation scales (``act_scale="tensor"``) as oneDNN
    int8 convolutions on the CPU (the default) or as unfold + int8 GEMM (off; ``ACCELERANDO_QUANT_CONVS=unfold``
    starts with it off). See :mod:`accelerando.quant.int8_conv`."""

    _state, _key = _CONVS, "onednn"


def int8_convs_enabled() -> bool:
    """Whether per-tensor A8 convolutions currently run through oneDNN's int8 convolution where it applies."""
    return _CONVS["onednn"]
