import math

import numpy as np
import pytest

from accelerando.listen.stats import abx_results, binomial_p, holm, mean_ci, mushra_result, screen_listeners

ANCHORS = ["anchor_3.5k", "anchor_7k"]


def test_binomial_p_known_values():
    assert binomial_p(20, 20) < 1e-5
    assert binomial_p(20, 20) == pytest.approx(0.5**20)
    assert binomial_p(10, 20) > 0.4
    assert binomial_p(10, 20) == pytest.approx(sum(math.comb(20, k) for k in range(10, 21)) / 2**20)
    assert binomial_p(0, 5) == pytest.approx(1.0)


def test_abx_results_pool_listeners_and_repeats():
    rows = [("l1", "a", r, "A", "A", 1) for r in range(10)] + [("l2", "a", r, "B", "B", 1) for r in range(10)]
    rows += [("l1", "b", r, "A", "AB"[r % 2], int(r % 2 == 0)) for r in range(20)]
    a, b, c = abx_results(rows, ["a", "b", "c"])
    assert (a.n, a.correct, a.proportion) == (20, 20, 1.0) and a.p_value < 1e-5
    assert (b.n, b.correct) == (20, 10) and b.p_value > 0.4
    assert (c.n, c.correct, c.proportion, c.p_value) == (0, 0, None, None)


def test_holm_matches_hand_computation():
    # sorted p: 0.01, 0.02, 0.04 with m = 3 -> 0.03, max(0.03, 0.04) = 0.04, max(0.04, 0.04) = 0.04
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_mean_ci_is_student_t():
    mean, low, high = mean_ci([1.0, 2.0, 3.0, 4.0])
    half = 3.182446305284263 * np.std([1, 2, 3, 4], ddof=1) / 2  # t_{0.975, 3}
    assert mean == 2.5 and low == pytest.approx(2.5 - half) and high == pytest.approx(2.5 + half)
    assert mean_ci([7.0]) == (7.0, None, None) and mean_ci([]) == (None, None, None)


def _rows(listener, trials, scores):
    return [(listener, f"t{t}", c, s) for t in range(trials) for c, s in scores(t).items()]


def _good_listener(name, rng, trials=10):
    def scores(t):
        return {
            "reference": 100.0,
            "transparent": float(rng.integers(92, 101)),
            "degraded": float(rng.integers(40, 60)),
            "anchor_7k": float(rng.integers(50, 70)),
            "anchor_3.5k": float(rng.integers(10, 30)),
        }

    return _rows(name, trials, scores)


def test_screening_excludes_a_listener_who_rates_the_reference_at_30():
    rng = np.random.default_rng(0)
    rows = _good_listener("good", rng) + [
        (l, t, c, 30.0 if c == "reference" else s) for l, t, c, s in _good_listener("deaf", rng)
    ]
    excluded = screen_listeners(rows)
    assert list(excluded) == ["deaf"] and "hidden reference below 90 in 10 of 10 trials" in excluded["deaf"][0]


def test_screening_threshold_is_more_than_15_percent():
    rng = np.random.default_rng(1)
    rows = [(l, t, c, 85.0 if (c == "reference" and t in ("t0",)) else s) for l, t, c, s in _good_listener("a", rng)]
    assert screen_listeners(rows) == {}  # 1 of 10 trials = 10%: kept
    rows = [(l, t, c, 85.0 if (c == "reference" and t in ("t0", "t1")) else s) for l, t, c, s in rows]
    assert list(screen_listeners(rows)) == ["a"]  # 2 of 10 = 20%: excluded
    rows = [(l, t, c, 95.0 if c == "anchor_7k" and t in ("t0", "t1") else s) for l, t, c, s in _good_listener("b", rng)]
    assert "mid-range anchor" in screen_listeners(rows)["b"][0]


def test_mushra_result_on_synthetic_truth():
    rng = np.random.default_rng(2)
    rows = [r for k in range(6) for r in _good_listener(f"l{k}", rng, trials=4)]
    rows += [(l, t, c, 20.0 if c == "reference" else s) for l, t, c, s in _good_listener("deaf", rng, trials=4)]
    res = mushra_result(rows, ["transparent", "degraded"], ANCHORS)
    assert list(res.excluded) == ["deaf"] and len(res.listeners) == 7
    by = {c.condition: c for c in res.conditions}
    assert [c.condition for c in res.conditions] == ["transparent", "degraded", "reference", *ANCHORS]
    assert by["reference"].mean == 100.0 and by["reference"].n == 24  # the excluded listener's 20s are gone
    assert 40 <= by["degraded"].ci_low < by["degraded"].mean < by["degraded"].ci_high <= 60
    assert by["degraded"].wilcoxon_pairs == 24 and by["degraded"].wilcoxon_p < 1e-4
    assert by["degraded"].wilcoxon_p_holm == pytest.approx(min(1.0, 2 * by["degraded"].wilcoxon_p))
    assert by["transparent"].wilcoxon_p < 0.05  # 92..100 against 100 is still a consistent small drop
    assert by["anchor_7k"].wilcoxon_p is None and by["reference"].wilcoxon_p is None
    assert res.friedman_blocks == 24 and res.friedman_p < 1e-6


def test_friedman_matches_the_rank_formula_without_ties():
    # 4 blocks, 3 conditions, strict orderings -> chi2 = 12 / (n k (k+1)) * sum R_j^2 - 3 n (k+1)
    table = [(90, 50, 100), (80, 60, 100), (40, 70, 100), (85, 30, 100)]
    names = ("x", "y", "reference")
    rows = [(f"l{b}", "t", c, float(s)) for b, row in enumerate(table) for c, s in zip(names, row, strict=True)]
    res = mushra_result(rows, ["x", "y"], [])
    n, k = 4, 3  # rank sums: x ranks 2, 2, 1, 2; y ranks 1, 1, 2, 1; the reference ranks 3 in every block
    ranks = [2 + 2 + 1 + 2, 1 + 1 + 2 + 1, 12]
    chi2 = 12 / (n * k * (k + 1)) * sum(r * r for r in ranks) - 3 * n * (k + 1)
    assert res.friedman_statistic == pytest.approx(chi2)


def test_identical_ratings_give_p_one_and_small_tests_are_skipped():
    rows = [(f"l{b}", "t", c, 100.0) for b in range(3) for c in ("x", "reference")]
    res = mushra_result(rows, ["x"], [])
    x = res.conditions[0]
    assert (x.wilcoxon_statistic, x.wilcoxon_p, x.wilcoxon_p_holm) == (0.0, 1.0, 1.0)
    assert res.friedman_p is None and any("Friedman test skipped" in n for n in res.notes)
