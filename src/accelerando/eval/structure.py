"""Structural segmentation from audio, scored against reference sections with ``mir_eval.segment``.

Estimator, version ``seg-v1`` (Foote's checkerboard novelty, then clustering of the segments):

1. Features, about 10 frames a second (hop ``64 * round(0.1 * sr / 64)`` samples): librosa ``chroma_cqt`` (12,
   harmony) stacked on ``mfcc`` 1-12 (timbre; c0, the loudness, is dropped). Each row is z-scored over time, each
   frame scaled to unit norm, and the self-similarity matrix is ``SSM = X^T X`` (cosine similarity, [T, T]).
2. Novelty: the SSM correlated along its diagonal with a Gaussian-tapered checkerboard kernel of half-width 3 s
   (sigma = half-width / 2), normalised so blocks of similarity 1 with similarity -1 across score 1 (0 across:
   0.5); it is 0 within a half-width of the clip's ends, so no boundary is placed there.
3. Boundaries: peaks of the novelty at least 2 s apart (``scipy.signal.find_peaks``) that reach 0.1 and a
   prominence of 0.05; with ``n_segments`` given, the ``n_segments - 1`` highest peaks instead.
4. Labels: segment-mean features clustered by average-linkage agglomerative clustering (scipy) on cosine distance,
   cut at distance 0.5 (or into ``n_labels`` clusters); labels are "A", "B", ... in order of first appearance.

Scores (:func:`segment_scores`): ``mir_eval.segment.detection`` precision, recall and F of the boundaries at 0.5 s
and 3 s windows with ``trim=True`` (the trivial first and last boundaries are left out, as in MIREX), and, when the
reference has labels, ``mir_eval.segment.pairwise`` frame-pair clustering P/R/F (0.1 s frames) after both
annotations are cut or padded to ``[0, end of the last reference section]``. Hit rates are NaN when the reference
has no inner boundary.
"""

import numpy as np

from accelerando.eval._validate import check_mono

__all__ = ["SEGMENT_VERSION", "estimate_segments", "segment_scores", "structure_accuracy"]

SEGMENT_VERSION = "seg-v1"

_FRAME_S = 0.1
_KERNEL_S = 3.0  # checkerboard half-width
_MIN_GAP_S = 2.0
_MIN_NOVELTY, _MIN_PROMINENCE = 0.1, 0.05
_LABEL_DISTANCE = 0.5  # cosine distance at which the segment dendrogram is cut
_N_MFCC = 13


