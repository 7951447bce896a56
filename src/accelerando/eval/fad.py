"""Fréchet audio distance (FAD), its bias-free extrapolation FAD-inf, per-clip FAD and kernel audio distance (KAD).

Definitions (embeddings ``[N, d]`` from :mod:`accelerando.eval.embeddings`, one row per 1 s window):

- ``frechet_distance`` (``FAD_VERSION``): ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrtm(S1 S2))`` with
  ``scipy.linalg.sqrtm``. If the square root is non-finite or its imaginary part exceeds ``1e-3`` of its largest
  real entry, it is retried as ``sqrtm((S1 + eps I)(S2 + eps I))`` with ``eps = 1e-6`` (as in the reference
  implementation); a second failure raises ``ValueError``. A negative result from round-off is clamped to 0 when it
  is above ``-1e-6 * max(1, tr S1 + tr S2)``, else ``ValueError``. No sentinel value is ever returned.
- ``fad``: means and unbiased (``N - 1``) covariances of each set. Each set needs ``N > d`` rows (full-rank
  covariance); fewer raise ``ValueError`` (no shrinkage, which would change the number being compared).
- ``fad_inf`` (``FAD_INF_VERSION``): for ``n`` on ``n_points`` evenly spaced integers in ``[min_n, N]``, draw ``n``
  rows of ``pred`` without replacement (``numpy.random.default_rng(seed)``), compute ``FAD_n`` against all of
  ``ref``, fit ``FAD_n = a + b / n`` by least squares; ``fad_inf = a``, ``slope = b``.
- ``per_clip_fad`` (``PER_CLIP_FAD_VERSION``): Fréchet distance of each clip's windows against the whole reference
  set. A clip has fewer windows than ``d``, so its covariance is singular; that is allowed here (the ``eps`` retry
  covers it) and only ``N_i >= 2`` is required. Compare per-clip values only at equal clip lengths.
- ``kad`` (``KAD_VERSION``): unbiased squared MMD with a Gaussian kernel ``exp(-|x - y|^2 / (2 h^2))``, ``h`` the
  median pairwise distance of the pooled rows (unscaled, unlike the x1000 in the KAD paper).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "FAD_INF_VERSION",
    "FAD_VERSION",
    "KAD_VERSION",
    "PER_CLIP_FAD_VERSION",
    "fad",
    "fad_inf",
    "frechet_distance",
    "kad",
    "per_clip_fad",
]

FAD_VERSION = "fad-v1"
FAD_INF_VERSION = "fad-inf-v1"
PER_CLIP_FAD_VERSION = "per-clip-fad-v1"
KAD_VERSION = "kad-v1"

_EPS = 1e-6
_IMAG_TOL = 1e-3


def _check_embeddings(emb, name: str, min_rows: int) -> np.ndarray:
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 2:
        raise ValueError(f"{name} must have shape [N, d], got {emb.shape}")
    if not np.all(np.isfinite(emb)):
        raise ValueError(f"{name} has {int(np.sum(~np.isfinite(emb)))} non-finite (NaN/inf) values")
    if emb.shape[0] < min_rows:
        raise ValueError(
            f"{name} has {emb.shape[0]} embeddings of dim {emb.shape[1]}; need at least {min_rows} for this statistic"
            " (a full-rank covariance needs N > d: embed more or longer clips, or use a smaller embedder)"
        )
    return emb


def _stats(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return emb.mean(axis=0), np.atleast_2d(np.cov(emb, rowvar=False))


def _sqrtm_ok(m: np.ndarray) -> bool:
    if not np.all(np.isfinite(m)):
        return False
    return np.max(np.abs(m.imag), initial=0.0) <= _IMAG_TOL * max(np.max(np.abs(m.real), initial=0.0), 1e-300)


def frechet_distance(mu1, s1, mu2, s2) -> float:
    """Fréchet distance between Gaussians N(mu1 [d], s1 [d, d]) and N(mu2 [d], s2 [d, d]); see the module docstring."""
    import scipy.linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(s1, np.float64)), np.atleast_2d(np.asarray(s2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"shape mismatch: mu1 {mu1.shape}, s1 {s1.shape}, mu2 {mu2.shape}, s2 {s2.shape}")
    for name, a in (("mu1", mu1), ("s1", s1), ("mu2", mu2), ("s2", s2)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} has non-finite (NaN/inf) values")
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not _sqrtm_ok(covmean):
        offset = _EPS * np.eye(d)
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
        if not _sqrtm_ok(covmean):
            raise ValueError("sqrtm(s1 @ s2) is non-finite or complex even with a 1e-6 * I offset; check the inputs")
    diff = mu1 - mu2
    trace_sum = np.trace(s1) + np.trace(s2)
    dist = float(diff @ diff + trace_sum - 2.0 * np.trace(np.real(covmean)))
    if dist < 0:
        if dist < -_EPS * max(1.0, trace_sum):
            raise ValueError(f"Fréchet distance came out negative ({dist:.3g}) beyond round-off")
        dist = 0.0
    return dist


def fad(emb_a, emb_b) -> float:
    """FAD between embedding sets ``emb_a`` [N, d] and ``emb_b`` [M, d]; both need more rows than ``d``."""
    emb_a = np.asarray(emb_a, dtype=np.float64)
    d = emb_a.shape[-1] if emb_a.ndim == 2 else 0
    emb_a = _check_embeddings(emb_a, "emb_a", d + 1)
    emb_b = _check_embeddings(emb_b, "emb_b", d + 1)
    if emb_b.shape[1] != d:
        raise ValueError(f"embedding dims differ: emb_a {emb_a.shape}, emb_b {emb_b.shape}")
    return frechet_distance(*_stats(emb_a), *_stats(emb_b))


def fad_inf(emb_pred, emb_ref, n_points: int = 15, min_n: int | None = None, seed: int = 0) -> dict:
    """FAD-inf: intercept of ``FAD_n`` vs ``1 / n`` (``emb_pred`` [N, d] subsampled, ``emb_ref`` [M, d] whole).

    ``min_n`` defaults to ``max(d + 2, N // 4)``. Returns ``{"fad_inf", "slope", "r2", "ns", "fads"}``.
    """
    emb_pred = np.asarray(emb_pred, dtype=np.float64)
    d = emb_pred.shape[-1] if emb_pred.ndim == 2 else 0
    emb_pred = _check_embeddings(emb_pred, "emb_pred", d + 3)
    emb_ref = _check_embeddings(emb_ref, "emb_ref", d + 1)
    n_total = emb_pred.shape[0]
    min_n = max(d + 2, n_total // 4) if min_n is None else min_n
    if not d + 1 < min_n < n_total:
        raise ValueError(
            f"min_n must be in ({d + 1}, {n_total}) for dim {d} and {n_total} pred embeddings, got {min_n}"
        )
    ns = np.unique(np.linspace(min_n, n_total, n_points).astype(int))
    if ns.size < 2:
        raise ValueError(f"need at least 2 distinct subset sizes, got {ns.tolist()}")
    rng = np.random.default_rng(seed)
    ref_stats = _stats(emb_ref)
    fads = np.array(
        [frechet_distance(*_stats(emb_pred[rng.choice(n_total, n, replace=False)]), *ref_stats) for n in ns]
    )
    x = 1.0 / ns
    slope, intercept = np.polyfit(x, fads, 1)
    resid = fads - (intercept + slope * x)
    total = np.sum((fads - fads.mean()) ** 2)
    r2 = 1.0 - np.sum(resid**2) / total if total > 0 else 1.0
    return {
        "fad_inf": float(intercept),
        "slope": float(slope),
        "r2": float(r2),
        "ns": ns.tolist(),
        "fads": fads.tolist(),
    }


def per_clip_fad(clip_embs, ref_emb) -> list[float]:
    """Fréchet distance of each clip's windows ``[N_i, d]`` (``N_i >= 2``) to the reference set ``[M, d]``."""
    ref_emb = np.asarray(ref_emb, dtype=np.float64)
    ref_emb = _check_embeddings(ref_emb, "ref_emb", ref_emb.shape[-1] + 1 if ref_emb.ndim == 2 else 0)
    ref_stats = _stats(ref_emb)
    out = []
    for i, emb in enumerate(clip_embs):
        emb = _check_embeddings(emb, f"clip_embs[{i}]", 2)
        if emb.shape[1] != ref_emb.shape[1]:
            raise ValueError(f"clip_embs[{i}] has dim {emb.shape[1]}, ref_emb has {ref_emb.shape[1]}")
        out.append(frechet_distance(*_stats(emb), *ref_stats))
    return out


def kad(emb_a, emb_b, bandwidth: float | None = None) -> float:
    """Unbiased squared MMD between ``emb_a`` [N, d] and ``emb_b`` [M, d] (N, M >= 2), Gaussian RBF kernel."""
    from scipy.spatial.distance import cdist

    a, b = _check_embeddings(emb_a, "emb_a", 2), _check_embeddings(emb_b, "emb_b", 2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding dims differ: emb_a {a.shape}, emb_b {b.shape}")
    if bandwidth is None:
        pooled = np.concatenate([a, b])
        dists = cdist(pooled, pooled)
        bandwidth = float(np.median(dists[np.triu_indices(len(pooled), 1)]))
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth} (all embeddings identical?)")

    def k(x, y):
        return np.exp(-cdist(x, y, "sqeuclidean") / (2 * bandwidth**2))

    n, m = len(a), len(b)
    kaa, kbb = k(a, a), k(b, b)
    term_a = (kaa.sum() - np.trace(kaa)) / (n * (n - 1))
    term_b = (kbb.sum() - np.trace(kbb)) / (m * (m - 1))
    return float(term_a + term_b - 2 * k(a, b).mean())
