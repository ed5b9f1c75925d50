"""The PixelHVAE: masking of the PixelCNN decoder, sampling, importance sampling, training, batch
normalisation in evaluation mode, the command line."""

import json

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Predictive

from pyrovamp import PixelHVAE, elbo, log_likelihood, train
from pyrovamp.distributions import make_likelihood
from pyrovamp.nn import MaskedConv2d

SHAPE = (6, 7)  # not square: a swapped height and width shows
D = 42


def _model(likelihood="bernoulli", prior="vampprior", **kw):
    pyro.set_rng_seed(0)
    num_values = 17 if likelihood == "categorical" else None
    return PixelHVAE(
        SHAPE,
        3,
        prior=prior,
        likelihood=likelihood,
        num_values=num_values,
        hidden_dim=16,
        num_components=4,
        z1_dim=2,
        channels=8,
        num_masked_layers=3,
        **kw,
    )


def _x(likelihood="bernoulli", n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, D, generator=g)
    if likelihood == "bernoulli":
        return (u < torch.linspace(0.1, 0.9, D)).float()
    levels = 256 if likelihood == "discretized_logistic" else 17
    return (u * torch.linspace(0.2, 1.0, D) * (levels - 1)).round()


def _scramble_batch_norm(model):
    """Running statistics and affine parameters away from their initial values, so that a mode
    mix-up or a skipped normalisation changes the numbers."""
    g = torch.Generator().manual_seed(3)
    for m in model.decoder.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            with torch.no_grad():
                m.bias.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@pytest.mark.parametrize("likelihood", ["bernoulli", "discretized_logistic", "categorical"])
def test_output_at_pixel_i_depends_on_no_pixel_j_at_or_after_i(likelihood):
    m = _model(likelihood).eval()
    _scramble_batch_norm(m)
    dec, like = m.decoder, m.likelihood
    g = torch.Generator().manual_seed(1)
    x01 = like.normalize(_x(likelihood, 1)[0])
    z1, z2 = torch.randn(2, generator=g), torch.randn(3, generator=g)
    jac = torch.autograd.functional.jacobian(lambda x: dec(x, z1, z2), x01)  # (P*D, D)
    P = like.params_per_dim
    # J[k, i, j] = d output k of pixel i / d pixel j
    J = (
        jac.reshape(D, P, D).transpose(0, 1)
        if likelihood == "categorical"
        else jac.reshape(P, D, D)
    )
    future = torch.ones(D, D).triu()  # j >= i
    assert float(J.abs().mul(future).max()) == 0.0
    past = J.abs().sum(0)
    W = SHAPE[1]
    for i in range(1, D):
        assert float(past[i, :i].sum()) > 0, i  # the output does use the earlier pixels
        if i % W:
            assert float(past[i, i - 1]) > 0, i  # the left neighbour
        if i >= W:
            assert float(past[i, i - W]) > 0, i  # the pixel above


def test_masks_of_type_a_and_b():
    a, b = MaskedConv2d("A", 1, 1, 3), MaskedConv2d("B", 1, 1, 3)
    assert a.mask.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert b.mask.tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]
    assert "mask" not in a.state_dict()  # a function of type and size, not a parameter
    with pytest.raises(ValueError, match="mask_type"):
        MaskedConv2d("C", 1, 1, 3)
    with pytest.raises(ValueError, match="kernel_size"):
        MaskedConv2d("A", 1, 1, 4)


@pytest.mark.parametrize("likelihood", ["bernoulli", "discretized_logistic"])
def test_sampling_draws_pixel_by_pixel_as_the_full_network_scores(likelihood):
    m = _model(likelihood).eval()
    _scramble_batch_norm(m)
    like = m.likelihood
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(5, 2, generator=g), torch.randn(5, 3, generator=g)
    pixel = make_likelihood(likelihood, 1)
    values, means = m.decoder.sample(z1, z2, pixel, like.normalize)
    assert values.shape == means.shape == (5, D)
    # each recorded conditional mean equals a full teacher-forced pass on the drawn image
    with torch.no_grad():
        full = like.mean(m.decoder(like.normalize(values), z1, z2))
    torch.testing.assert_close(means, full, atol=1e-5, rtol=1e-5)
    x = m.sample(9)
    assert x.shape == (9, D) and m.training is False
    if likelihood == "bernoulli":
        assert set(x.unique().tolist()) <= {0.0, 1.0}
    else:
        assert bool((x == x.round()).all()) and 0 <= float(x.min()) and float(x.max()) <= 255
        assert len(x.unique()) > 20
    mean = m.sample(4, mean=True)
    assert mean.shape == (4, D) and 0 <= float(mean.min()) and float(mean.max()) <= like.high
    m.train()
    m.sample(2)
    assert m.training and m.decoder.training  # the mode is restored
    assert m.reconstruct(_x(likelihood, 3)).shape == (3, D)
    with pytest.raises(ValueError, match="num_samples"):
        m.sample(0)


def test_sites_and_the_vampprior_on_z2():
    m = _model()
    x = _x(n=5)
    g = poutine.trace(m.guide).get_trace(x)
    tr = poutine.trace(poutine.replay(m.model, trace=g)).get_trace(x)
    tr.compute_log_prob()
    assert set(tr.stochastic_nodes) - {"data"} == {"z1", "z2"} and tr.nodes["x"]["is_observed"]
    assert tr.nodes["x"]["log_prob"].shape == (5,)
    assert m.prior.encoder is m.encoder  # components q(z2|u_k) through the guide's encoder
    assert _model(prior="mog").prior.__class__.__name__ == "MoGPrior"


