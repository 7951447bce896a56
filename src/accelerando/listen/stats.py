"""Statistics of listening-test answers: ABX binomial tests, and MUSHRA screening, means and rank tests.

The definitions are written out in ``docs/listening.md``. In short:

- **ABX**: for each comparison, ``k`` correct of ``n`` answers (all listeners and repeats pooled). The exact
  one-sided binomial p-value ``P(K >= k | n, 1/2)`` tests whether listeners tell A from B better than chance.
- **MUSHRA post-screening** (ITU-R BS.1534-3): a listener is excluded if they rate the hidden
  reference below 90 in more than 15% of the trials they rated, or the mid-range (7 kHz) anchor above 90 in more
  than 15% of them.
- **MUSHRA summary** (screened listeners only): per condition, the mean and the Student-t 95% confidence interval
  over all (listener, trial) scores; a Friedman test across the conditions under test plus the hidden reference
  (anchors left out), blocked by (listener, trial); and a two-sided Wilcoxon signed-rank test of each condition
  against the hidden reference, with Holm's step-down correction across conditions.
"""

import math
import warnings
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from .config import HIDDEN_REFERENCE, MID_ANCHOR

__all__ = [
    "SCREEN_FRACTION",
    "SCREEN_SCORE",
    "AbxResult",
    "ConditionStats",
    "MushraResult",
    "abx_results",
    "binomial_p",
    "holm",
    "mean_ci",
    "mushra_result",
    "screen_listeners",
]

SCREEN_SCORE = 90.0  # BS.1534-3: hidden reference below this, or mid-range anchor above it, counts against a listener
SCREEN_FRACTION = 0.15  # ... in more than this fraction of the listener's trials excludes them


@dataclass
class AbxResult:
    comparison: str
    n: int  # answers, pooled over listeners and repeats
    correct: int
    proportion: float | None  # correct / n
    p_value: float | None  # exact one-sided binomial P(K >= correct | n, 1/2); None when n == 0


@dataclass
class ConditionStats:
    condition: str
    n: int  # (listener, trial) scores after screening
    mean: float | None
    ci_low: float | None  # Student-t 95% confidence interval of the mean; None when n < 2
    ci_high: float | None
    wilcoxon_statistic: float | None = None  # against the hidden reference; None for the reference and anchors
    wilcoxon_p: float | None = None
    wilcoxon_p_holm: float | None = None
    wilcoxon_pairs: int = 0  # paired (listener, trial) blocks used by the test


@dataclass
class MushraResult:
    listeners: list[str]  # everyone with a MUSHRA answer
    excluded: dict[str, list[str]]  # listener -> reasons (BS.1534-3 post-screening)
    conditions: list[ConditionStats]
    friedman_statistic: float | None = None
    friedman_p: float | None = None
    friedman_blocks: int = 0
    friedman_conditions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def binomial_p(correct: int, n: int) -> float:
    """Exact one-sided binomial p-value ``P(K >= correct)`` for ``K ~ Binomial(n, 1/2)``."""
    from scipy.stats import binomtest

    return float(binomtest(correct, n, 0.5, alternative="greater").pvalue)


def abx_results(rows, comparisons: list[str]) -> list[AbxResult]:
    """One :class:`AbxResult` per name in ``comparisons``, from ``(listener, comparison, repeat, x_is, answer,
    correct)`` rows (see :meth:`AnswerStore.abx_rows`)."""
    counts = {c: [0, 0] for c in comparisons}
    for _, comparison, _, _, _, correct in rows:
        if comparison in counts:
            counts[comparison][0] += 1
            counts[comparison][1] += int(bool(correct))
    out = []
    for c, (n, k) in counts.items():
        out.append(AbxResult(c, n, k, k / n if n else None, binomial_p(k, n) if n else None))
    return out


