"""Figures (matplotlib). Every function returns a ``matplotlib.figure.Figure`` and never calls
``plt.show()``; save it with ``fig.savefig(path)`` or let a notebook display it.

* :func:`plot_latent` -- the book's Figs. 4.8-4.13: the prior's density contours with the
  aggregated posterior (encoder means of data points) as dots.
* :func:`plot_samples`, :func:`plot_reconstructions` -- image grids.
* :func:`plot_history` -- training loss, validation ELBO and its reconstruction and KL terms.
* :func:`plot_pseudo_inputs` -- the VampPrior's pseudo-inputs as images.
* :func:`plot_active_units` -- the variance of every latent unit's posterior mean.
* :func:`plot_khat_vs_error` -- importance-sampling error against Pareto k-hat, per data point.

Data arguments take a tensor or a numpy array, cast to the model's dtype and device and checked
as every estimator checks them (:func:`pyrovamp.infer.context.as_model_data`). An argument of
the wrong type raises :class:`~pyrovamp.errors.ArgumentTypeError`, a wrong value ``ValueError``,
in one line naming it. A function that switches the model to eval mode restores its previous
mode on return, also when it raises.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from pyrovamp._validate import check_int, check_positive, check_type
from pyrovamp.errors import ArgumentTypeError
from pyrovamp.infer.context import as_model_data
from pyrovamp.nn import eval_mode

__all__ = [
    "plot_latent",
    "plot_samples",
    "plot_reconstructions",
    "plot_history",
    "image_grid",
    "display_shape",
    "plot_pseudo_inputs",
    "plot_active_units",
    "plot_khat_vs_error",
]

_DATA = "a torch.Tensor or numpy array of shape (N, D)"


def _check_model(model, what: str) -> None:
    missing = [a for a in ("modules", what) if not hasattr(model, a)]
    if missing:
        raise ArgumentTypeError(
            f"model must be a pyrovamp model (VAE, HVAE, ...), got {type(model).__name__} "
            f"without {', '.join(missing)}"
        )


def _model_data(model, x: Any, name: str = "x") -> torch.Tensor:
    check_type(name, x, (torch.Tensor, np.ndarray), _DATA)
    return as_model_data(model, x, name)


@torch.no_grad()
def plot_latent(model, x: torch.Tensor, grid_size: int = 200, title: str | None = None) -> Figure:
    """Prior density contours with the encodings of ``x`` (means of ``q(z|x)``) as dots.

    For ``latent_dim == 2`` the contours are ``p(z)`` on a grid covering the encodings; for
    larger latent sizes everything is projected on the first two principal components of the
    encodings (stated on the axes): the dots are the projected encodings and the contours a
    Gaussian kernel density estimate (``scipy.stats.gaussian_kde``) of 5000 projected prior
    samples.

    Args:
        model: a :class:`pyrovamp.VAE`.
        x: ``(N, D)`` data (e.g. the test set), a tensor or numpy array.
        grid_size: contour grid points per axis (at least 2).
        title: figure title (default: the prior's class name).

    Raises:
        pyrovamp.errors.ArgumentTypeError: ``model`` without an encoder, ``x`` not a tensor or
            array, ``grid_size`` not an integer, ``title`` not a string.
        ValueError: ``x`` of the wrong shape or outside the likelihood's support,
            ``grid_size < 2``.
    """
    _check_model(model, "encoder")
    x = _model_data(model, x)
    grid_size = check_int("grid_size", grid_size, 2)
    if title is not None:
        check_type("title", title, str, "a string or None")
    with eval_mode(model):
        return _latent_figure(model, x, grid_size, title)


def _latent_figure(model, x, grid_size, title) -> Figure:
    loc, _ = model.encoder(x.reshape(x.shape[0], *getattr(model, "input_shape", x.shape[1:])))
    loc = loc.detach().cpu()
    fig = Figure(figsize=(5, 4.5))
    ax = fig.add_subplot(111)
    if model.latent_dim == 2:
        lo, hi = loc.min(0).values, loc.max(0).values
        pad = 0.15 * (hi - lo) + 0.5
        g0 = torch.linspace(float(lo[0] - pad[0]), float(hi[0] + pad[0]), grid_size)
        g1 = torch.linspace(float(lo[1] - pad[1]), float(hi[1] + pad[1]), grid_size)
        zz = torch.stack(torch.meshgrid(g0, g1, indexing="xy"), -1)
        device = next(model.parameters()).device
        density = model.prior().log_prob(zz.to(device)).exp().cpu()
        cs = ax.contourf(g0.numpy(), g1.numpy(), density.numpy(), levels=20, cmap="viridis")
        fig.colorbar(cs, ax=ax, label="prior density p(z)")
        ax.scatter(loc[:, 0], loc[:, 1], s=4, c="black", alpha=0.6, label="aggregated posterior")
        ax.set_xlabel("$z_1$")
        ax.set_ylabel("$z_2$")
    else:
        from scipy.stats import gaussian_kde

        centre = loc.mean(0)
        _, _, v = torch.linalg.svd(loc - centre, full_matrices=False)
        proj = (loc - centre) @ v[:2].T
        prior_proj = ((model.prior().sample((5000,)).cpu() - centre) @ v[:2].T).numpy()
        plo, phi = proj.min(0).values, proj.max(0).values
        ppad = 0.15 * (phi - plo) + 0.5
        p0 = np.linspace(float(plo[0] - ppad[0]), float(phi[0] + ppad[0]), 80)
        p1 = np.linspace(float(plo[1] - ppad[1]), float(phi[1] + ppad[1]), 80)
        m0, m1 = np.meshgrid(p0, p1)
        dens = gaussian_kde(prior_proj.T)(np.stack([m0.ravel(), m1.ravel()])).reshape(m0.shape)
        cs = ax.contourf(p0, p1, dens, levels=20, cmap="viridis")
        fig.colorbar(cs, ax=ax, label="projected prior density (KDE)")
        ax.scatter(proj[:, 0], proj[:, 1], s=4, c="black", alpha=0.6, label="aggregated posterior")
        ax.set_xlabel(f"PC 1 of E[z|x] (latent_dim={model.latent_dim})")
        ax.set_ylabel("PC 2 of E[z|x]")
    ax.legend(loc="upper right", fontsize=7)
    ax.set_title(title or f"{type(model.prior).__name__}: prior and aggregated posterior")
    return fig


def display_shape(shape) -> tuple:
    """How to show a data point of ``shape`` as an image: ``(H, W)`` grey, ``(C, H, W)`` colour
    (``C`` in 3, 4; a single channel ``(1, H, W)`` is ``(H, W)``). A flat ``(D,)`` becomes the
    most nearly square ``(H, W)`` with ``H * W == D`` (``(1, D)`` for a prime ``D``); any other
    shape ``(prod(shape[:-1]), shape[-1])``.

    Raises:
        pyrovamp.errors.ArgumentTypeError: ``shape`` not a tuple of positive integers.
    """
    check_type("image_shape", shape, (tuple, list, torch.Size), "a tuple of sizes")
    shape = tuple(check_int("image_shape", v) for v in shape)
    if len(shape) == 1:
        d = shape[0]
        h = max(i for i in range(1, math.isqrt(d) + 1) if d % i == 0)
        return (h, d // h)
    if len(shape) == 3 and shape[0] in (1, 3, 4):
        return shape[1:] if shape[0] == 1 else shape
    if len(shape) == 0:
        raise ValueError("image_shape must hold at least one size, got ()")
    return (math.prod(shape[:-1]), shape[-1])


def image_grid(images: torch.Tensor, image_shape, nrow: int = 8) -> np.ndarray:
    """Tile ``(n, D)`` images of ``image_shape`` into one array with
    ``torchvision.utils.make_grid``: ``(H, W)`` grey images give an ``(H', W')`` float array,
    ``(C, H, W)`` colour ones (``C`` 3 or 4, ``D`` laid out channels first) an ``(H', W', C)``
    one; a flat ``(D,)`` or any other shape is shown as :func:`display_shape` says.

    Raises:
        pyrovamp.errors.ArgumentTypeError: ``images`` not a tensor or array, ``image_shape``
            not a tuple of integers, ``nrow`` not an integer.
        ValueError: ``nrow < 1``; ``images`` whose size is not a multiple of ``prod(shape)``.
    """
    from torchvision.utils import make_grid

    check_type("images", images, (torch.Tensor, np.ndarray), "a tensor or numpy array (n, D)")
    shape = display_shape(image_shape)
    nrow = check_int("nrow", nrow)
    images = torch.as_tensor(images)
    if images.numel() % math.prod(shape):
        raise ValueError(
            f"images of {images.numel()} values are not whole {tuple(image_shape)} images"
        )
    channels = shape[0] if len(shape) == 3 else 1
    imgs = images.detach().cpu().float().reshape(-1, channels, *shape[-2:])
    grid = make_grid(imgs, nrow=nrow, padding=1, pad_value=float(imgs.max()))
    return grid[0].numpy() if channels == 1 else grid.permute(1, 2, 0).numpy()


def _imshow(fig, ax, grid, vmax, title):
    if grid.ndim == 3:  # colour: imshow takes values in [0, 1]
        ax.imshow(np.clip(grid / max(vmax, 1e-12), 0, 1), interpolation="nearest")
    else:
        ax.imshow(grid, cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title)


def _model_shape(model) -> tuple:
    """What an image of the model's data looks like (:func:`display_shape`)."""
    shape = getattr(model, "input_shape", None)
    return display_shape(shape) if shape else tuple(model.input_shape_2d)


def _grid_figure(model, images: torch.Tensor, nrow: int, title: str) -> Figure:
    """One panel: ``images`` ``(n, D)`` in the model's image shape, ``nrow`` per row, titled."""
    shape = _model_shape(model)
    nrow = min(nrow, len(images))
    aspect = shape[-2] / shape[-1]  # height / width of one image
    rows = math.ceil(len(images) / nrow)
    fig = Figure(figsize=(5, min(20, 5 * aspect * rows / nrow) + 0.4))
    grid = image_grid(images, shape, nrow)
    _imshow(fig, fig.add_subplot(111), grid, model.likelihood.high, title)
    return fig


@torch.no_grad()
def plot_samples(model, num_samples: int = 64, nrow: int = 8, mean: bool = True) -> Figure:
    """Images generated by the model: ``z ~ p(z)``, then ``E[x|z]`` (``mean=True``) or a draw
    ``x ~ p(x|z)``. Returns the figure.

    Raises:
        pyrovamp.errors.ArgumentTypeError, ValueError: ``num_samples`` or ``nrow`` not a
            positive integer, ``mean`` not a bool.
    """
    _check_model(model, "sample")
    num_samples = check_int("num_samples", num_samples)
    nrow = check_int("nrow", nrow)
    check_type("mean", mean, bool, "True or False")
    with eval_mode(model):
        x = model.sample(num_samples, mean=mean)
    what = "E[x|z]" if mean else "x ~ p(x|z)"
    return _grid_figure(model, x, nrow, f"samples: z ~ prior, {what}")


@torch.no_grad()
def plot_reconstructions(model, x: torch.Tensor, num_images: int = 16) -> Figure:
    """Data (top row) and reconstructions ``E[x | z = E[z|x]]`` (bottom row) of the first
    ``num_images`` points of ``x`` (``(N, D)``, a tensor or numpy array).

    Raises:
        pyrovamp.errors.ArgumentTypeError, ValueError: as :func:`plot_latent` for ``x``;
            ``num_images`` not a positive integer.
    """
    _check_model(model, "reconstruct")
    num_images = check_int("num_images", num_images)
    x = _model_data(model, x)[:num_images]
    with eval_mode(model):
        rec = model.reconstruct(x)
    shape = _model_shape(model)
    width = min(12, 0.7 * len(x) * shape[-1] / shape[-2] + 0.5)
    fig = Figure(figsize=(width, min(8, width * 2 * shape[-2] / (len(x) * shape[-1])) + 0.4))
    both = torch.cat([x.reshape(len(x), -1).to(rec), rec.reshape(len(rec), -1)])
    _imshow(
        fig,
        fig.add_subplot(111),
        image_grid(both, shape, len(x)),
        model.likelihood.high,
        "data (top) and reconstructions (bottom)",
    )
    return fig


def plot_history(history: list[dict]) -> Figure:
    """Training curves, nats per data point: the training objective (beta-weighted ELBO), the
    validation ELBO and, where recorded (``test_every``), the test log-likelihood on the fixed
    test subset as dots (left); the validation ELBO's terms -- reconstruction
    ``E_q[log p(x|z)]`` and ``KL(q || p)`` (right, when recorded).

    Args:
        history: one dict per epoch (:class:`pyrovamp.training.TrainResult`'s ``history``).

    Raises:
        pyrovamp.errors.ArgumentTypeError: ``history`` not a list of dicts.
    """
    check_type("history", history, (list, tuple), "a list of dicts, one per epoch")
    for r in history:
        check_type("history", r, dict, "a list of dicts, one per epoch")
    has_terms = bool(history) and "val_kl" in history[0]
    fig = Figure(figsize=(11 if has_terms else 6, 4))
    ax = fig.add_subplot(1, 2 if has_terms else 1, 1)
    epochs = [r["epoch"] for r in history]
    ax.plot(epochs, [-r["train_loss"] for r in history], label="train ELBO (beta-weighted)")
    if history and "val_elbo" in history[0]:
        ax.plot(epochs, [r["val_elbo"] for r in history], label="validation ELBO")
        score = "val_iwae" if "val_iwae" in history[0] else "val_elbo"  # what chose the best
        if score == "val_iwae":
            ax.plot(epochs, [r["val_iwae"] for r in history], label="validation IWAE bound")
        best = max(history, key=lambda r: r[score])
        ax.axvline(best["epoch"], color="gray", ls=":", label=f"best epoch {best['epoch']}")
    tested = [r for r in history if r.get("test_log_likelihood") is not None]
    if tested:
        ax.plot(
            [r["epoch"] for r in tested],
            [r["test_log_likelihood"] for r in tested],
            "o",
            color="C2",
            label="test log-likelihood (IS, fixed test subset)",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("ELBO (nats per data point)")
    ax.legend()
    ax.grid(alpha=0.3)
    if has_terms:
        ax2 = fig.add_subplot(1, 2, 2)
        ax2.plot(
            epochs,
            [r["val_reconstruction"] for r in history],
            color="C0",
            label="reconstruction E_q[log p(x|z)]",
        )
        ax2.set_ylabel("reconstruction (nats per data point)", color="C0")
        ax3 = ax2.twinx()
        ax3.plot(epochs, [r["val_kl"] for r in history], color="C3", label="KL(q || p)")
        ax3.set_ylabel("KL (nats per data point)", color="C3")
        ax2.set_xlabel("epoch")
        ax2.set_title("validation ELBO = reconstruction - KL")
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    return fig


@torch.no_grad()
def plot_pseudo_inputs(model, num_images: int = 64, nrow: int = 8) -> Figure:
    """The prior's pseudo-inputs (VampPrior ``u_k``, GTM-VampPrior ``g(u_k)``) as images.

    Raises:
        ValueError: the model's prior has no pseudo-inputs.
        pyrovamp.errors.ArgumentTypeError, ValueError: ``num_images`` or ``nrow`` not a
            positive integer.
    """
    _check_model(model, "prior")
    num_images = check_int("num_images", num_images)
    nrow = check_int("nrow", nrow)
    if not hasattr(model.prior, "pseudo_inputs"):
        raise ValueError(f"{type(model.prior).__name__} has no pseudo-inputs")
    u = model.prior.pseudo_inputs[:num_images]
    return _grid_figure(
        model, u, nrow, f"pseudo-inputs ({len(u)} of {model.prior.pseudo_inputs.shape[0]})"
    )


@torch.no_grad()
def plot_active_units(model, x: torch.Tensor, threshold: float = 0.01) -> Figure:
    """Variance over data points of each latent unit's posterior mean ``Cov_x E_q[z_i|x]``
    (log scale), sorted, one panel per latent layer, with the activity threshold.

    Raises:
        pyrovamp.errors.ArgumentTypeError, ValueError: as :func:`plot_latent` for ``x``;
            ``threshold`` not a positive number.
    """
    _check_model(model, "posterior_means")
    x = _model_data(model, x)
    threshold = check_positive("threshold", threshold)
    with eval_mode(model):
        means = model.posterior_means(x)
    fig = Figure(figsize=(5 * len(means), 3.5))
    for i, (site, m) in enumerate(means.items()):
        ax = fig.add_subplot(1, len(means), i + 1)
        var = m.double().var(0).sort(descending=True).values.cpu().numpy()
        ax.bar(np.arange(len(var)), var, color=["C0" if v > threshold else "C7" for v in var])
        ax.axhline(threshold, color="C3", ls="--", label=f"threshold {threshold}")
        ax.set_yscale("log")
        ax.set_title(f"{site}: {(var > threshold).sum()} of {len(var)} units active")
        ax.set_xlabel("unit (sorted)")
        ax.set_ylabel("Var_x E_q[z_i | x]")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_khat_vs_error(panels: dict, tolerance: float = 0.5) -> Figure:
    """Importance-sampling error against Pareto k-hat, one point per data point and one panel per
    model: the x axis is k-hat with the reliability threshold as a red line,
    the y axis ``truth - IS`` in nats (symmetric-log scale) with ``tolerance`` dashed. Points to
    the right of the red line are flagged; points above the dashed line are off.

    Args:
        panels: title -> the dict of :func:`pyrovamp.infer.khat_against_truth` plus the
            ``pareto_k`` array (``{**khat_against_truth(...), "pareto_k": k}``).
        tolerance: nats, the dashed line.

    Raises:
        pyrovamp.errors.ArgumentTypeError: ``panels`` not a dict of dicts, ``tolerance`` not a
            number.
        ValueError: no panels, or a panel without ``error``, ``pareto_k`` or ``khat_threshold``;
            ``tolerance <= 0``.
    """
    check_type("panels", panels, dict, "a dict {title: panel dict}")
    tolerance = check_positive("tolerance", tolerance)
    for name, p in panels.items():
        check_type(f"panels[{name!r}]", p, dict, "a dict")
    if not panels:
        raise ValueError("panels must hold at least one model")
    for name, p in panels.items():
        missing = {"error", "pareto_k", "khat_threshold"} - set(p)
        if missing:
            raise ValueError(f"panels[{name!r}] lacks {sorted(missing)}")
    fig = Figure(figsize=(3.2 * len(panels), 3.0))
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (name, p) in zip(axes, panels.items(), strict=True):
        ax.scatter(np.asarray(p["pareto_k"]), -np.asarray(p["error"]), s=4, alpha=0.5)
        ax.axvline(p["khat_threshold"], color="C3", lw=1)
        ax.axhline(tolerance, color="0.5", lw=1, ls="--")
        ax.set_yscale("symlog", linthresh=0.1)
        title = name
        if "precision" in p:
            title += f"\nprecision {p['precision']:.2f}, recall {p['recall']:.2f}"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("Pareto k-hat")
    axes[0].set_ylabel("truth - IS (nats)")
    fig.tight_layout()
    return fig
