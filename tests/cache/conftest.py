import pytest
import torch

from accelerando.conditioning.text import LookupTextEncoder
from accelerando.models.codec import CodecConfig, MelCodec
from accelerando.models.dit import MusicDiTConfig
from accelerando.models.generator import MusicGenerator
from accelerando.models.unet import MusicUNetConfig
from accelerando.pipelines.text_to_music import TextToMusicPipeline


def mel_pipeline(seed: int = 0, backbone: str = "dit") -> TextToMusicPipeline:
    """A tiny pipeline whose codec has a mel latent, so the sparse codec decode path runs too; ``backbone`` is
    ``"dit"`` or ``"unet"``."""
    torch.manual_seed(seed)
    codec = MelCodec(CodecConfig.mel_vocoder(n_mels=16, dec_dim=16, dec_layers=2)).eval()
    for p in codec.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    tiny = {"dit": MusicDiTConfig.tiny, "unet": MusicUNetConfig.tiny}[backbone]
    cfg = tiny(latent_dim=16, text_dim=16)
    cfg.frame_rate = codec.frame_rate
    model = MusicGenerator(cfg)
    for p in model.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    return TextToMusicPipeline(model.eval(), codec, LookupTextEncoder(dim=16, seed=seed))


@pytest.fixture
def mel():
    """Factory of tiny mel-latent pipelines: ``mel(seed, backbone="dit")``."""
    return mel_pipeline
