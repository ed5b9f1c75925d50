"""Your own encoder and decoder in pyrovamp's models: the contract checked at construction,
training, importance sampling, the VampPrior on pseudo-inputs of the data's shape, saving and
loading, and the HVAE's four networks."""

from __future__ import annotations

import copy

import pyro
import pytest
import torch
from pyro.infer import Predictive
from torch import nn

import pyrovamp as pv

SHAPE = (1, 16, 16)
L = 4


class ConvEncoder(pv.nn.Network):
    """A user's convolutional q(z|x): (N, 1, 16, 16) -> (loc, scale), each (N, latent_dim)."""

    def __init__(self, latent_dim: int = L, channels: int = 8):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, channels, 3, 2, 1),  # 8x8
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, 2, 1),  # 4x4
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(channels * 16, 2 * latent_dim),
        )

    def forward(self, x):
        assert x.dim() == 4 and x.shape[1:] == SHAPE  # the contract: one batch dimension
        loc, logvar = self.net(x).chunk(2, dim=-1)
        return loc, torch.exp(0.5 * logvar)


class ConvDecoder(pv.nn.Network):
    """A user's transposed-convolution p(x|z): (N, latent_dim) -> (N, 1, 16, 16) logits."""

    def __init__(self, latent_dim: int = L, channels: int = 8):
        super().__init__()
        self.channels = channels
        self.fc = nn.Linear(latent_dim, channels * 16)
        self.net = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose2d(channels, channels, 4, 2, 1),  # 8x8
            nn.ReLU(),
            nn.ConvTranspose2d(channels, 1, 4, 2, 1),  # 16x16
        )

    def forward(self, z):
        assert z.dim() == 2
        return self.net(self.fc(z).view(-1, self.channels, 4, 4))


