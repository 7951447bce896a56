import pytest
from bench_helpers import Loader, _noop, _perturb

import accelerando
from accelerando.bench.variants import register_technique, unregister_technique


@pytest.fixture
def loader(monkeypatch):
    fake = Loader()
    monkeypatch.setattr(accelerando, "load_pipeline", fake)
    return fake


@pytest.fixture
def techniques():
    register_technique("noop", _noop, overwrite=True)
    register_technique("perturb", _perturb, overwrite=True)
    yield
    unregister_technique("noop")
    unregister_technique("perturb")


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "gen.safetensors"
    path.write_bytes(b"not read: the loader is replaced in these tests")
    return path


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: the tiny models run tiny ops, which 2 threads on a busy 2-core machine slow ~50x."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
