import os

import pytest
import torch

if not torch.cuda.is_available():
    # Triton kernels run through Triton's interpreter on CPU; it must be chosen before triton is first imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one intra-op thread per xdist worker: on a 2-core machine two workers with 2 threads each thrash
    torch.set_num_threads(1)

from accelerando.testing import test_soundfont


@pytest.fixture(scope="session")
def soundfont() -> str:
    """A GM soundfont (the 6 MB TimGM6mb when installed); tests that render skip cleanly without one."""
    pytest.importorskip("fluidsynth", reason="pyfluidsynth / libfluidsynth not installed")
    sf2 = test_soundfont()
    if sf2 is None:
        pytest.skip("no GM soundfont installed (apt-get install timgm6mb-soundfont)")
    return sf2


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never let a test write into the real cache directory."""
    monkeypatch.setenv("ACCELERANDO_CACHE", str(tmp_path / "cache"))
