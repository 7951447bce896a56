"""Token-sparse MusicDiT calls: run only a subset of tokens through the blocks (SIGE-Audio, transformer part).

:func:`dit_forward` re-expresses :meth:`MusicDiT.forward` from outside the model file, reusing the model's own
submodules, with two additions:

* ``idx``: the tokens to compute (sorted token indices). Only these go through the input projection, the blocks and
  the output head; the returned velocity holds their frames and zeros elsewhere.
* ``kv``: the self-attention keys and values of *all* tokens, per block (``[depth, B, H, N, Dh]`` each, post-RoPE),
  for example recorded by an earlier call with ``record``. In each block the active tokens' queries attend to these
  cached keys and values, with the active tokens' own entries replaced by their freshly computed ones. That is SIGE's
  approximation: unedited tokens keep the activations they had when the cache was recorded.

With ``idx`` = all tokens and no ``kv`` the result equals ``MusicDiT.forward`` (the tests check it). With ``kv``
recorded from the same inputs, the sparse call equals the full call on the active tokens up to rounding: the
machinery itself adds no error, only stale cache entries do.

Dims: ``B`` batch, ``T`` frames, ``D`` latent channels, ``N`` tokens, ``Na`` active tokens, ``W`` width, ``H``
heads, ``Dh`` head dim, ``L`` text tokens.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from accelerando.models.dit import DiTConditioning, MusicDiT, _timestep_embedding
from accelerando.modules.attention import attention
from accelerando.modules.rope import apply_rope, rope_tables

__all__ = ["KVRecord", "dit_forward", "edited_tokens", "dilate_tokens"]


@dataclass
class KVRecord:
    """Self-attention keys and values of the computed tokens, per block: ``k``/``v`` ``[depth, B, H, Na, Dh]``."""

    k: torch.Tensor
    v: torch.Tensor
    idx: torch.Tensor  # [Na] token indices the entries belong to


def _tokens(dit: MusicDiT, x: torch.Tensor, cond: DiTConditioning) -> torch.Tensor:
    """Per-token input features [B, N, p * (2D + 1 + phase_features)], exactly as MusicDiT.forward builds them."""
    p = dit.config.patch
    b, frames, _ = x.shape
    known = cond.known if cond.known is not None else torch.zeros_like(x)
    kmask = cond.known_mask if cond.known_mask is not None else x.new_zeros(b, frames)
    kmask = kmask.to(x.dtype)[..., None]  # [B, T, 1]
    feats = torch.cat([x, known * kmask, kmask, cond.phases.to(x.dtype)], dim=-1)  # [B, T, 2D+1+4]
    feats = F.pad(feats, (0, 0, 0, (-frames) % p))
    n = feats.shape[1] // p
    return feats.reshape(b, n, p * feats.shape[-1])


def _self_attention(attn, h, rope, idx, kv_k, kv_v):
    """``attn``'s self-attention for the active tokens ``h`` [B, Na, W], keys/values completed from the cache.

    Returns (output [B, Na, W], k_a, v_a [B, H, Na, Dh] post-RoPE).
    """
    b, na, w = h.shape
    q = attn.q(h).view(b, na, attn.heads, -1).transpose(1, 2)  # [B, H, Na, Dh]
    k_a, v_a = attn.kv(h).view(b, na, 2, attn.heads, -1).permute(2, 0, 3, 1, 4)  # 2 x [B, H, Na, Dh]
    q, k_a = apply_rope(q, *rope), apply_rope(k_a, *rope)
    if kv_k is None:
        k, v = k_a, v_a
    else:
        k = kv_k.to(k_a.dtype).index_copy(2, idx, k_a)  # [B, H, N, Dh]: cached, active rows replaced
        v = kv_v.to(v_a.dtype).index_copy(2, idx, v_a)
    y = attention(q, k, v, None)  # [B, H, Na, Dh]
    return attn.out(y.transpose(1, 2).reshape(b, na, w)), k_a, v_a


def dit_forward(
    dit: MusicDiT,
    x: torch.Tensor,
    t: torch.Tensor,
    cond: DiTConditioning,
    idx: torch.Tensor | None = None,
    kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    record: bool = False,
) -> tuple[torch.Tensor, KVRecord | None]:
    """Velocity of the tokens ``idx`` (all when None); frames of other tokens are zero.

    Args:
        dit: the backbone; only its submodules are used.
        x: [B, T, D] normalised latent (already clamped to ``cond.known`` where known, as the pipeline does).
        t: [B] flow time.
        cond: the conditioning of all frames.
        idx: sorted token indices [Na] to compute.
        kv: cached ``(k, v)``, each ``[depth, B, H, N, Dh]`` for all ``N`` tokens; needed when ``idx`` is a subset.
        record: also return the active tokens' keys and values.

    Returns:
        ``(velocity [B, T, D], KVRecord or None)``.
    """
    cfg = dit.config
    b, frames, d = x.shape
    p = cfg.patch
    tok = _tokens(dit, x, cond)  # [B, N, F]
    n = tok.shape[1]
    full = idx is None
    if full:
        idx = torch.arange(n)
    elif kv is None:
        raise ValueError("a token subset needs the cached keys and values of all tokens (kv)")
    h = dit.in_proj(tok if full else tok[:, idx])  # [B, Na, W]

    text = dit.text_proj(cond.text_tokens.to(h.dtype))  # [B, L, W]
    text_mask = cond.text_mask.bool()
    pooled = dit.pooled_proj(cond.text_pooled.to(h.dtype))  # [B, W]
    if cond.drop_text is not None and cond.drop_text.any():
        drop = cond.drop_text.bool()
        text = torch.where(drop[:, None, None], dit.null_text.to(h.dtype), text)
        text_mask = torch.where(drop[:, None], torch.ones_like(text_mask), text_mask)
        pooled = torch.where(drop[:, None], torch.zeros_like(pooled), pooled)
    c = dit.t_embed(_timestep_embedding(t).to(h.dtype)) + pooled + cond.control.to(h.dtype)  # [B, W]
    mod = dit.adaln(c).view(b, 6, -1)  # [B, 6, W]
    cos, sin = rope_tables(n, cfg.width // cfg.heads, device=x.device)
    rope = (cos, sin) if full else (cos[idx], sin[idx])
    mask = text_mask[:, None, None, :]  # [B, 1, 1, L]
    ks, vs = [], []
    for layer, block in enumerate(dit.blocks):
        shift1, scale1, gate1, shift2, scale2, gate2 = (mod + block.mod_table[None]).unbind(1)  # 6 x [B, W]
        hn = block.norm1(h) * (1 + scale1[:, None]) + shift1[:, None]
        kv_k = None if kv is None or full else kv[0][layer]
        kv_v = None if kv is None or full else kv[1][layer]
        a, k_a, v_a = _self_attention(block.attn, hn, rope, idx, kv_k, kv_v)
        h = h + gate1[:, None] * a
        h = h + block.cross(block.norm_x(h), context=text, mask=mask)
        hn = block.norm2(h) * (1 + scale2[:, None]) + shift2[:, None]
        h = h + gate2[:, None] * block.mlp(hn)
        if record:
            ks.append(k_a)
            vs.append(v_a)
    shift, scale = dit.out_mod(c).chunk(2, dim=-1)  # [B, W] each
    h = dit.norm_out(h) * (1 + scale[:, None]) + shift[:, None]
    out_a = dit.out_proj(h)  # [B, Na, p * D]
    if full:
        out = out_a
    else:
        out = out_a.new_zeros(b, n, p * d).index_copy(1, idx, out_a)
    v = out.reshape(b, n * p, d)[:, :frames]
    rec = KVRecord(torch.stack(ks), torch.stack(vs), idx) if record else None
    return v, rec


def edited_tokens(known_mask: torch.Tensor, patch: int, n_cached: int | None = None) -> torch.Tensor:
    """Bool [N]: tokens holding any frame to generate (``known_mask`` [T] == 0), or no cache entry (index >= n_cached).

    Padding frames of the last token count as known.
    """
    frames = known_mask.shape[-1]
    n = -(-frames // patch)
    m = F.pad((known_mask == 0).float(), (0, n * patch - frames)).view(n, patch).any(dim=1)
    if n_cached is not None and n_cached < n:
        m[n_cached:] = True
    return m


def dilate_tokens(mask: torch.Tensor, halo: int) -> torch.Tensor:
    """Grow a bool token mask [N] by ``halo`` tokens on each side."""
    if halo <= 0 or not mask.any():
        return mask.clone()
    k = 2 * halo + 1
    return F.max_pool1d(mask.float()[None, None], k, stride=1, padding=halo)[0, 0] > 0
