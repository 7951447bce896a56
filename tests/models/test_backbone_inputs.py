import pytest
import torch

from accelerando.testing.models import backbone_inputs, tiny_generator


@pytest.mark.parametrize("backbone", ["dit", "unet"])
@pytest.mark.parametrize("known", [False, True])
def test_backbone_inputs_drive_either_backbone(backbone, known):
    model = tiny_generator(backbone=backbone)
    x, t, cond = backbone_inputs(model.config, seconds=1.0, known=known)
    frames = round(model.config.frame_rate)
    assert x.shape == (2, frames, model.config.latent_dim) and t.tolist() == [0.5, 0.5]
    assert cond.drop_text.tolist() == [False, True] and (cond.known_mask is not None) == known
    with torch.inference_mode():
        v = model.dit(x, t, cond)
    assert v.shape == x.shape and torch.isfinite(v).all()
    x2, _, _ = backbone_inputs(model.config, seconds=1.0, known=known)
    assert torch.equal(x, x2)  # seeded: the same inputs every call
