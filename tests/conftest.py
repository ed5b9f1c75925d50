import pathlib

import pyro
import pyro.distributions as dist
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
    from pyrovamp.nn import GaussianEncoder

    return GaussianEncoder(6, 2, [16], normalize=None)


def make_prior(name, encoder=None):
    """A small prior of each kind for L=2 (data dimension 6 for the encoder-based ones)."""
    from pyrovamp.nn import GaussianEncoder
    from pyrovamp.priors import make_prior as mk

    if encoder is None:
        encoder = GaussianEncoder(6, 2, [16])
    return mk(name, 2, encoder=encoder, input_dim=6, num_components=9, hidden_dims=(16,))


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class FactorAnalysis:
    """Factor analysis, a model whose marginal likelihood is known: z ~ N(0, I_L),
    x = W z + b + eps, eps ~ N(0, diag psi), so p(x) = N(b, W W^T + diag psi) (float64 by
    default). The guide is a deliberately poor proposal: the posterior mean shifted by ``shift``,
    ``scale`` times the posterior's standard deviations, without its correlation."""

    def __init__(self, D=5, L=2, seed=0, shift=1.0, scale=0.6, dtype=torch.float64):
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(D, L, generator=g, dtype=dtype)
        self.b = torch.randn(D, generator=g, dtype=dtype)
        self.psi = 0.3 + torch.rand(D, generator=g, dtype=dtype)
        self.L, self.shift, self.scale, self.dtype = L, shift, scale, dtype
        A = torch.eye(L, dtype=dtype) + self.W.T @ (self.W / self.psi[:, None])
        self.post_cov = torch.linalg.inv(A)
        self.post_gain = self.post_cov @ (self.W.T / self.psi)

    def to(self, device):
        for k in ("W", "b", "psi", "post_cov", "post_gain"):
            setattr(self, k, getattr(self, k).to(device))
        return self

    def marginal(self):
        return dist.MultivariateNormal(self.b, self.W @ self.W.T + torch.diag(self.psi))

    def model(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample(
                "z",
                dist.Normal(torch.zeros(self.L, dtype=self.dtype, device=x.device), 1.0).to_event(
                    1
                ),
            )
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.psi.sqrt()).to_event(1), obs=x)

    def guide(self, x):
        loc = (x - self.b) @ self.post_gain.T + self.shift
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample(
                "z", dist.Normal(loc, self.scale * self.post_cov.diagonal().sqrt()).to_event(1)
            )
