"""The densities of one chunk of AIS chains (:mod:`pyrovamp.infer.ais`): the normalised initial
density ``pi_0`` (:class:`_Initial`) and the target ``log p(x, u)`` with ``log pi_0(u)`` and
their gradients in ``u`` (:class:`_Target`), for the data points of the chunk.
"""

from __future__ import annotations

import math

import torch


class _Initial:
    """The initial density ``pi_0`` of one chunk of data points ``x``: draws ``(C, n, d)`` and
    ``log pi_0(u)`` ``(C, n)`` (differentiable).

    Kinds: ``"guide"`` -- ``q(z|x)`` itself; ``"prior"`` -- the model's ``p(z)``;
    ``"gaussian"`` -- a diagonal Gaussian with the guide's mean and ``init_scale`` times its
    standard deviation (from 64 guide draws per point; for a Gaussian guide and
    ``init_scale = 1`` the guide's own diagonal Gaussian); ``"prior-gaussian"`` -- a diagonal
    Gaussian with the prior's mean and ``init_scale`` times its standard deviation (from 4096
    prior draws); ``"mixture"`` -- ``(q(z|x) + prior-gaussian) / 2`` (defensive importance
    sampling, Hesterberg 1995, as the start of AIS).
    """

    def __init__(self, kind, space, x, init_scale=1.0):
        self.kind, self.space, self.x = kind, space, x
        if kind in ("guide", "mixture"):
            self.log_guide = space.guide_density(x)  # the guide's encoder run once per chunk
        if kind in ("gaussian", "prior-gaussian", "mixture"):
            draws = (
                space.sample(x, 64, "guide") if kind == "gaussian" else space.prior_draws(x, 4096)
            )
            self.loc = draws.mean(0, keepdim=True)
            self.scale = (draws.std(0, keepdim=True) * init_scale).clamp_min(1e-6)

    def points(self, index):
        """The same density for the data points ``x[index]`` alone (``index`` ``(m,)``, repeats
        allowed): the Gaussian's moments and the guide's density indexed."""
        sub = object.__new__(_Initial)
        sub.kind, sub.space, sub.x = self.kind, self.space, self.x[index]
        if self.kind in ("guide", "mixture"):
            sub.log_guide = self.log_guide.points(index)
        if self.kind in ("gaussian", "prior-gaussian", "mixture"):
            per_point = self.loc.shape[1] > 1
            sub.loc = self.loc[:, index] if per_point else self.loc
            sub.scale = self.scale[:, index] if per_point else self.scale
        return sub

    def _gaussian(self, num_chains):
        shape = (num_chains, self.x.shape[0], self.space.dim)
        return self.loc + self.scale * torch.randn(
            shape, dtype=self.loc.dtype, device=self.loc.device
        )

    def _log_gaussian(self, u):
        z = (u - self.loc) / self.scale
        return (-0.5 * z * z - self.scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)

    def sample(self, num_chains):
        if self.kind == "prior":
            return self.space.sample(self.x, num_chains, "prior")
        if self.kind == "guide":
            return self.log_guide.sample(num_chains)
        if self.kind == "mixture":
            q = self.log_guide.sample(num_chains)
            pick = torch.rand(q.shape[:-1] + (1,), device=q.device) < 0.5
            return torch.where(pick, q, self._gaussian(num_chains))
        return self._gaussian(num_chains)

    def log_prob(self, u, latent):
        """``log pi_0(u)``; ``latent`` is the model's ``log p(z)`` at ``u`` (the prior kind)."""
        if self.kind == "prior":
            return latent
        if self.kind == "guide":
            return self.log_guide(u)
        if self.kind == "mixture":
            return torch.logaddexp(self.log_guide(u), self._log_gaussian(u)) - math.log(2)
        return self._log_gaussian(u)


class _Target:
    """``log p(x, u)`` and ``log pi_0(u)`` per chain with their gradients, for one chunk."""

    def __init__(self, space, x, initial):
        self.space, self.x, self.initial = space, x, initial

    def __call__(self, u, grad=True):
        """``u`` ``(C, n, d)`` -> ``(log_joint, log_init, grad_joint, grad_init)`` (detached)."""
        u = u.detach().requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            latent, observed = self.space.log_joint(self.x, u)
            log_joint = latent + observed
            log_init = self.initial.log_prob(u, latent)
            if not grad:
                return log_joint.detach(), log_init.detach(), None, None
            (g_init,) = torch.autograd.grad(log_init.sum(), u, retain_graph=True)
            (g_joint,) = torch.autograd.grad(log_joint.sum(), u)
        return log_joint.detach(), log_init.detach(), g_joint, g_init

    def gradients_at(self, u, where):
        """The gradients ``(grad_joint, grad_init)`` ``(C, n, d)`` at ``u`` for the chains where
        ``where`` ``(C, n)`` is true, zero elsewhere: one target evaluation on those chains
        alone, their data points gathered. A model traced on a whole block of points
        (``probe_points > 1``: its plate takes no other number) is evaluated on every chain."""
        if self.space.probe_points > 1:
            return self(u)[2:]
        chain, point = where.nonzero(as_tuple=True)
        g_joint, g_init = torch.zeros_like(u), torch.zeros_like(u)
        if chain.numel():
            sub = _Target(self.space, self.x[point], self.initial.points(point))
            _, _, gj, gi = sub(u[chain, point].unsqueeze(0))
            g_joint[chain, point], g_init[chain, point] = gj[0], gi[0]
        return g_joint, g_init
