import math

import numpy as np
import pytest
import torch

from accelerando.eval.paired import (
    HIGHER_IS_BETTER,
    PAIRED_METRIC_VERSIONS,
    PAIRED_METRICS,
    complex_stft_error,
    complex_stft_error_db,
    lsd,
    mel_distance,
    mrstft,
    si_sdr,
)

SR = 16000
N = SR  # 1 s clips keep the whole file well under a few seconds on CPU
DISTANCES = ["lsd", "mrstft", "mel_distance", "complex_stft"]


def _tone(n: int = N, f0: float = 220.0, seed: int = 0) -> np.ndarray:
    """Music-like test signal [n]: 19 harmonics with a slow amplitude envelope over a -60 dB noise floor."""
    t = np.arange(n) / SR
    x = sum(np.sin(2 * np.pi * f0 * k * t + k) / k for k in range(1, 20))
    env = 0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t)
    return 0.3 * x * env + 1e-3 * np.random.default_rng(seed).standard_normal(n)


def _add_noise(x: np.ndarray, snr_db: float, seed: int = 1) -> np.ndarray:
    """x + zero-mean white noise scaled to exactly ``snr_db`` against the zero-mean signal."""
    noise = np.random.default_rng(seed).standard_normal(x.shape[-1])
    noise -= noise.mean()
    x0 = x - x.mean()
    return x + noise * np.sqrt(np.sum(x0**2) / np.sum(noise**2) / 10 ** (snr_db / 10))


def _lowpass(x: np.ndarray, cutoff_hz: float) -> np.ndarray:
    spec = np.fft.rfft(x)
    spec[np.fft.rfftfreq(x.shape[-1], 1 / SR) > cutoff_hz] = 0
    return np.fft.irfft(spec, n=x.shape[-1])


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small FFTs run far faster on one thread than on two contended ones; restore the setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ref() -> np.ndarray:
    return _tone()


def test_registry_names_versions_and_uniform_signature(ref):
    assert set(PAIRED_METRICS) == {"lsd", "mrstft", "mel_distance", "si_sdr", "complex_stft"}
    assert set(PAIRED_METRIC_VERSIONS) == set(PAIRED_METRICS) == set(HIGHER_IS_BETTER)
    assert all(v.endswith("-v1") for v in PAIRED_METRIC_VERSIONS.values())
    pred = _add_noise(ref, 20)
    for name, fn in PAIRED_METRICS.items():
        value = fn(pred, ref, SR)
        assert type(value) is float and math.isfinite(value), name


def test_identical_signals(ref):
    for name in DISTANCES:
        assert PAIRED_METRICS[name](ref, ref, SR) == 0.0, name
    assert si_sdr(ref, ref) > 90
    assert si_sdr(0.5 * ref, ref) > 90  # scale invariant
    assert complex_stft_error_db(ref, ref) == -200.0  # the floor


def test_every_metric_is_monotonic_in_snr(ref):
    snrs = [40, 20, 10, 0]
    scores = {name: [fn(_add_noise(ref, s), ref, SR) for s in snrs] for name, fn in PAIRED_METRICS.items()}
    for name, values in scores.items():
        expected = sorted(values, reverse=HIGHER_IS_BETTER[name])
        assert values == expected and len(set(values)) == len(values), (name, values)
    # SI-SDR recovers the SNR of independent additive noise; the relative complex error is 10^(-SNR/10).
    np.testing.assert_allclose(scores["si_sdr"], snrs, atol=0.1)
    np.testing.assert_allclose(scores["complex_stft"], [10 ** (-s / 10) for s in snrs], rtol=0.05)


def test_lowpass_increases_lsd(ref):
    values = [lsd(_lowpass(ref, cutoff), ref) for cutoff in (7000, 3000, 1000)]
    assert 0 < values[0] < values[1] < values[2]


def test_phase_changes_show_in_complex_error_not_in_lsd():
    sig = _tone(N + 8)
    ref, shifted = sig[:N], sig[4 : N + 4]  # 4-sample (0.25 ms) delay
    noisy = _add_noise(ref, 40)
    # A polarity flip is invisible to every magnitude metric and to SI-SDR, but doubles X: error |2X|^2/|X|^2 = 4.
    assert lsd(-ref, ref) == 0.0 and mrstft(-ref, ref) == 0.0 and mel_distance(-ref, ref, SR) == 0.0
    assert complex_stft_error(-ref, ref) == pytest.approx(4.0)
    assert complex_stft_error_db(-ref, ref) == pytest.approx(10 * math.log10(4.0))
    # The shift barely moves LSD (edge frames only) but costs far more complex error than 40 dB SNR noise.
    assert lsd(shifted, ref) < 2.0 < lsd(noisy, ref)
    assert complex_stft_error(shifted, ref) > 0.3 > 1000 * complex_stft_error(noisy, ref)


