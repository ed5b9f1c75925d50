"""The in-cache (blocked) evaluation kernels of importance sampling: the Bernoulli log-likelihood
and the mixture prior's logsumexp give the float64 values of their definitions -- in blocks of
any size, for logits and distances far beyond float32's exp range -- and the IS log-weights of a
model with both equal the definitions' on the same draws."""

import math

import pyro.distributions as dist
import pytest
import torch

from pyrovamp import VAE
from pyrovamp._blocks import block_rows, exp_floor
from pyrovamp.distributions.bernoulli import BernoulliLikelihood, bernoulli_log_prob
from pyrovamp.infer.weights import log_weights, trace_pair
from pyrovamp.priors.mixtures import DiagonalGaussianMixture


def _bernoulli64(h, x):
    return dist.Bernoulli(logits=h.double()).to_event(1).log_prob(x.double())


@pytest.mark.parametrize("elements", [7, 64, 2**16])  # blocks of 1 row, of a few rows, one block
def test_bernoulli_log_prob_in_blocks_equals_float64_definition(monkeypatch, elements):
    import pyrovamp._blocks as blocks

    monkeypatch.setattr(blocks, "BLOCK_ELEMENTS", elements)
    monkeypatch.setattr(
        "pyrovamp.distributions.bernoulli.block_rows",
        lambda r, w, d, e=elements: blocks.block_rows(r, w, d, e),
    )
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(37, 3, 20, generator=gen) * 30
    h[0, 0, :4] = torch.tensor([150.0, -150.0, 90.0, -90.0])  # exp(-|h|) would be subnormal
    x = (torch.rand(3, 20, generator=gen) < 0.4).float()
    got = bernoulli_log_prob(h, x)
    assert got.shape == (37, 3) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), _bernoulli64(h, x), atol=2e-4, rtol=1e-6)
    assert bool(torch.isfinite(got).all())
    # (D,) data against a stack, one row, and the distribution's own log_prob without autograd
    torch.testing.assert_close(
        bernoulli_log_prob(h[:, 0], x[0]).double(), _bernoulli64(h[:, 0], x[0]), atol=2e-4, rtol=0
    )
    with torch.no_grad():
        d = BernoulliLikelihood(20)(h)
        torch.testing.assert_close(d.log_prob(x), got)


def test_bernoulli_log_prob_keeps_its_gradient_path():
    h = (torch.randn(5, 2, 8) * 3).requires_grad_()
    x = (torch.rand(2, 8) < 0.5).float()
    lp = BernoulliLikelihood(8)(h).log_prob(x)
    lp.sum().backward()
    torch.testing.assert_close(h.grad, x - torch.sigmoid(h.detach()))
    torch.testing.assert_close(lp.detach().double(), _bernoulli64(h.detach(), x), atol=1e-4, rtol=0)


def test_bernoulli_log_prob_in_float64_is_exact():
    h = torch.randn(40, 2, 30, dtype=torch.float64) * 50
    x = (torch.rand(2, 30) < 0.5).double()
    torch.testing.assert_close(bernoulli_log_prob(h, x), _bernoulli64(h, x), atol=1e-9, rtol=0)


def test_exp_floor_gives_normal_numbers_whose_sum_with_one_is_one():
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        f = exp_floor(dtype)
        e = torch.tensor(f, dtype=torch.float64).exp()
        assert float(e) >= torch.finfo(dtype).tiny  # normal, not subnormal
        one = torch.tensor(1.0, dtype=dtype)
        assert float(one + e.to(dtype)) == 1.0  # below the rounding of a sum holding 1
    assert exp_floor(torch.float32) == pytest.approx(math.log(torch.finfo(torch.float32).tiny) + 1)
    assert block_rows(1000, 100, torch.device("cpu"), 2**10) == 10
    assert block_rows(1000, 100, torch.device("meta"), 2**10) == 1000  # one block off the CPU
    assert block_rows(0, 100, torch.device("cpu")) == 1


def _cache_folder(root, entries):
    for i, (level, kind, size) in enumerate(entries):
        d = root / f"index{i}"
        d.mkdir(parents=True)
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")
    return str(root)


