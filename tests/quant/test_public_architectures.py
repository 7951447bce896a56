"""The quantizers apply to the public MusicGen decoder (transformers) unchanged: tiny random-weight config, logits
against float above SQNR floors, SVDQuant above RTN at the same bits, safetensors round trip."""

import copy

import pytest
import torch
from torch import nn

from accelerando.quant import (
    RTNConfig,
    SVDQuantConfig,
    calibrate_,
    load_quantized,
    quantize_,
    quantized_layers,
    save_quantized,
)
from accelerando.testing.sqnr import sqnr

transformers = pytest.importorskip("transformers")


def _musicgen():
    torch.manual_seed(0)
    cfg = transformers.MusicgenDecoderConfig(
        vocab_size=64,
        max_position_embeddings=64,
        num_hidden_layers=2,
        ffn_dim=128,
        num_attention_heads=4,
        hidden_size=64,
        num_codebooks=2,
        pad_token_id=63,
        bos_token_id=63,
    )
    return transformers.MusicgenForCausalLM(cfg).eval()


def _batch(seed: int) -> dict:
    """Codes for 2 clips x 2 codebooks and text-encoder states for the cross-attention."""
    g = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(0, 63, (4, 24), generator=g),
        "encoder_hidden_states": torch.randn(2, 7, 64, generator=g),
    }


def _calib():
    """Two calibration batches, as callables ``model -> output``."""
    return [lambda m, b=b: m(**b) for b in (_batch(1), _batch(2))]


def _blocks(module: nn.Module, name: str) -> bool:  # the decoder layers' Linears (attention, cross-attention, MLP)
    return ".layers." in name and isinstance(module, nn.Linear)


# measured (seed 0): W8A8 61.4 dB, W8A8 per-tensor 61.2, W4A8 g32 39.6, SVDQuant W4A8 g32 rank 8 42.0
@pytest.mark.parametrize(
    "cfg,floor",
    [
        (RTNConfig(8, 8), 55),
        (RTNConfig(8, 8, act_scale="tensor"), 55),
        (RTNConfig(4, 8, 32), 34),
        (SVDQuantConfig(4, 8, rank=8, group_size=32), 36),
    ],
)
def test_musicgen_decoder_quantizes_and_round_trips(cfg, floor, tmp_path):
    float_model = _musicgen()
    ev = _batch(9)
    with torch.no_grad():
        ref = float_model(**ev).logits
    q = copy.deepcopy(float_model)
    if cfg.needs_calibration:
        calibrate_(q, cfg, _calib(), filter_fn=_blocks)
    else:
        quantize_(q, cfg, filter_fn=_blocks)
    assert len(quantized_layers(q)) == 20  # 2 layers x (4 self-attention + 4 cross-attention + 2 MLP)
    with torch.no_grad():
        out = q(**ev).logits
    assert sqnr(ref, out) > floor
    path = save_quantized(q, tmp_path / "musicgen.safetensors")
    loaded = load_quantized(_musicgen(), path)
    with torch.no_grad():  # the stored buffers come back contiguous: BLAS may sum in another order
        torch.testing.assert_close(loaded(**ev).logits, out, rtol=1e-5, atol=1e-6)


def test_svdquant_beats_rtn_on_musicgen_with_outlier_channels():
    float_model = _musicgen()
    with torch.no_grad():  # two hidden channels with large activations, as trained transformers have
        for layer in float_model.model.decoder.layers:
            layer.self_attn_layer_norm.weight[[5, 40]] *= 12
            layer.final_layer_norm.weight[[5, 40]] *= 12
    ev = _batch(9)
    with torch.no_grad():
        ref = float_model(**ev).logits
    rtn = copy.deepcopy(float_model)
    quantize_(rtn, RTNConfig(4, 8, 32), filter_fn=_blocks)
    svd = copy.deepcopy(float_model)
    calibrate_(svd, SVDQuantConfig(4, 8, rank=8, group_size=32), _calib(), filter_fn=_blocks)
    with torch.no_grad():
        assert sqnr(ref, svd(**ev).logits) > sqnr(ref, rtn(**ev).logits) + 2
