import pathlib

import pyro
import pytest
import torch

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed():
    """Fixed seeds, and one torch thread: the tests' models are tiny, and on a busy machine two
    OpenMP threads mostly wait for each other."""
    pyro.set_rng_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def encoder():
    from pyrovamp.nets import GaussianEncoder

    return GaussianEncoder(6, 2, [16], normalize=None)


def make_prior(name, encoder=None):
    """A small prior of each kind for L=2 (data dimension 6 for the encoder-based ones)."""
    from pyrovamp.priors import make_prior as mk
    from pyrovamp.nets import GaussianEncoder

    if encoder is None:
        encoder = GaussianEncoder(6, 2, [16])
    return mk(name, 2, encoder=encoder, input_dim=6, num_components=9, hidden_dims=(16,))


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
