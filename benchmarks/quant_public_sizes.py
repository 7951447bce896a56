"""Weight bytes of SVDQuant-Audio W4A8 (rank 32) on the public MusicGen decoder at its published widths.

    .venv/bin/python benchmarks/quant_public_sizes.py [--models small,medium,large] [--json OUT]

The rank-``r`` 16-bit branch of a ``K -> N`` Linear costs ``2 r (K + N)`` bytes whatever the width, while the 4-bit
residual costs about ``K N / 2``: how much smaller than bf16 a layer gets depends on its width. The built-in U-Net's
convolutions (``K = 3 x 192..384``) cannot reach 3.5x at rank 32 (BENCHMARKS.md); this script measures where the
public MusicGen architecture lands. Each model is one decoder layer of its published config (hidden size, FFN width,
heads; every layer of a model has the same Linears, so the per-layer ratio is the ratio of all its decoder layers),
built from ``transformers.MusicgenDecoderConfig`` with random weights (sizes do not depend on the values), and
quantized with ``accelerando.quant``'s configs: the state-dict bytes of the layer's 10 Linears (self-attention,
cross-attention, MLP) against their bf16 bytes. Calibration is one random batch and a fixed smoothing alpha (the
bytes do not depend on it). No download: only the config classes are used.
"""

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

# hidden size, FFN width, attention heads of the published MusicGen checkpoints (facebook/musicgen-*)
WIDTHS = {"small": (1024, 4096, 16), "medium": (1536, 6144, 24), "large": (2048, 8192, 32)}


def _layer_model(name: str):
    from transformers import MusicgenDecoderConfig, MusicgenForCausalLM

    hidden, ffn, heads = WIDTHS[name]
    cfg = MusicgenDecoderConfig(
        vocab_size=2048,
        max_position_embeddings=64,
        num_hidden_layers=1,
        ffn_dim=ffn,
        num_attention_heads=heads,
        hidden_size=hidden,
        num_codebooks=4,
        pad_token_id=2047,
        bos_token_id=2047,
    )
    torch.manual_seed(0)
    return MusicgenForCausalLM(cfg).eval(), hidden


def _blocks(module: nn.Module, name: str) -> bool:
    return ".layers." in name and isinstance(module, nn.Linear)


def _bytes(model: nn.Module, names: list[str]) -> int:
    return sum(t.numel() * t.element_size() for n in names for t in model.get_submodule(n).state_dict().values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="small,medium,large")
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from accelerando.quant import RTNConfig, SVDQuantConfig, calibrate_, quantize_

    variants = {
        "W4A8 RTN, group 64": RTNConfig(4, 8, 64),
        f"W4A8 SVD rank {args.rank}, group 64": SVDQuantConfig(4, 8, args.rank, 64, calibration=None),
        f"W4A8 SVD rank {args.rank}, per channel": SVDQuantConfig(4, 8, args.rank, None, calibration=None),
    }
    results = {}
    for name in args.models.split(","):
        if name not in WIDTHS:
            raise SystemExit(f"--models {name!r}: use some of {', '.join(WIDTHS)}")
        model, hidden = _layer_model(name)
        names = [n for n, m in model.named_modules() if _blocks(m, n)]
        bf16 = sum(2 * p.numel() for n in names for p in model.get_submodule(n).parameters())
        g = torch.Generator().manual_seed(1)
        batch = {
            "input_ids": torch.randint(0, 2047, (4, 16), generator=g),
            "encoder_hidden_states": torch.randn(1, 8, hidden, generator=g),
        }
        row = {"hidden": hidden, "ffn": WIDTHS[name][1], "linears": len(names), "bf16_bytes": bf16, "variants": {}}
        for label, cfg in variants.items():
            t0 = time.perf_counter()
            q, _ = _layer_model(name)
            with torch.no_grad():
                if cfg.needs_calibration:
                    calibrate_(q, cfg, [lambda m, b=batch: m(**b)], filter_fn=_blocks)
                else:
                    quantize_(q, cfg, filter_fn=_blocks)
            b = _bytes(q, names)
            low = sum(
                t.numel() * t.element_size()
                for n in names
                for k, t in q.get_submodule(n).state_dict().items()
                if k.startswith("lora_")
            )
            row["variants"][label] = {
                "bytes": b,
                "ratio_vs_bf16": bf16 / b,
                "lowrank_bytes": low,
                "seconds": time.perf_counter() - t0,
            }
            print(f"{name:6s} {label:32s} {b / 1e6:8.2f} MB  {bf16 / b:.2f}x smaller than bf16 ({bf16 / 1e6:.2f} MB)")
        results[name] = row
    report = {"torch": torch.__version__, "rank": args.rank, "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
