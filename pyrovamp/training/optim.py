"""The optimisers a run may name (:data:`OPTIMIZERS`), among them the VampPrior paper's
:class:`AdamNormGrad`."""

from __future__ import annotations

import torch

__all__ = ["AdamNormGrad", "OPTIMIZERS"]


class AdamNormGrad(torch.optim.Adam):
    """Adam on gradients divided by their L2 norm, tensor by tensor: ``g <- g / (||g||_2 + 1e-7)``
    for every parameter tensor before the Adam update -- the optimiser of the VampPrior paper's
    code (jmtomczak/vae_vampprior ``utils/optimizer.py``, ``AdamNormGrad``), part of its
    protocol. Arguments as :class:`torch.optim.Adam`.

    pyrovamp computes some of the paper's separate layers as one (the two halves of a gated
    layer, the mean and log-variance heads: :func:`pyrovamp.nn.mark_fused`). A parameter group
    may say so with the key ``norm_chunks``: one integer per tensor of its ``params``, the
    number of equal blocks along the tensor's first dimension whose gradients are normalised
    each on its own (:func:`pyrovamp.nn.parameter_chunks` gives them for a model; the
    training loop passes them), as the paper's code normalises each of its tensors. Without the
    key (plain parameters, or a checkpoint written before the key existed) each tensor is
    normalised as a whole.

    The gradients are normalised in place (code reading them after the step sees the
    normalised ones) by a step pre-hook (:meth:`torch.optim.Optimizer.register_step_pre_hook`)
    that the optimiser registers on itself: without a closure it normalises at once (the
    gradients of ``loss.backward()``); with one (``step(closure)``, as Lightning calls it) it
    passes Adam a closure that normalises after the original closure's backward pass. Adam's
    update and the step hooks run once per step.

    Raises:
        ValueError: ``norm_chunks`` does not give, for each tensor, a positive integer that
            divides its first dimension.
    """

    def __init__(self, params, *args, **kwargs):
        super().__init__(params, *args, **kwargs)
        self.register_step_pre_hook(AdamNormGrad._normalise_before_update)

    def add_param_group(self, param_group: dict) -> None:
        """Add a group (see :meth:`torch.optim.Optimizer.add_param_group`), checking its
        ``norm_chunks`` first."""
        chunks = param_group.get("norm_chunks")
        if chunks is not None:
            params = param_group["params"]
            params = [params] if isinstance(params, torch.Tensor) else list(params)
            param_group["params"] = params
            chunks = list(chunks)
            if len(chunks) != len(params) or any(
                not isinstance(c, int)
                or isinstance(c, bool)
                or c < 1
                or (p.shape[0] if p.dim() else 1) % c
                for c, p in zip(chunks, params, strict=True)
            ):
                raise ValueError(
                    "norm_chunks must give, for each of the group's "
                    f"{len(params)} tensors, a positive integer dividing its first "
                    f"dimension; got {chunks[:8]}{'...' if len(chunks) > 8 else ''}"
                )
            param_group["norm_chunks"] = chunks
        super().add_param_group(param_group)

    @torch.no_grad()
    def normalise_gradients(self) -> None:
        """Divide every ``p.grad`` (or each of its ``norm_chunks`` blocks along the first
        dimension) by its L2 norm plus ``1e-7``, in place."""
        for group in self.param_groups:
            chunks = group.get("norm_chunks") or [1] * len(group["params"])
            for p, c in zip(group["params"], chunks, strict=True):
                if p.grad is not None:  # c blocks along the first dimension (c = 1: whole)
                    blocks = p.grad.reshape(c, -1)  # a view of a contiguous gradient
                    blocks.div_(torch.linalg.vector_norm(blocks, dim=1, keepdim=True) + 1e-7)
                    if blocks.data_ptr() != p.grad.data_ptr():  # it was a copy
                        p.grad.copy_(blocks.view_as(p.grad))

    @staticmethod
    def _normalise_before_update(optimizer: AdamNormGrad, args: tuple, kwargs: dict):
        """The step pre-hook: normalise now, or after the closure's backward pass."""
        closure = args[1] if len(args) > 1 else kwargs.get("closure")
        if closure is None:
            optimizer.normalise_gradients()
            return None

        def closure_then_normalise():
            loss = closure()
            optimizer.normalise_gradients()
            return loss

        return args[:1], {**kwargs, "closure": closure_then_normalise}


OPTIMIZERS = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax, "adamnormgrad": AdamNormGrad}
"""The optimisers by the names of :data:`pyrovamp.training.config.OPTIMIZER_NAMES`."""
