import os
import tempfile

# numba (under librosa) writes its JIT cache next to the installed package; two xdist workers compiling the same
# function into a fresh venv race on those files and can segfault. Give every worker its own cache directory.
os.environ.setdefault(
    "NUMBA_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), f"accelerando-numba-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"),
)

import pytest

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