def test_importance_sampling_is_above_the_elbo_and_tightens():
    m = _model()  # untrained: the guide is far from the posterior, so the bound is loose
    x = _x(n=64, seed=1)
    with torch.no_grad():  # a sharp decoder that depends on the latents: a peaked posterior
        for lin in (m.decoder.z1_map.linear, m.decoder.z2_map.linear, m.decoder.out):
            lin.weight.mul_(5.0)
        for bn in m.decoder.modules():  # running statistics of the data (as after training)
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.momentum = None
                bn.reset_running_stats()
        m.train()
        m.decoder(m.likelihood.normalize(x), torch.randn(64, 2), torch.randn(64, 3))
    m.eval()
    e = float(elbo(m, x, 100, seed=0).mean())
    lls = [float(log_likelihood(m, x, s, seed=0).mean()) for s in (1, 10, 100)]
    assert lls[0] == pytest.approx(e, abs=1.0)
    assert all(b > a for a, b in zip(lls, lls[1:], strict=False)), lls
    assert lls[-1] > e + 2.0


def test_evaluation_uses_running_statistics_and_leaves_them_alone():
    m = _model()
    _scramble_batch_norm(m)
    x = _x(n=8)
    z1, z2 = torch.zeros(8, 2), torch.zeros(8, 3)
    with torch.no_grad():
        m.eval()
        alone = m.decode(z1[:1], z2[:1]).log_prob(x[:1])
        in_batch = m.decode(z1, z2).log_prob(x)
        # running statistics: an image's score does not depend on the rest of the batch
        torch.testing.assert_close(alone, in_batch[:1])
        m.train()
        batch_stats = m.decode(z1, z2).log_prob(x)
        assert not torch.allclose(batch_stats, in_batch)  # train mode: batch statistics
    _scramble_batch_norm(m)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.train()
    e_train_mode = elbo(m, x, 5, seed=0)
    assert m.training  # the caller's mode comes back ...
    for k, v in m.state_dict().items():  # ... and evaluation did not update the statistics
        assert torch.equal(v, before[k]), k
    m.eval()
    torch.testing.assert_close(e_train_mode, elbo(m, x, 5, seed=0))


def test_reconstruct_casts_the_data_to_the_models_dtype_and_device():
    m = _model("discretized_logistic").double()
    x = _x("discretized_logistic", 3).to(torch.int64)  # integer levels, not the model's dtype
    r = m.reconstruct(x)
    assert r.dtype == torch.float64 and r.shape == (3, D)
    assert m.reconstruct(x.numpy()).dtype == torch.float64
    assert m.sample(2).dtype == torch.float64
    with pytest.raises(ValueError, match="NaN"):  # the values are checked where data enter
        m.reconstruct(torch.full((1, D), float("nan")))


def test_predictive_draws_images_pixel_by_pixel_and_leaves_the_statistics_alone():
    m = _model()
    _scramble_batch_norm(m)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.train()
    out = Predictive(m.model, num_samples=2)(None, num_points=3)
    assert out["x"].shape == (2, 3, D) and set(out["x"].unique().tolist()) <= {0.0, 1.0}
    assert out["z2"].shape == (2, 3, 3) and out["z1"].shape == (2, 3, 2)
    assert m.training and m.decoder.training
    for k, v in m.state_dict().items():  # drawn with the running statistics, not updating them
        assert torch.equal(v, before[k]), k


def test_one_epoch_of_training_through_pyrovamp_train():
    m = _model()
    x, xv = _x(n=48), _x(n=16, seed=5)
    history = train(
        m,
        x,
        xv,
        epochs=1,
        batch_size=16,
        optimizer="adam",
        lr=1e-3,
        seed=0,
        progress=False,
        logger="none",
    )
    assert len(history) == 1 and history[0]["val_elbo"] < 0
    assert not m.training  # evaluation mode after training
    bn = next(mod for mod in m.decoder.modules() if isinstance(mod, torch.nn.BatchNorm2d))
    assert int(bn.num_batches_tracked) == 3 and float(bn.running_mean.abs().sum()) > 0


def test_command_line_trains_and_evaluates_a_pixelhvae(tmp_path):
    from pyrovamp.cli import main

    torch.set_num_threads(1)  # pixel-by-pixel sampling is many tiny operations: one thread is
    # faster for them, and far faster on a machine whose cores are shared
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--model",
                "pixelhvae",
                "--dataset",
                "digits",
                "--prior",
                "vampprior",
                "--latent-dim",
                "2",
                "--num-components",
                "4",
                "--hidden-dim",
                "16",
                "--epochs",
                "1",
                "--max-points",
                "32",
                "--num-samples",
                "3",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["model"] == "pixelhvae" and m["test_log_likelihood"] < 0
    assert {"samples.png", "reconstructions.png", "model.pt"} <= {p.name for p in out.iterdir()}
    assert main(["evaluate", str(out), "--num-samples", "2"]) == 0
    assert json.loads((out / "metrics.json").read_text())["num_samples"] == 2
