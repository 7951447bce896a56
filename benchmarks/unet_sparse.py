"""MACs and wall time of windowed MusicUNet calls (cached GroupNorm statistics) against full calls.

    .venv/bin/python benchmarks/unet_sparse.py [--seconds 60] [--fractions 0.01,0.05,0.1,0.25] [--repeats 5]

One backbone evaluation with classifier-free guidance (batch 2) of the default MusicUNet config on a clip of
``--seconds`` at the codec's 93.75 frames per second; the edit is a centred region of each fraction. FLOPs are
counted by ``torch.utils.flop_counter.FlopCounterMode`` (MACs = FLOPs / 2); wall times are medians of ``--repeats``
runs of each, alternated in one process (bf16 autocast as in the pipeline), reported as full / windowed. Random
weights (the backbone's cost does not depend on them); the size of the statistics cache is per evaluation.
"""

import argparse
import json
import statistics
import sys

import torch

from accelerando.cache.unet_sparse import receptive_radius, unet_forward
from accelerando.eval.efficiency import count_flops, time_interleaved
from accelerando.models.unet import MusicUNet, MusicUNetConfig
from accelerando.testing.models import backbone_inputs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--fractions", default="0.01,0.05,0.1,0.25")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = MusicUNetConfig()
    unet = MusicUNet(cfg).eval()
    for p in unet.parameters():
        p.data.add_(0.02 * torch.randn_like(p))
    x, t, cond = backbone_inputs(cfg, args.seconds, known=True)
    frames = x.shape[1]

    def full():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return unet_forward(unet, x, t, cond, record=True)

    _, stats = full()
    rows = []
    full_flops = count_flops(full)
    for frac in [float(f) for f in args.fractions.split(",")]:
        n = max(1, int(round(frac * frames)))
        a = (frames - n) // 2
        win = [(a, a + n)]

        def sparse(win=win):
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                return unet_forward(unet, x, t, cond, windows=win, stats=stats)

        sparse_flops = count_flops(sparse)
        full(), sparse()  # warm-up
        timed = time_interleaved({"full": full, "sparse": sparse}, args.repeats)
        tf, ts = timed["full"], timed["sparse"]
        rows.append(
            {
                "fraction": frac,
                "edited_frames": n,
                "mac_ratio": full_flops / sparse_flops,
                "wall_full_s": statistics.median(tf),
                "wall_sparse_s": statistics.median(ts),
                "wall_ratio": statistics.median(tf) / statistics.median(ts),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    summary = {
        "seconds": args.seconds,
        "frames": frames,
        "params_m": sum(p.numel() for p in unet.parameters()) / 1e6,
        "receptive_radius_frames": receptive_radius(unet),
        "full_gmacs_per_eval": full_flops / 2e9,
        "stats_bytes_per_eval": stats.nbytes(),
        "threads": args.threads,
        "rows": rows,
    }
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
