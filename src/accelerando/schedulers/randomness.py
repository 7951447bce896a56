"""The one helper through which every sampler draws its randomness.

Noise is drawn on the generator's device (CPU when no generator is given) in float32, then cast and moved, so a seed
reproduces the same noise whatever the target device or dtype. Pattern: diffusers ``randn_tensor``.
"""

from collections.abc import Sequence

import torch

__all__ = ["randn_tensor"]


def _draw(shape: tuple[int, ...], generator: torch.Generator | None, dtype: torch.dtype) -> torch.Tensor:
    # float32 draws (float64 only when asked for) so a seed gives the same values in fp16/bf16/fp32
    draw_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(shape, generator=generator, device=device, dtype=draw_dtype)


def randn_tensor(
    shape: Sequence[int] | torch.Size,
    generator: torch.Generator | list[torch.Generator] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise of ``shape`` (e.g. ``[B, T, D]``), drawn reproducibly.

    Args:
        shape: output shape; with a list of generators its first dim is the batch ``B``.
        generator: one ``torch.Generator`` for the whole tensor; a list of ``B`` generators, item ``i`` drawn from
            ``generator[i]`` (so a clip's noise does not depend on what else is in the batch); or ``None`` for
            torch's default CPU generator.
        device: where the result lives (CPU when ``None``). Noise is always drawn on the generator's own device
            and then moved, so a CPU generator gives the same noise on every device.
        dtype: dtype of the result. Drawn in float32 (float64 when asked for) and cast.

    Returns:
        Tensor of ``shape`` on ``device`` with ``dtype``.
    """
    shape = tuple(int(s) for s in shape)
    device = torch.device("cpu") if device is None else torch.device(device)
    if isinstance(generator, (list, tuple)):
        if len(shape) == 0 or len(generator) != shape[0]:
            raise ValueError(
                f"got a list of {len(generator)} generators for shape {shape}; pass one generator per batch item "
                "(len(generator) == shape[0]) or a single generator"
            )
        items = [_draw((1, *shape[1:]), g, dtype).to(device) for g in generator]
        out = torch.cat(items, dim=0) if items else torch.empty(shape, device=device)
    else:
        out = _draw(shape, generator, dtype).to(device)
    return out.to(dtype)
