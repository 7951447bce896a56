"""What an edit session caches for each backbone, and how a sparse call uses it.

The :class:`~accelerando.cache.edit.SparseEditor` is backbone-agnostic; it talks to one of these:

* :class:`TokenKV` (MusicDiT): per model evaluation, every block's self-attention keys and values of every token
  (``k``/``v`` ``[depth, B, H, N, Dh]`` bf16). A sparse call runs only the edited tokens, whose queries read the
  cached keys and values of the others (:func:`~accelerando.cache.dit_sparse.dit_forward`).
* :class:`GroupNormStats` (MusicUNet): per model evaluation, every GroupNorm's statistics per chunk of frames
  (``mean``/``m2`` ``[norms, B, G, K]`` float32 and ``count`` ``[norms, K]``; about 1.6 MB per evaluation for 60 s). A
  sparse call runs only the receptive-field windows around the edited frames, normalising with the cached
  statistics in which the chunks it computes exactly are replaced by their live values
  (:func:`~accelerando.cache.unet_sparse.unet_forward`).
* :class:`LocalWindows` (MusicUNet with ``norm="frame"``): nothing; windowed calls are exact on their own.

Each cuts the clip into *units* of ``patch`` frames (a DiT token; a single frame for the U-Net) and receive the units
to compute as sorted indices. ``entry`` gives one evaluation's cache, ``forward`` makes the call (returning what it
recorded, if asked), ``merge`` folds a recording into the cache after an edit.

Dims: ``B`` batch, ``T`` frames, ``D`` latent channels, ``N`` units, ``Na`` computed units, ``G`` groups, ``K``
statistics chunks.
"""

import torch
import torch.nn.functional as F

from accelerando.cache.dit_sparse import dit_forward
from accelerando.cache.session import kv_bytes
from accelerando.cache.unet_sparse import NormStats, chunk_frames, sparse_windows, unet_forward
from accelerando.models.unet import MusicUNet

__all__ = ["TokenKV", "GroupNormStats", "LocalWindows", "backend_for"]


def _batch_slice(t: torch.Tensor, nb: int) -> torch.Tensor | None:
    """A cached evaluation [.., B, ...] (batch at dim 1) for a call of batch ``nb``; None if it cannot serve it."""
    if t.shape[1] == nb:
        return t
    if nb == 1:
        return t[:, :1]  # unguided edit of a guided session: the conditional branch
    return None  # guided edit of an unguided session: no cache for the second branch


class TokenKV:
    """MusicDiT: cached self-attention keys and values; token-sparse calls."""

    kind = "kv"
    default_halo_s = 0.5  # fresh keys and values around the edit (SIGE's approximation elsewhere)
    families = ("k", "v")
    default_update = "refresh"  # a sparse recording pass over the new audio (about one more sparse edit)
    records_during_edit = True  # "reuse" keeps the keys and values the edit computed

    def __init__(self, dit):
        self.dit = dit
        self.patch = dit.config.patch

    @staticmethod
    def work_units(idx: torch.Tensor, n: int) -> int:
        """Tokens a sparse call runs: the active ones."""
        return len(idx)

    def manifest_fields(self) -> dict:
        c = self.dit.config
        return {"patch": c.patch, "depth": c.depth, "heads": c.heads, "width": c.width, "cache_dtype": "bfloat16"}

    def bytes_per_eval(self, batch: int, units: int) -> int:
        return kv_bytes(1, self.dit.config.depth, batch, units, self.dit.config.width)

    def entry(self, cache: dict, e: int, nb: int, n: int) -> dict | None:
        """Evaluation ``e``'s keys and values for a call of batch ``nb`` over ``n`` tokens (extended with zeros)."""
        if e not in cache.get("k", {}):
            return None
        k, v = _batch_slice(cache["k"][e], nb), _batch_slice(cache["v"][e], nb)
        if k is None:
            return None
        if k.shape[3] < n:  # extend: tokens past the cache are all recomputed
            k, v = F.pad(k, (0, 0, 0, n - k.shape[3])), F.pad(v, (0, 0, 0, n - v.shape[3]))
        return {"k": k, "v": v}

    def forward(self, x, t, cond, idx: torch.Tensor, entry: dict | None, record: bool):
        """Velocity [B, T, D] on the frames of tokens ``idx`` (zeros elsewhere) and, with ``record``, their
        keys/values ``{"k", "v"}: [depth, B, H, Na, Dh]`` bf16."""
        kv = None if entry is None else (entry["k"], entry["v"])
        if kv is None:
            v, rec = dit_forward(self.dit, x, t, cond, record=record)
        else:
            v, rec = dit_forward(self.dit, x, t, cond, idx=idx, kv=kv, record=record)
        return v, None if rec is None else {"k": rec.k.to(torch.bfloat16), "v": rec.v.to(torch.bfloat16)}

    @staticmethod
    def merge(old: dict, idx: torch.Tensor, rec: dict | None) -> dict | None:
        """The cache after an edit: ``old`` with the recorded tokens ``idx`` replaced; None (drop) without a record."""
        if rec is None:
            return None
        return {f: old[f].index_copy(3, idx, rec[f]) for f in ("k", "v")}


class _UNetWindows:
    """What both U-Net backends share: units are frames, and a call runs the receptive-field windows around them."""

    patch = 1

    def __init__(self, unet: MusicUNet):
        self.unet = unet

    def work_units(self, idx: torch.Tensor, n: int) -> int:
        return window_frames(self.unet, idx, n)