def test_block_size_is_half_the_l2_cache_read_from_sysfs(tmp_path, monkeypatch):
    from pyrovamp import _blocks

    # Linux's cache folders: L1 data and instruction, then L2 (unified) and L3
    sysfs = _cache_folder(
        tmp_path / "a",
        [
            (1, "Data", "48K"),
            (1, "Instruction", "32K"),
            (2, "Unified", "2048K"),
            (3, "Unified", "300M"),
        ],
    )
    assert _blocks.l2_cache_bytes(sysfs) == 2 * 2**20
    assert _blocks._block_elements(2 * 2**20) == 2**18  # 1 MiB of float32
    assert _blocks._block_elements(512 * 2**10) == 2**16  # an AMD Zen 2/3 core
    assert _blocks._block_elements(1280 * 2**10) == 2**17  # 1.25 MiB: rounded down to a power of 2
    assert _blocks._block_elements(None) == 2**16  # unknown: the size of a 512 KiB L2
    assert _blocks._block_elements(2**10) == 2**14  # clamped at both ends
    assert _blocks._block_elements(2**34) == 2**20
    assert _blocks.l2_cache_bytes(_cache_folder(tmp_path / "b", [(2, "Unified", "1M")])) == 2**20
    # no sysfs and no sysconf answer: unknown, not an error
    monkeypatch.setattr(_blocks.os, "sysconf", lambda name: (_ for _ in ()).throw(ValueError(name)))
    assert _blocks.l2_cache_bytes(str(tmp_path / "missing")) is None
    damaged = _cache_folder(tmp_path / "c", [(2, "Unified", "lots")])
    assert _blocks.l2_cache_bytes(damaged) is None


def _mixture(K=30, L=5, spread=4.0):
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(K, generator=gen)
    loc = spread * torch.randn(K, L, generator=gen)
    scale = torch.rand(K, L, generator=gen) * 0.3 + 0.05  # narrow: far components' terms < 1e-38
    return DiagonalGaussianMixture(logits, loc, scale)


def _mixture64(m, z):
    logits, loc, scale = (t.double() for t in m._params)
    ref = dist.MixtureSameFamily(
        dist.Categorical(logits=logits), dist.Normal(loc, scale).to_event(1)
    )
    return ref.log_prob(z.double())


@pytest.mark.parametrize("elements", [31, 2**16])
def test_mixture_log_prob_without_autograd_in_blocks_equals_float64(monkeypatch, elements):
    monkeypatch.setattr(
        "pyrovamp.priors.mixtures.block_rows",
        lambda r, w, d, e=elements: block_rows(r, w, d, e),
    )
    m = _mixture()
    gen = torch.Generator().manual_seed(2)
    z = m._params[1][:3] + 0.5 * torch.randn(40, 3, 5, generator=gen)  # IS's (S, N, L) stack
    with torch.no_grad():
        got = m.log_prob(z)
    assert got.shape == (40, 3)
    torch.testing.assert_close(got.double(), _mixture64(m, z), atol=2e-3, rtol=1e-5)


def test_mixture_log_prob_gradient_equals_logsumexp_of_the_definition():
    m = _mixture()
    gen = torch.Generator().manual_seed(3)
    z = (m._params[1][:4] + torch.randn(6, 4, 5, generator=gen)).requires_grad_()
    lp = m.log_prob(z)
    (g,) = torch.autograd.grad(lp.sum(), z)
    z64 = z.detach().double().requires_grad_()
    lp64 = _mixture64(m, z64)
    (g64,) = torch.autograd.grad(lp64.sum(), z64)
    torch.testing.assert_close(lp.detach().double(), lp64.detach(), atol=2e-3, rtol=1e-5)
    torch.testing.assert_close(g.double(), g64, atol=1e-2, rtol=1e-4)
    assert bool(torch.isfinite(g).all())


