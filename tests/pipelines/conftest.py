import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The tiny models gain nothing from intra-op threads, and on a busy 2-core machine the spinning threads make
    these files ~10x slower; restored after each module so other tests keep torch's default."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