def holm(p_values: list[float]) -> list[float]:
    """Holm step-down adjusted p-values, in the input order: ``p_(i) -> max_{j<=i} min(1, (m - j + 1) p_(j))``."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def mean_ci(scores, confidence: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """``(mean, low, high)``: the mean and its Student-t confidence interval, ``mean ± t_{n-1} s / sqrt(n)``."""
    from scipy.stats import t

    x = np.asarray(scores, dtype=np.float64)
    if x.size == 0:
        return None, None, None
    mean = float(x.mean())
    if x.size < 2:
        return mean, None, None
    half = float(t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def _by_listener(rows) -> dict[str, dict[str, dict[str, float]]]:
    """listener -> trial -> condition -> score."""
    table: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for listener, trial, condition, score in rows:
        table[listener][trial][condition] = float(score)
    return table


def screen_listeners(rows) -> dict[str, list[str]]:
    """BS.1534-3 post-screening of MUSHRA ``(listener, trial, condition, score)`` rows.

    Returns listener -> reasons for every listener to exclude (listeners not in it are kept).
    """
    excluded: dict[str, list[str]] = {}
    for listener, trials in _by_listener(rows).items():
        reasons = []
        ref = [t[HIDDEN_REFERENCE] for t in trials.values() if HIDDEN_REFERENCE in t]
        low = sum(s < SCREEN_SCORE for s in ref)
        if ref and low / len(ref) > SCREEN_FRACTION:
            reasons.append(f"hidden reference below {SCREEN_SCORE:g} in {low} of {len(ref)} trials")
        mid = [t[MID_ANCHOR] for t in trials.values() if MID_ANCHOR in t]
        high = sum(s > SCREEN_SCORE for s in mid)
        if mid and high / len(mid) > SCREEN_FRACTION:
            reasons.append(f"mid-range anchor ({MID_ANCHOR}) above {SCREEN_SCORE:g} in {high} of {len(mid)} trials")
        if reasons:
            excluded[listener] = reasons
    return excluded


def _wilcoxon(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from scipy.stats import wilcoxon

    if np.all(x == y):
        return 0.0, 1.0  # no difference at all: scipy refuses, the honest p-value is 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-sample / tie notices; scipy picks the right method itself
        res = wilcoxon(x, y, alternative="two-sided")
    return float(res.statistic), float(res.pvalue)


def mushra_result(rows, conditions: list[str], anchors: list[str]) -> MushraResult:
    """Screen listeners, then summarise the scores of ``conditions`` (under test), the hidden reference and
    ``anchors``. ``rows`` are ``(listener, trial, condition, score)`` (see :meth:`AnswerStore.mushra_rows`)."""
    from scipy.stats import friedmanchisquare

    table = _by_listener(rows)
    excluded = screen_listeners(rows)
    blocks = [trial for listener, trials in table.items() if listener not in excluded for trial in trials.values()]
    result = MushraResult(listeners=list(table), excluded=excluded, conditions=[])
    if table and len(excluded) == len(table):
        result.notes.append("every listener was excluded by post-screening; no statistics")

    tested = [*conditions, HIDDEN_REFERENCE]
    complete = [b for b in blocks if all(c in b for c in tested)]
    result.friedman_blocks = len(complete)
    result.friedman_conditions = tested
    if len(tested) < 3:
        result.notes.append("Friedman test skipped: it needs at least two conditions besides the hidden reference")
    elif len(complete) < 2:
        result.notes.append("Friedman test skipped: fewer than two complete (listener, trial) blocks")
    else:
        data = np.array([[b[c] for c in tested] for b in complete])  # [blocks, conditions]
        if np.all(data == data[:, :1]):
            result.friedman_statistic, result.friedman_p = 0.0, 1.0  # every block rated all conditions equal
        else:
            stat, p = friedmanchisquare(*data.T)
            result.friedman_statistic, result.friedman_p = float(stat), float(p)

    raw_p: list[float] = []
    for name in [*conditions, HIDDEN_REFERENCE, *anchors]:
        mean, low, high = mean_ci([b[name] for b in blocks if name in b])
        stats = ConditionStats(name, sum(name in b for b in blocks), mean, low, high)
        if name in conditions:
            pairs = [(b[name], b[HIDDEN_REFERENCE]) for b in blocks if name in b and HIDDEN_REFERENCE in b]
            stats.wilcoxon_pairs = len(pairs)
            if pairs:
                x, y = np.array(pairs).T
                stats.wilcoxon_statistic, stats.wilcoxon_p = _wilcoxon(x, y)
                raw_p.append(stats.wilcoxon_p)
        result.conditions.append(stats)
    tested_stats = [s for s in result.conditions if s.wilcoxon_p is not None]
    for s, p in zip(tested_stats, holm(raw_p), strict=True):
        s.wilcoxon_p_holm = p
    return result