def test_mixture_sample_draws_one_component_per_draw():
    m = _mixture(K=3, L=2)
    ref = dist.MixtureSameFamily(
        dist.Categorical(logits=m._params[0]), dist.Normal(m._params[1], m._params[2]).to_event(1)
    )
    torch.manual_seed(0)
    s = m.sample((40_000,))
    r = ref.sample((40_000,))
    assert s.shape == (40_000, 2) and m.expand([4]).sample((3,)).shape == (3, 4, 2)
    torch.testing.assert_close(s.mean(0), r.mean(0), atol=0.1, rtol=0)
    torch.testing.assert_close(s.std(0), r.std(0), atol=0.1, rtol=0)
    # each draw lies near one component (not a blend of several)
    d = ((s[:, None, :] - m._params[1]) / m._params[2]).pow(2).sum(-1).min(-1).values
    assert float(d.quantile(0.99)) < 15.0


def test_importance_log_weights_equal_the_definitions_on_the_same_draws():
    """The kernels inside a model: a VAE + VampPrior's IS log-weights (no autograd) against the
    float64 definitions of its sites on the traced draws."""
    torch.manual_seed(0)
    vae = VAE((12,), 3, prior="vampprior", num_components=7, hidden_dim=16).eval()
    x = (torch.rand(4, 12) < 0.5).float()
    with torch.no_grad():
        torch.manual_seed(5)
        lw = log_weights(vae.model, vae.guide, x, 50)
        torch.manual_seed(5)
        mt, gt = trace_pair(vae.model, vae.guide, x, 50)
    logits = mt.nodes["x"]["fn"].base_dist.logits
    z = gt.nodes["z"]["value"]
    prior = mt.nodes["z"]["fn"]
    q = gt.nodes["z"]["fn"].base_dist
    ref = (
        _bernoulli64(logits, x)
        + _mixture64(prior, z)
        - dist.Normal(q.loc.double(), q.scale.double()).log_prob(z.double()).sum(-1)
    )
    assert lw.shape == (50, 4)
    torch.testing.assert_close(lw.double(), ref, atol=1e-3, rtol=0)


def test_mixture_log_prob_gradient_in_z_passes_gradcheck():
    """The hand-written gradient in ``z`` (parameters without gradient: AIS, HMC), float64."""
    m = _mixture(K=6, L=3)
    m64 = DiagonalGaussianMixture(*(t.double() for t in m._params))
    gen = torch.Generator().manual_seed(4)
    for shape in [(5, 2, 3), (20, 2, 3), (7, 3)]:  # grouped draws, one group
        z = torch.randn(shape, generator=gen, dtype=torch.float64).requires_grad_()
        assert torch.autograd.gradcheck(m64.log_prob, (z,), atol=1e-6)


def test_mixture_log_prob_gradient_in_the_parameters_for_training():
    m = _mixture(K=6, L=3)
    logits, loc, scale = (t.clone().requires_grad_() for t in m._params)
    z = torch.randn(20, 2, 3).requires_grad_()
    lp = DiagonalGaussianMixture(logits, loc, scale).log_prob(z).sum()
    grads = torch.autograd.grad(lp, (logits, loc, scale, z))
    p64 = [t.detach().double().requires_grad_() for t in (logits, loc, scale)]
    z64 = z.detach().double().requires_grad_()
    ref = dist.MixtureSameFamily(
        dist.Categorical(logits=p64[0]), dist.Normal(p64[1], p64[2]).to_event(1)
    ).log_prob(z64)
    want = torch.autograd.grad(ref.sum(), (*p64, z64))
    torch.testing.assert_close(lp.double(), ref.sum().detach(), atol=1e-3, rtol=1e-5)
    for g, w in zip(grads, want, strict=True):
        torch.testing.assert_close(g.double(), w, atol=1e-3, rtol=1e-4)


