import torch

from accelerando.bench.measure import BackboneProbe
from accelerando.testing.models import tiny_pipeline


def test_probe_scales_flops_by_the_rows_of_every_call():
    """With a guidance interval, unguided steps run one row instead of three: FLOPs per clip follow the rows."""
    pipe = tiny_pipeline()
    probe = BackboneProbe(pipe)
    with probe:
        pipe("x", duration=1.0, steps=4, cfg=3.0, rhythm_cfg=5.0, guidance_interval=(0.8, 1.0),
             generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert probe.calls == 4 and probe.rows == [3, 3, 1, 1]  # flow times 1, 0.9 guided; 0.75, 0.5 not
    assert probe.flop_rows == 8 / 3
    flops = probe.count_flops()
    assert flops["batch"] == 3 and flops["flops"] > 0
