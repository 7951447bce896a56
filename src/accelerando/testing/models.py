"""Tiny random-weight models and pipelines: every public API can be exercised in well under a second on a CPU."""

import torch

__all__ = ["backbone_inputs", "tiny_codec", "tiny_generator", "tiny_pipeline"]


def tiny_codec(seed: int = 0, latent: str = "learned"):
    """A tiny random-weight codec: a learned latent (8 channels), or ``latent="mel"``: the 16-band log-mel itself."""
    from accelerando.models.codec import CodecConfig, MelCodec

    torch.manual_seed(seed)
    if latent == "mel":
        return MelCodec(CodecConfig.mel_vocoder(n_mels=16, dec_dim=16, dec_layers=2)).eval()
    return MelCodec(CodecConfig.tiny()).eval()


def tiny_generator(
    seed: int = 0, latent_dim: int = 8, text_dim: int = 16, frame_rate: float = 23.4375, backbone: str = "dit"
):
    """A tiny random-weight generator with a DiT (``backbone="dit"``) or a conv U-Net (``"unet"``) backbone."""
    from accelerando.models.dit import MusicDiTConfig
    from accelerando.models.generator import MusicGenerator
    from accelerando.models.unet import MusicUNetConfig

    torch.manual_seed(seed)
    tiny = {"dit": MusicDiTConfig.tiny, "unet": MusicUNetConfig.tiny}[backbone]
    cfg = tiny(latent_dim=latent_dim, text_dim=text_dim)
    cfg.frame_rate = frame_rate
    model = MusicGenerator(cfg)
    for p in model.parameters():  # adaLN-zero starts as the identity; give the tiny model non-trivial outputs
        p.data.add_(0.02 * torch.randn_like(p))
    return model.eval()


def tiny_pipeline(seed: int = 0, backbone: str = "dit", latent: str = "learned"):
    """A TextToMusicPipeline with a tiny codec (``latent``: see :func:`tiny_codec`), a tiny DiT (or U-Net) and a
    lookup-table text encoder (no downloads)."""
    from accelerando.conditioning.text import LookupTextEncoder
    from accelerando.pipelines.text_to_music import TextToMusicPipeline

    codec = tiny_codec(seed, latent)
    model = tiny_generator(seed, latent_dim=codec.latent_dim, frame_rate=codec.frame_rate, backbone=backbone)
    return TextToMusicPipeline(model, codec, LookupTextEncoder(dim=16, seed=seed))


def backbone_inputs(config, seconds: float, batch: int = 2, text_len: int = 16, known: bool = False, seed: int = 0):
    """Random inputs for one backbone call (a DiT or U-Net ``config``), for benchmarks and shape probes.

    Returns ``(x [B, T, D], t [B] = 0.5, cond)`` with ``T = round(seconds * frame_rate)``: random text tokens, pooled
    text, control vector and beat phases; the second batch entry has its text dropped, like the unconditional
    guidance branch. ``known``: also a random known latent with every frame marked known.
    """
    from accelerando.models.dit import DiTConditioning

    frames = max(1, round(seconds * config.frame_rate))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, frames, config.latent_dim, generator=g)
    cond = DiTConditioning(
        text_tokens=torch.randn(batch, text_len, config.text_dim, generator=g),
        text_mask=torch.ones(batch, text_len, dtype=torch.bool),
        text_pooled=torch.randn(batch, config.text_dim, generator=g),
        control=torch.randn(batch, config.width, generator=g),
        phases=torch.randn(batch, frames, config.phase_features, generator=g),
        known=torch.randn(batch, frames, config.latent_dim, generator=g) if known else None,
        known_mask=torch.ones(batch, frames) if known else None,
        drop_text=torch.arange(batch) % 2 == 1,
    )
    return x, torch.full((batch,), 0.5), cond