def test_bernoulli_log_prob_gradient_in_the_logits_passes_gradcheck():
    gen = torch.Generator().manual_seed(6)
    h = (torch.randn(6, 2, 5, generator=gen, dtype=torch.float64) * 4).requires_grad_()
    x = (torch.rand(2, 5, generator=gen) < 0.5).double()
    like = BernoulliLikelihood(5)
    assert torch.autograd.gradcheck(lambda t: like(t).log_prob(x), (h,), atol=1e-6)
    # data that broadcast the logits: autograd's own formula, the same values
    h1 = h[0, 0].detach().requires_grad_()
    lp = like(h1).log_prob(x)
    assert lp.shape == (2,)
    (g,) = torch.autograd.grad(lp.sum(), h1)
    torch.testing.assert_close(g, (x - torch.sigmoid(h1.detach())).sum(0))


@pytest.mark.parametrize(
    "h_shape, x_shape",
    [
        ((4, 9, 20), (9, 20)),  # AIS: fewer chains than points, the batched product
        ((40, 3, 20), (3, 20)),  # IS: more draws than points, one product per point
        ((2, 2, 5, 20), (5, 20)),  # two leading dims, batched
        ((3, 2, 2, 20), (2, 20)),  # two leading dims, one product per point
        ((6, 4, 20), (20,)),  # one data vector for every row
    ],
)
def test_dot_last_equals_the_elementwise_sum(h_shape, x_shape):
    from pyrovamp.distributions.bernoulli import _dot_last

    gen = torch.Generator().manual_seed(7)
    h = torch.randn(h_shape, generator=gen, dtype=torch.float64)
    x = (torch.rand(x_shape, generator=gen) < 0.5).double()
    got = _dot_last(h, x)
    assert got.shape == h_shape[:-1]
    torch.testing.assert_close(got, (h * x).sum(-1), atol=1e-12, rtol=0)


@pytest.mark.parametrize("elements", [7, 64, 2**16])  # blocks within a point's rows, of chains
@pytest.mark.parametrize(
    "h_shape, x_shape, grad_shape",
    [
        ((8, 5, 20), (5, 20), (8, 5)),  # AIS's chains against their points
        ((3, 2, 5, 20), (2, 5, 20), (3, 2, 5)),  # data broadcasting a middle dim: a copy
        ((4, 20), (4, 20), (4,)),  # a minibatch
        ((20,), (20,), ()),
    ],
)
def test_bernoulli_gradient_in_blocks_equals_the_definition(
    monkeypatch, elements, h_shape, x_shape, grad_shape
):
    """``(x - sigmoid(h)) * grad`` in blocks of any size: scaled and a sum's broadcast 1
    (the product skipped), logits beyond float32's exp range."""
    import pyrovamp._blocks as blocks
    from pyrovamp.distributions.bernoulli import _bernoulli_grad

    monkeypatch.setattr(
        "pyrovamp.distributions.bernoulli.block_rows",
        lambda r, w, d, e=elements: blocks.block_rows(r, w, d, e),
    )
    gen = torch.Generator().manual_seed(8)
    h = torch.randn(h_shape, generator=gen) * 30
    h.view(-1)[:3] = torch.tensor([-150.0, 150.0, -95.0])  # sigmoid would be subnormal
    x = (torch.rand(x_shape, generator=gen) < 0.4).float()
    grad = torch.randn(grad_shape, generator=gen)
    want = (x.double() - torch.sigmoid(h.double())) * grad.double().unsqueeze(-1)
    got = _bernoulli_grad(h, x, grad)
    assert got.shape == h.shape
    torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=1e-6)
    ones = torch.ones(()).expand(grad_shape)  # the gradient of .sum()
    got1 = _bernoulli_grad(h, x, ones)
    torch.testing.assert_close(
        got1.double(), x.double() - torch.sigmoid(h.double()), atol=1e-6, rtol=0
    )