def _features(y: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
    """Unit-norm z-scored chroma + MFCC frames [D, T] and the frame period in seconds."""
    import librosa

    hop = 64 * max(1, round(_FRAME_S * sample_rate / 64))  # chroma_cqt needs a multiple of 2^(octaves - 1)
    chroma = librosa.feature.chroma_cqt(y=y, sr=sample_rate, hop_length=hop)  # [12, T]
    mfcc = librosa.feature.mfcc(y=y, sr=sample_rate, hop_length=hop, n_mfcc=_N_MFCC)[1:]  # [12, T']
    t = min(chroma.shape[1], mfcc.shape[1])
    x = np.concatenate([chroma[:, :t], mfcc[:, :t]])  # [D, T]
    x = (x - x.mean(axis=1, keepdims=True)) / (x.std(axis=1, keepdims=True) + 1e-8)
    return x / (np.linalg.norm(x, axis=0, keepdims=True) + 1e-8), hop / sample_rate


def _novelty(x: np.ndarray, half: int) -> np.ndarray:
    """Checkerboard-kernel novelty [T] of the self-similarity ``x^T x`` of frames [D, T]; 0 where it does not fit.

    Only the band of the SSM around its diagonal is formed, one [2L, 2L] block per frame, so memory stays O(T).
    """
    offsets = np.arange(-half, half) + 0.5
    taper = np.exp(-0.5 * (offsets / (half / 2)) ** 2)
    kernel = np.outer(np.sign(offsets) * taper, np.sign(offsets) * taper)  # [2L, 2L]: + same side, - across
    kernel /= np.abs(kernel).sum()  # similarity 1 within and -1 across a boundary scores 1; 0 across scores 0.5
    novelty = np.zeros(x.shape[1])
    for t in range(half, x.shape[1] - half + 1):
        block = x[:, t - half : t + half]  # [D, 2L]
        novelty[t] = np.sum(kernel * (block.T @ block))
    return novelty


def _cluster(means: np.ndarray, n_labels: int | None) -> list[str]:
    """Letter labels for segment-mean feature rows [N, D], first appearance first."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    if len(means) == 1:
        return ["A"]
    tree = linkage(np.nan_to_num(pdist(means, "cosine"), nan=1.0), method="average")  # a zero mean is 1 from all
    if n_labels is None:
        ids = fcluster(tree, t=_LABEL_DISTANCE, criterion="distance")
    else:
        ids = fcluster(tree, t=n_labels, criterion="maxclust")
    order = {c: i for i, c in enumerate(dict.fromkeys(ids))}
    return [chr(ord("A") + order[c] % 26) + ("" if order[c] < 26 else str(order[c] // 26)) for c in ids]


def estimate_segments(
    y: np.ndarray, sample_rate: int, n_segments: int | None = None, n_labels: int | None = None
) -> tuple[np.ndarray, list[str]]:
    """Segment mono audio ``y`` [S] (at least 6 s) as in the module docstring.

    Returns (intervals [N, 2] in seconds covering ``[0, S / sr]``, N labels). ``n_segments`` and ``n_labels``
    fix the number of segments and distinct labels (the estimate may have fewer segments if the novelty has
    fewer peaks).
    """
    import scipy.signal

    for name, value in (("n_segments", n_segments), ("n_labels", n_labels)):
        if value is not None and (not isinstance(value, int | np.integer) or value < 1):
            raise ValueError(f"{name} must be a positive int or None, got {value!r}")
    x, frame_s = _features(check_mono(y, sample_rate, 2 * _KERNEL_S), sample_rate)
    novelty = _novelty(x, round(_KERNEL_S / frame_s))
    if n_segments is None:
        peaks, _ = scipy.signal.find_peaks(
            novelty, height=_MIN_NOVELTY, prominence=_MIN_PROMINENCE, distance=round(_MIN_GAP_S / frame_s)
        )
    else:
        peaks, _ = scipy.signal.find_peaks(novelty, distance=round(_MIN_GAP_S / frame_s))
        peaks = np.sort(peaks[np.argsort(novelty[peaks])[::-1][: n_segments - 1]])
    edges = np.concatenate([[0], peaks, [x.shape[1]]])  # frames
    means = np.stack([x[:, a:b].mean(axis=1) for a, b in zip(edges[:-1], edges[1:], strict=True)])  # [N, D]
    times = np.concatenate([[0.0], peaks * frame_s, [len(y) / sample_rate]])
    return np.stack([times[:-1], times[1:]], axis=1), _cluster(means, n_labels)


def _reference(sections: list[dict]) -> tuple[np.ndarray, list | None]:
    """Reference intervals [N, 2] and labels (None if any section lacks one) from {"start", "end", "label"} dicts."""
    if not sections:
        raise ValueError("reference has no sections")
    try:
        intervals = np.array([[float(s["start"]), float(s["end"])] for s in sections])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"reference sections need numeric 'start' and 'end' in seconds; got {sections[0]!r}") from e
    if not np.all(np.isfinite(intervals)) or np.any(intervals[:, 1] <= intervals[:, 0]) or intervals.min() < 0:
        raise ValueError(f"reference sections need 0 <= start < end; got {intervals.tolist()}")
    labels = [s.get("label") for s in sections]
    return intervals, None if any(label is None for label in labels) else [str(label) for label in labels]


def segment_scores(
    reference: list[dict], est_intervals: np.ndarray, est_labels: list[str] | None = None
) -> dict[str, float | str]:
    """mir_eval hit rates (and pairwise clustering scores when both sides have labels) of an estimate.

    ``reference`` is a list of {"start", "end", "label"} sections in seconds (the corpus label format);
    ``est_intervals`` [N, 2] in seconds. Returns ``hit_{p,r,f}_500ms``, ``hit_{p,r,f}_3s`` and, when labels are
    available, ``pairwise_{p,r,f}`` (NaN otherwise), plus ``version``.
    """
    import mir_eval

    ref_int, ref_lab = _reference(reference)
    est_int = np.asarray(est_intervals, dtype=float)
    mir_eval.util.validate_intervals(est_int)
    out: dict[str, float | str] = {"version": SEGMENT_VERSION}
    for window, tag in ((0.5, "500ms"), (3.0, "3s")):
        if len(ref_int) < 2:
            p = r = f = float("nan")
        else:
            p, r, f = mir_eval.segment.detection(ref_int, est_int, window=window, trim=True)
        out |= {f"hit_p_{tag}": float(p), f"hit_r_{tag}": float(r), f"hit_f_{tag}": float(f)}
    pairwise = (float("nan"),) * 3
    if ref_lab is not None and est_labels is not None:
        end = ref_int[-1, 1]
        ref_int, ref_lab = mir_eval.util.adjust_intervals(ref_int, ref_lab, t_min=0.0, t_max=end)
        est_int, est_labels = mir_eval.util.adjust_intervals(est_int, list(est_labels), t_min=0.0, t_max=end)
        pairwise = mir_eval.segment.pairwise(ref_int, ref_lab, est_int, est_labels, frame_size=0.1)
    return out | {f"pairwise_{k}": float(v) for k, v in zip("prf", pairwise, strict=True)}


def structure_accuracy(
    y: np.ndarray, sample_rate: int, reference: list[dict], n_segments: int | None = None
) -> dict[str, float | str | int]:
    """Segment mono audio ``y`` [S] with :func:`estimate_segments` and score it with :func:`segment_scores`.

    Pass ``n_segments=len(reference)`` for the oracle-count variant. Adds ``n_est_segments`` to the scores.
    """
    _reference(reference)  # fail on a bad reference before any compute
    intervals, labels = estimate_segments(y, sample_rate, n_segments=n_segments)
    return segment_scores(reference, intervals, labels) | {"n_est_segments": len(intervals)}
