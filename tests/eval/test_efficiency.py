import pytest
import torch

from accelerando.eval.efficiency import count_flops, gemm_peak_flops, peak_memory_mb, rtf, time_call


def test_count_flops_of_a_linear_layer_is_exact():
    lin = torch.nn.Linear(64, 32, bias=False)
    x = torch.randn(10, 64)
    assert count_flops(lambda: lin(x)) == 2 * 10 * 64 * 32


def test_timing_rtf_memory_and_peak():
    calls = []
    t = time_call(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5 and t >= 0
    assert rtf(30.0, 1.5) == 20.0
    with pytest.raises(ValueError, match="wall_seconds=0"):
        rtf(1.0, 0)
    with pytest.raises(ValueError, match="repeats=0"):
        time_call(lambda: None, repeats=0)
    assert peak_memory_mb() > 10
    assert gemm_peak_flops(torch.float32, n=128, repeats=2) > 1e6


def test_throughput_and_energy_without_a_gpu():
    import time

    from accelerando.eval.efficiency import gpu_energy_joules, throughput

    tp = throughput(lambda: time.sleep(0.02), batch=4, item_seconds=10.0, repeats=3, warmup=0)
    assert 40.0 / 0.2 < tp <= 40.0 / 0.02  # 40 s of audio in a little over 20 ms
    with pytest.raises(ValueError, match="batch=0"):
        throughput(lambda: None, batch=0, item_seconds=1.0)
    if not torch.cuda.is_available():
        joules, why = gpu_energy_joules(lambda: None)
        assert joules is None and "CUDA" in why


def test_time_interleaved_runs_each_call_once_per_round_in_turn():
    from accelerando.eval.efficiency import time_interleaved

    order = []
    times = time_interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3)
    assert order == ["a", "b"] * 3
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3} and all(t >= 0 for v in times.values() for t in v)
    assert time_interleaved({"a": lambda: None}, repeats=0) == {"a": []}
    with pytest.raises(ValueError, match="repeats=-1"):
        time_interleaved({}, repeats=-1)