def test_gated_dense_in_blocks_and_with_autograd_equal_the_definition(monkeypatch):
    """The gated layer without autograd (bias and gate in place, in blocks of rows) and with it
    (glu) give ``(x W + b) * sigmoid(x V + c)``, and the same gradient as the definition."""
    import pyrovamp._blocks as blocks
    from pyrovamp.nn import GatedDense

    monkeypatch.setattr(
        "pyrovamp.nn.layers.block_rows", lambda r, w, d, e=50: blocks.block_rows(r, w, d, e)
    )
    torch.manual_seed(9)
    layer = GatedDense(6, 4).double()
    x = torch.randn(7, 3, 6, dtype=torch.float64)
    h, g = layer.linear(x).chunk(2, dim=-1)
    want = h * torch.sigmoid(g)
    with torch.no_grad():
        got = layer(x)
    assert got.shape == (7, 3, 4)
    torch.testing.assert_close(got, want.detach(), atol=1e-12, rtol=0)
    xg = x.clone().requires_grad_()
    out = layer(xg)
    torch.testing.assert_close(out, want, atol=1e-12, rtol=0)
    (gx,) = torch.autograd.grad(out.square().sum(), xg)
    h2, g2 = layer.linear(xg).chunk(2, dim=-1)
    (want_gx,) = torch.autograd.grad((h2 * torch.sigmoid(g2)).square().sum(), xg)
    torch.testing.assert_close(gx, want_gx, atol=1e-12, rtol=0)


def test_mixture_evaluation_keeps_float32_only_where_its_rounding_is_bounded():
    """One group of values (AIS's chains of many points) is scored in float32 where the
    expansion's rounding bound is within the tolerance, else in float64; training (parameters
    with a gradient) stays in float64. Far-apart values against narrow components: float64, and
    the float64 values."""
    from pyrovamp.priors import mixtures

    logits, loc, scale = _mixture(spread=1.0)._params
    m = DiagonalGaussianMixture(logits, loc, 3 * scale)  # a VampPrior's scales: 0.15 to 1
    gen = torch.Generator().manual_seed(10)
    near = m._params[1][:3] + 0.5 * torch.randn(8, 3, 5, generator=gen)  # (C, N, L), C < 16
    features, _, _ = m._grouped_terms(near, True, float32_ok=True)
    assert features.dtype == torch.float32
    assert mixtures._expansion_error(*_centred_terms(near, m)) <= mixtures._FLOAT32_TOLERANCE
    assert m._grouped_terms(near, True)[0].dtype == torch.float64  # training, ELBO's autograd
    with torch.no_grad():
        got = m.log_prob(near)
    torch.testing.assert_close(got.double(), _mixture64(m, near), atol=1e-4, rtol=0)

    narrow = DiagonalGaussianMixture(logits, 30 * loc, scale / 10)  # far apart, precise
    far = narrow._params[1][:3] + 2 * narrow._params[2][:3] * torch.randn(8, 3, 5, generator=gen)
    assert mixtures._expansion_error(*_centred_terms(far, narrow)) > mixtures._FLOAT32_TOLERANCE
    assert narrow._grouped_terms(far, True, float32_ok=True)[0].dtype == torch.float64
    with torch.no_grad():
        got = narrow.log_prob(far)
    torch.testing.assert_close(got.double(), _mixture64(narrow, far), atol=1e-5, rtol=1e-6)


def _centred_terms(value, mixture):
    from pyrovamp.priors.mixtures import _centred

    _, loc, scale = mixture._params
    return _centred(value, loc, scale, torch.float32, grouped=False)


def test_gated_dense_without_autograd_runs_a_replaced_linear_layer():
    """A ``linear`` that is not a plain ``nn.Linear`` (here a forward hook that doubles its
    output, as an adapter might change it) is run as it is, not bypassed by the in-cache path."""
    from pyrovamp.nn import GatedDense

    torch.manual_seed(11)
    layer = GatedDense(5, 3).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    handle = layer.linear.register_forward_hook(lambda mod, inp, out: 2 * out)
    raw = torch.nn.functional.linear(x, layer.linear.weight, layer.linear.bias)
    h, g = (2 * raw).chunk(2, dim=-1)
    with torch.no_grad():
        got = layer(x)
    torch.testing.assert_close(got, h * torch.sigmoid(g), atol=1e-12, rtol=0)
    handle.remove()
    with torch.no_grad():
        h, g = layer.linear(x).chunk(2, dim=-1)
        torch.testing.assert_close(layer(x), h * torch.sigmoid(g), atol=1e-12, rtol=0)