def _bars(n: int, seed: int = 0) -> torch.Tensor:
    """(n, 1, 16, 16) binary images: one horizontal and one vertical bar of width 2 each."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, *SHAPE)
    rows = torch.randint(0, 15, (n,), generator=g)
    cols = torch.randint(0, 15, (n,), generator=g)
    for i in range(n):
        x[i, 0, rows[i] : rows[i] + 2, :] = 1
        x[i, 0, :, cols[i] : cols[i] + 2] = 1
    return x


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    return pv.VAE(
        SHAPE,
        L,
        prior="vampprior",
        num_components=6,
        encoder=ConvEncoder(),
        decoder=ConvDecoder(),
        **kw,
    )


def test_a_user_convolutional_vae_with_the_vampprior_trains_scores_saves_and_reloads(tmp_path):
    vae = _model()
    assert vae.encoder.net.__class__ is ConvEncoder and vae.decoder.net.__class__ is ConvDecoder
    assert vae.prior.encoder is vae.encoder  # the VampPrior's components go through it
    assert vae.prior.pseudo_inputs.shape == (6, *SHAPE)  # pseudo-inputs in the data's shape
    train, val, test = _bars(256), _bars(32, 1), _bars(16, 2)
    before = pv.log_likelihood(vae.eval(), test, 50, seed=0).mean()
    result = pv.fit(
        vae,
        train,
        val,
        epochs=40,
        batch_size=32,
        lr=1e-2,
        warmup_epochs=0,
        ema_decay=None,
        precision="32",
        progress=False,
        seed=0,
    )
    assert result.epochs == 40 and result.finished
    ll = pv.log_likelihood(vae, test, 50, seed=0)
    assert ll.shape == (16,) and torch.isfinite(ll).all()
    # it learned the bars: about 60 of 256 pixels are on (a model of the pixels' marginals
    # scores about -138 nats), while the images are one of 15 x 15 bar positions (-5.4)
    assert before < -150 and ll.mean() > -80, (before, ll.mean())
    assert pv.elbo(vae, test, 10).mean() <= ll.mean() + 1.0  # the ELBO is a lower bound
    vae.save_pretrained(tmp_path / "conv", card={"note": "bars"})
    config = (tmp_path / "conv" / "config.json").read_text()
    assert "test_custom_networks.ConvEncoder" in config  # the card records the classes ...
    assert '"channels": 8' in config  # ... and their arguments, as the card's text does
    text = (tmp_path / "conv" / "README.md").read_text()
    assert "- `encoder`: `test_custom_networks.ConvEncoder(latent_dim=4, channels=8)`" in text
    assert "import test_custom_networks\nimport pyrovamp as pv" in text
    torch.manual_seed(99)
    back = pv.from_pretrained(tmp_path / "conv")
    assert type(back.encoder.net) is ConvEncoder and back.prior.encoder is back.encoder
    assert torch.equal(pv.log_likelihood(back, test, 50, seed=0), ll)


def test_the_contract_is_checked_at_construction_in_one_line():
    with pytest.raises(
        ValueError,
        match=r"encoder must map \(N, 1, 16, 16\) to \(loc, scale\), "
        r"each of shape \(N, 3\); for a batch of 3 it returned a tuple of 2 "
        r"\(a tensor of shape \(3, 4\)",
    ):
        pv.VAE(SHAPE, 3, prior="standard", encoder=ConvEncoder(4))
    with pytest.raises(
        ValueError,
        match=r"decoder must map \(N, 4\) to N rows of 768 values "
        r"\(the categorical likelihood's parameters\); for a batch of 3 it "
        r"returned a tensor of shape \(3, 1, 16, 16\)",
    ) as e:
        pv.VAE(
            (1, 16, 16),
            L,
            prior="standard",
            likelihood="categorical",
            num_values=3,
            encoder=ConvEncoder(),
            decoder=ConvDecoder(),
        )
    with pytest.raises(ValueError, match=r"encoder must map \(N, 1, 8, 8\) .* it raised"):
        pv.VAE((1, 8, 8), L, prior="standard", encoder=ConvEncoder())  # the net wants 16x16
    with pytest.raises(TypeError, match="decoder must be a torch.nn.Module, got function"):
        pv.VAE(SHAPE, L, decoder=lambda z: z)
    assert "\n" not in str(e.value)


def test_the_check_leaves_batch_norm_statistics_and_random_streams_alone():
    class BNEncoder(pv.nn.Network):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(256, 8), nn.BatchNorm1d(8))

        def forward(self, x):
            h = self.net(x) + 0.0 * torch.randn(())  # draws from the global stream
            return h[:, :L], torch.nn.functional.softplus(h[:, L:]) + 1e-3

    enc = BNEncoder()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    pv.nn.check_network("encoder", enc, [SHAPE], latent_dim=L)
    assert torch.equal(torch.rand(3), expected)
    vae = pv.VAE(SHAPE, L, prior="standard", encoder=enc, decoder=ConvDecoder())
    bn = vae.encoder.net.net[2]
    assert bn.num_batches_tracked.item() == 0 and torch.equal(bn.running_mean, torch.zeros(8))
    assert vae.encoder.net.training  # the user's mode is restored


def test_custom_networks_run_the_idioms_users_write():
    vae = _model().eval()
    x = _bars(8)
    # minibatch plate with subsample_size and poutine.scale around the model
    elbo = pyro.infer.Trace_ELBO()
    loss = elbo.differentiable_loss(pyro.poutine.scale(vae.model, 2.0), vae.guide, x)
    assert torch.isfinite(loss)
    # Predictive draws (S, B, *) from the generative program
    out = Predictive(vae.model, num_samples=3)(None, num_points=5)
    assert out["x"].shape == (3, 5, 256) and out["z"].shape == (3, 5, L)
    # S x N importance weights go through the leading-shape adapter
    w = pv.log_importance_weights(vae, x, 7)
    assert w.shape == (7, 8)
    # copies are independent
    twin = copy.deepcopy(vae)
    assert twin.encoder.net is not vae.encoder.net and twin.prior.encoder is twin.encoder
    assert torch.equal(
        pv.log_likelihood(twin, x, 20, seed=1), pv.log_likelihood(vae, x, 20, seed=1)
    )
    assert vae.sample(4).shape == (4, 256) and vae.reconstruct(x).shape == (8, 256)
    # AIS's chains and the active units go through the same networks
    ais = pv.ais_log_likelihood(vae, x[:2], num_chains=2, num_steps=5, seed=0)
    assert ais.shape == (2,) and torch.isfinite(ais).all()
    assert set(pv.active_units(vae, x)) == {"z"}


class Z2Encoder(pv.nn.Network):
    def __init__(self, latent_dim: int = 3):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(256, 2 * latent_dim))

    def forward(self, x):
        loc, s = self.net(x).chunk(2, -1)
        return loc, nn.functional.softplus(s) + 1e-3


class Z1Encoder(pv.nn.Network):
    def __init__(self, z2_dim: int = 3, z1_dim: int = 2):
        super().__init__()
        self.x = nn.Sequential(nn.Flatten(), nn.Linear(256, 16))
        self.out = nn.Linear(16 + z2_dim, 2 * z1_dim)

    def forward(self, x, z2):
        assert x.shape[1:] == SHAPE and z2.shape[0] == x.shape[0]
        loc, s = self.out(torch.cat([self.x(x), z2], -1)).chunk(2, -1)
        return loc, nn.functional.softplus(s) + 1e-3


class PZ1(pv.nn.Network):
    def __init__(self, z2_dim: int = 3, z1_dim: int = 2):
        super().__init__()
        self.net = nn.Linear(z2_dim, 2 * z1_dim)

    def forward(self, z2):
        loc, s = self.net(z2).chunk(2, -1)
        return loc, nn.functional.softplus(s) + 1e-3


class Decoder2(pv.nn.Network):
    def __init__(self, z1_dim: int = 2, z2_dim: int = 3):
        super().__init__()
        self.net = nn.Linear(z1_dim + z2_dim, 256)

    def forward(self, z1, z2):
        return self.net(torch.cat([z1, z2], -1)).view(-1, *SHAPE)


def test_an_hvae_takes_its_four_networks_and_round_trips(tmp_path):
    torch.manual_seed(0)
    hvae = pv.HVAE(
        SHAPE,
        3,
        z1_dim=2,
        prior="vampprior",
        num_components=4,
        encoder=Z2Encoder(),
        encoder_z1=Z1Encoder(),
        p_z1=PZ1(),
        decoder=Decoder2(),
    ).eval()
    assert hvae.prior.pseudo_inputs.shape == (4, *SHAPE)
    x = _bars(6)
    ll = pv.log_likelihood(hvae, x, 30, seed=0)
    assert ll.shape == (6,) and torch.isfinite(ll).all()
    assert set(hvae.posterior_means(x)) == {"z1", "z2"}
    hvae.save_pretrained(tmp_path / "h")
    back = pv.from_pretrained(tmp_path / "h")
    assert type(back.p_z1.net) is PZ1 and back.prior.encoder is back.encoder
    assert torch.equal(pv.log_likelihood(back, x, 30, seed=0), ll)
    with pytest.raises(
        ValueError,
        match=r"p_z1 must map \(N, 3\) to \(loc, scale\), each of "
        r"shape \(N, 5\)",
    ):
        pv.HVAE(SHAPE, 3, z1_dim=5, prior="standard", p_z1=PZ1())


def test_a_network_that_cannot_be_rebuilt_is_named_when_saving(tmp_path):
    plain = nn.Sequential(nn.Flatten(), nn.Linear(256, 2 * L))

    class Split(nn.Module):
        def forward(self, x):
            loc, s = plain(x).chunk(2, -1)
            return loc, s.exp()

    vae = pv.VAE(SHAPE, L, prior="standard", encoder=Split(), decoder=ConvDecoder())
    with pytest.raises(
        ValueError,
        match=r"encoder.*Split.*does not record its constructor "
        r"arguments.*pyrovamp.nn.Network",
    ):
        vae.save_pretrained(tmp_path / "x")
    assert not (tmp_path / "x").exists()  # nothing half-written


def test_an_encoder_sees_the_data_scaled_to_the_unit_interval():
    seen = []

    class Recording(pv.nn.Network):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 2 * L))

        def forward(self, x):
            seen.append(x.detach().clone())
            loc, s = self.net(x).chunk(2, -1)
            return loc, nn.functional.softplus(s) + 1e-3

    vae = pv.VAE(
        (8, 8),
        L,
        prior="vampprior",
        num_components=3,
        likelihood="categorical",
        num_values=17,
        encoder=Recording(),
    )
    x = torch.full((5, 8, 8), 16.0)  # Digits' grey levels 0..16
    seen.clear()
    vae.encode(x.reshape(5, 64))
    assert seen[-1].shape == (5, 8, 8) and torch.equal(seen[-1], torch.ones(5, 8, 8))
    vae.prior().log_prob(torch.zeros(2, L))  # the pseudo-inputs go through the same scaling
    assert seen[-1].shape == (3, 8, 8) and 0 <= seen[-1].min() and seen[-1].max() <= 1


class Stacked(pv.nn.Network):
    """A discretised-logistic decoder returning (2, N, *input_shape): locations and log-scales
    stacked in front of the batch, a layout the contract does not allow."""

    def __init__(self, latent_dim: int = L):
        super().__init__()
        self.loc = nn.Linear(latent_dim, 256)
        self.log_scale = nn.Linear(latent_dim, 256)

    def forward(self, z):
        return torch.stack([self.loc(z), self.log_scale(z)]).view(2, -1, *SHAPE)


def test_outputs_whose_rows_are_not_the_points_are_refused_not_reshaped():
    # at construction: the check's batch of 3 shows the (2, N, ...) layout
    with pytest.raises(ValueError, match=r"decoder must map \(N, 4\) to N rows of 512 values"):
        pv.VAE(SHAPE, L, prior="standard", likelihood="discretized_logistic", decoder=Stacked())
    # at run time too (a network that passed the check, then changed), for any batch but 2
    net = pv.nn.BatchedNetwork(Stacked(), [(L,)], out_dim=512)
    with pytest.raises(
        ValueError,
        match=r"Stacked returned a tensor of shape \(2, 5, 1, 16, 16\) "
        r"for a batch of 5: expected 5 rows of 512 values",
    ):
        net(torch.zeros(5, L))


def test_a_scale_that_is_not_positive_is_refused():
    class LogScale(pv.nn.Network):  # returns log(scale) where the contract wants the scale
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(256, 2 * L))

        def forward(self, x):
            loc, log_scale = self.net(x).chunk(2, -1)
            return loc, log_scale - 1.0

    with pytest.raises(ValueError, match="encoder must return a positive scale"):
        pv.VAE(SHAPE, L, prior="standard", encoder=LogScale())


class NoInit(pv.nn.Network):
    """A network without an __init__ of its own (no parameters): saveable all the same."""

    def forward(self, z):
        return z.sum(-1, keepdim=True).expand(-1, 256).reshape(-1, *SHAPE)


def test_a_network_without_its_own_init_saves_and_loads(tmp_path):
    vae = pv.VAE(SHAPE, L, prior="standard", encoder=ConvEncoder(), decoder=NoInit()).eval()
    vae.save_pretrained(tmp_path / "m")
    back = pv.from_pretrained(tmp_path / "m")
    assert type(back.decoder.net) is NoInit
    x = _bars(3)
    assert torch.equal(pv.log_likelihood(back, x, 5, seed=0), pv.log_likelihood(vae, x, 5, seed=0))


def test_a_prior_of_another_shape_is_refused_on_assignment():
    vae = _model()
    with pytest.raises(
        ValueError,
        match=r"prior.input_shape=\(16, 16\) \(pseudo-inputs\) is "
        r"neither the model's input_shape=\(1, 16, 16\) nor flat \(256,\)",
    ):
        vae.prior = pv.VampPrior(vae.encoder, 256, 5, input_shape=(16, 16))
    vae.prior = pv.VampPrior(vae.encoder, 256, 5)  # flat pseudo-inputs are fine
    assert torch.isfinite(vae.prior().log_prob(torch.zeros(2, L))).all()


def test_the_convolutional_hvae_takes_the_same_arguments():
    torch.manual_seed(0)
    conv = pv.ConvHVAE(
        SHAPE,
        3,
        z1_dim=2,
        prior="vampprior",
        num_components=4,
        encoder=Z2Encoder(),
        p_z1=PZ1(),
        decoder=Decoder2(),
    ).eval()
    assert type(conv.encoder.net) is Z2Encoder and conv.prior.encoder is conv.encoder
    assert type(conv.encoder_z1).__name__ == "ConvConditionalEncoder"  # the default kept
    ll = pv.log_likelihood(conv, _bars(4), 10, seed=0)
    assert ll.shape == (4,) and torch.isfinite(ll).all()
    pixel = pv.PixelHVAE(
        SHAPE,
        3,
        z1_dim=2,
        prior="standard",
        encoder_z1=Z1Encoder(),
        channels=4,
        num_masked_layers=2,
    ).eval()
    assert type(pixel.encoder_z1.net) is Z1Encoder
    assert torch.isfinite(pv.log_likelihood(pixel, _bars(2), 4, seed=0)).all()


def test_the_exact_log_likelihood_and_bdmc_of_a_model_with_its_own_networks():
    torch.manual_seed(0)
    vae = pv.VAE(
        SHAPE, 2, prior="vampprior", num_components=4, encoder=ConvEncoder(2),
        decoder=ConvDecoder(2),
    ).eval()  # fmt: skip
    x = _bars(3)
    exact = pv.exact_log_likelihood(vae, x, grid_size=32, max_grid_size=32, max_levels=1)
    assert torch.allclose(exact, pv.log_likelihood(vae, x, 2000, seed=0), atol=0.05)
    bounds = pv.bdmc(vae, 2, num_chains=2, num_steps=10)
    assert bounds["x"].shape == (2, 256) and bool((bounds["gap"] >= -1.0).all())
