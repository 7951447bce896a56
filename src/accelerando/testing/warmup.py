"""Compile librosa's numba kernels once, in one process: `python -m accelerando.testing.warmup`.

numba caches compiled functions next to the installed librosa. In a fresh environment, test workers running in
parallel would each compile the same kernels at once, which has crashed the beat tracker with a segmentation
fault; `make test` runs this first so that the workers only read the finished cache.
"""

import numpy as np

__all__ = ["warm_up"]


def warm_up(sample_rate: int = 22050) -> None:
    from accelerando.eval.beats import track_beats
    from accelerando.eval.key import estimate_key
    from accelerando.eval.structure import estimate_segments
    from accelerando.eval.tempo import beat_consistency
    from accelerando.eval.transients import transient_smearing_ratio

    rng = np.random.default_rng(0)
    y = np.zeros(12 * sample_rate)
    for t in np.arange(0.2, 11.5, 0.5):
        i = int(t * sample_rate)
        y[i : i + 256] += rng.standard_normal(256) * np.hanning(256)
    track_beats(y, sample_rate)
    beat_consistency(y, sample_rate)
    transient_smearing_ratio(y, y, sample_rate)
    estimate_key(y, sample_rate)
    estimate_segments(y, sample_rate)


if __name__ == "__main__":
    warm_up()