class GroupNormStats(_UNetWindows):
    """MusicUNet: cached, chunked GroupNorm statistics; receptive-field-windowed calls."""

    kind = "norm_stats"
    default_halo_s = 0.5  # the frames around the edit see the edit's own statistics (SIGE's approximation elsewhere)
    families = ("mean", "m2", "count")
    default_update = "reuse"  # keep the recorded clip's chunks (each edit replaces the ones it computes, live)
    records_during_edit = False  # chunks computed mid-generation describe noise, not the clip: "reuse" keeps the old

    def __init__(self, unet: MusicUNet):
        super().__init__(unet)
        self.norms = sum(isinstance(m, torch.nn.GroupNorm) for m in unet.modules())
        self.chunk = chunk_frames(unet)

    def manifest_fields(self) -> dict:
        c = self.unet.config
        return {"patch": 1, "norms": self.norms, "groups": c.groups, "chunk": self.chunk, "cache_dtype": "float32"}

    def bytes_per_eval(self, batch: int, units: int) -> int:
        k = -(-units // self.chunk)
        return (2 * self.norms * batch * self.unet.config.groups * 4 + 8 * self.norms) * k

    def entry(self, cache: dict, e: int, nb: int, n: int) -> dict | None:
        if e not in cache.get("mean", {}):
            return None
        mean, m2 = _batch_slice(cache["mean"][e], nb), _batch_slice(cache["m2"][e], nb)
        return None if mean is None else {"mean": mean, "m2": m2, "count": cache["count"][e]}

    def forward(self, x, t, cond, idx: torch.Tensor, entry: dict | None, record: bool):
        """Velocity [B, T, D] on frames ``idx`` (zeros elsewhere) and, with ``record``, the chunked statistics
        ``{"mean", "m2": [norms, B, G, K], "count": [norms, K]}`` (of a full call, or the cached ones with the chunks a
        windowed call computed exactly replaced)."""
        frames = x.shape[1]
        if entry is None or len(idx) == frames:
            v, st = unet_forward(self.unet, x, t, cond, record=record)
        else:
            unbind = [list(entry[f].unbind(0)) for f in ("mean", "m2", "count")]
            stats = NormStats(*unbind, self.chunk)
            v, st = unet_forward(self.unet, x, t, cond, windows=runs(idx), stats=stats, record=record)
        if st is None:
            return v, None
        return v, {
            "mean": torch.stack(st.mean).float(),
            "m2": torch.stack(st.m2).float(),
            "count": torch.stack(st.count),
        }

    @staticmethod
    def merge(old: dict, idx: torch.Tensor, rec: dict | None) -> dict:
        """The cache after an edit: the recorded statistics (already merged with the old ones), else the old ones."""
        return old if rec is None else rec


class LocalWindows(_UNetWindows):
    """MusicUNet with per-frame normalisation (``norm="frame"``): nothing mixes the clip, so a windowed call is
    exact and there is nothing to cache. No halo by default: the windows already reach the receptive radius of every
    regenerated frame, and the velocity of the known frames around them is never used. Exception: a U-Net quantized
    with per-tensor activation scales (``act_scale="tensor"``) mixes the clip through those scales, so its windowed
    calls approximate (``exact`` False) and the default halo is 0.5 s."""

    kind = "none"
    default_halo_s = 0.0
    families = ()
    default_update = "reuse"  # nothing to update
    records_during_edit = True  # (nothing is recorded)

    def __init__(self, unet: MusicUNet):
        from accelerando.quant.api import has_per_tensor_layers

        super().__init__(unet)
        # quantized layers with one activation scale per call (act_scale="tensor") take that scale from whatever the
        # call sees, the window or the whole clip: windowed calls are then close to a full call, not equal to it, so
        # the frames around an edit are recomputed as with the clip-statistics U-Net
        self.exact = not has_per_tensor_layers(unet)
        if not self.exact:
            self.default_halo_s = 0.5

    def manifest_fields(self) -> dict:
        return {"patch": 1, "cache_dtype": None}

    def bytes_per_eval(self, batch: int, units: int) -> int:
        return 0

    def entry(self, cache: dict, e: int, nb: int, n: int) -> dict:
        return {}  # every evaluation can run windowed

    def forward(self, x, t, cond, idx: torch.Tensor, entry: dict | None, record: bool):
        """Velocity [B, T, D] on frames ``idx`` (zeros elsewhere), exact (see ``exact``); nothing recorded."""
        if len(idx) == x.shape[1]:
            return unet_forward(self.unet, x, t, cond)[0], None
        return unet_forward(self.unet, x, t, cond, windows=runs(idx))[0], None

    @staticmethod
    def merge(old: dict, idx: torch.Tensor, rec: dict | None) -> dict:
        return {}


def window_frames(unet: MusicUNet, idx: torch.Tensor, frames: int) -> int:
    """Frames a windowed U-Net call over frames ``idx`` runs (the receptive-field windows, merged): ``frames`` or
    more means the whole clip."""
    if len(idx) >= frames:
        return frames
    return sum(w1 - w0 for _, _, w0, w1 in sparse_windows(unet, frames, runs(idx)))


def runs(idx: torch.Tensor) -> list[tuple[int, int]]:
    """Sorted unit indices -> contiguous ranges ``[a, b)``."""
    out: list[list[int]] = []
    for i in idx.tolist():
        if out and i == out[-1][1]:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return [(a, b) for a, b in out]


def backend_for(backbone) -> TokenKV | GroupNormStats | LocalWindows:
    if not isinstance(backbone, MusicUNet):
        return TokenKV(backbone)
    return LocalWindows(backbone) if backbone.config.norm == "frame" else GroupNormStats(backbone)