def test_si_sdr_matches_direct_formula():
    rng = np.random.default_rng(3)
    s, s_hat = rng.standard_normal(4000) + 0.2, rng.standard_normal(4000) * 0.3 - 0.1
    s_hat += 0.7 * s
    s0, e0 = s - s.mean(), s_hat - s_hat.mean()
    target = (e0 @ s0) / (s0 @ s0) * s0
    expected = 10 * np.log10(np.sum(target**2) / np.sum((e0 - target) ** 2))
    assert si_sdr(s_hat, s) == pytest.approx(expected, abs=1e-6)
    assert si_sdr(s_hat * 3.0 + 5.0, s) == pytest.approx(expected, abs=1e-6)  # gain and DC offset ignored


def test_si_sdr_matches_torchmetrics():
    tm_audio = pytest.importorskip("torchmetrics.functional.audio")
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(3, 2, 4000, generator=g, dtype=torch.float64)
    pred = 0.7 * ref + 0.3 * torch.randn(3, 2, 4000, generator=g, dtype=torch.float64) + 0.1
    expected = tm_audio.scale_invariant_signal_distortion_ratio(pred, ref, zero_mean=True).mean(-1)  # [B]
    np.testing.assert_allclose(si_sdr(pred, ref), expected.numpy(), atol=1e-6)


def test_batch_matches_unbatched_and_inputs_are_interchangeable(ref):
    stereo = np.stack([ref, _tone(seed=5)])  # [C=2, S]
    preds = np.stack([_add_noise(stereo, s, seed=s) for s in (30, 10, 0)])  # [B=3, C, S]
    refs = np.stack([stereo] * 3)  # [B, C, S]
    for name, fn in PAIRED_METRICS.items():
        batched = fn(torch.from_numpy(preds), torch.from_numpy(refs), SR)
        assert isinstance(batched, list) and len(batched) == 3
        np.testing.assert_allclose(
            batched, [fn(p, r, SR) for p, r in zip(preds, refs, strict=True)], rtol=1e-9, err_msg=name
        )
    mono = _add_noise(ref, 10)
    for name, fn in PAIRED_METRICS.items():
        one = fn(mono, ref, SR)
        assert fn(mono[None], ref[None], SR) == pytest.approx(one, rel=1e-9), name  # [S] == [1, S]
        as_f32 = fn(torch.tensor(mono, dtype=torch.float32), ref.astype(np.float32), SR)
        assert as_f32 == pytest.approx(one, rel=1e-3), name  # float32 torch vs float32 numpy vs float64


def test_silent_signals():
    zeros, tone = np.zeros(4096), _tone(4096)
    assert complex_stft_error(zeros, zeros) == 0.0
    assert complex_stft_error(tone, zeros) == math.inf
    assert lsd(zeros, zeros) == 0.0 and mrstft(zeros, zeros) == 0.0


def test_invalid_inputs_raise(ref):
    with pytest.raises(ValueError, match=r"pred \(16000,\) and ref \(15999,\)"):
        lsd(ref, ref[:-1])
    with pytest.raises(ValueError, match=r"pred \(2, 16000\) and ref \(16000,\)"):
        si_sdr(np.stack([ref, ref]), ref)
    bad = ref.copy()
    bad[10] = np.nan
    with pytest.raises(ValueError, match="pred contains NaN or inf"):
        mrstft(bad, ref)
    bad[10] = np.inf
    with pytest.raises(ValueError, match="ref contains NaN or inf"):
        si_sdr(ref, bad)
    with pytest.raises(ValueError, match=r"\[S\], \[C, S\] or \[B, C, S\]"):
        complex_stft_error(ref.reshape(1, 1, 1, -1), ref.reshape(1, 1, 1, -1))
    with pytest.raises(ValueError, match="at least 1025 samples"):
        mrstft(ref[:1000], ref[:1000])
    with pytest.raises(ValueError, match="one length"):
        mrstft(ref, ref, fft_sizes=(512,), hop_sizes=(128, 64), win_lengths=(512,))
    with pytest.raises(ValueError, match="sample_rate"):
        mel_distance(ref, ref, 0)


def test_mrstft_matches_auraloss():
    auraloss = pytest.importorskip("auraloss")
    loss = auraloss.freq.MultiResolutionSTFTLoss()
    ref = np.stack([_tone(), _tone(f0=330.0, seed=7)])  # [C=2, S]
    pred = _add_noise(ref, 15)
    expected = float(loss(torch.tensor(pred[None], dtype=torch.float32), torch.tensor(ref[None], dtype=torch.float32)))
    assert mrstft(pred, ref) == pytest.approx(expected, rel=1e-4)
    expected_mono = float(loss(torch.tensor(pred[:1, None]).float(), torch.tensor(ref[:1, None]).float()))
    assert mrstft(pred[0], ref[0]) == pytest.approx(expected_mono, rel=1e-4)


@pytest.mark.gpu
def test_cuda_inputs_match_cpu(ref):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    pred = _add_noise(ref, 10)
    for name, fn in PAIRED_METRICS.items():
        on_gpu = fn(torch.tensor(pred, device="cuda"), torch.tensor(ref, device="cuda"), SR)
        assert on_gpu == pytest.approx(fn(pred, ref, SR), rel=1e-6), name
