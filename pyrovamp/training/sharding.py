"""Evaluation shared out over the processes of a data-parallel run (after :func:`fit
<pyrovamp.training.fit>` with several devices, or in the processes of ``pyrovamp evaluate
--devices N``, :mod:`pyrovamp.workflow.parallel`), gathered so that every process holds the whole
result. Importing it does not load Lightning."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

if TYPE_CHECKING:
    import lightning.pytorch as pl
    from lightning.fabric import Fabric

__all__ = ["sharded_over_processes"]


def sharded_over_processes(
    fn: Callable[[torch.Tensor, int, int], dict],
    x: torch.Tensor,
    block: int,
    trainer: pl.Trainer | Fabric,
) -> dict:
    """Evaluate ``fn`` on this process's share of ``x`` and gather the results of all processes.

    ``x`` is cut into blocks of ``block`` points; process ``r`` of ``W`` takes a contiguous run
    of blocks starting at global block index ``b0`` and calls ``fn(x_part, b0, block)``, which
    returns a dict of ``(n_part, ...)`` tensors (per data point); the parts are gathered in
    order, so the result equals one process evaluating all blocks when ``fn`` seeds each block
    from its global index (as :func:`pyrovamp.log_likelihood` does with ``first_block``).
    ``trainer``: what knows the processes -- a Lightning ``Trainer`` or ``Fabric`` (its
    ``world_size`` and ``global_rank``) whose process group is set up; every process calls this
    function with the same ``x`` and ``block``. A process whose share is empty (more processes
    than blocks) does not call ``fn``.

    Returns:
        dict of ``(N, ...)`` CPU tensors.
    """
    world, rank = trainer.world_size, trainer.global_rank
    n = x.shape[0]
    nblocks = -(-n // block)
    per = -(-nblocks // world)
    b0, b1 = min(rank * per, nblocks), min((rank + 1) * per, nblocks)
    part = x[b0 * block : b1 * block]
    mine = {k: v.detach().cpu() for k, v in fn(part, b0, block).items()} if part.shape[0] else None
    parts: list[dict | None] = [None] * world
    dist.all_gather_object(parts, mine)
    gathered = [p for p in parts if p is not None]
    return {k: torch.cat([p[k] for p in gathered]) for k in gathered[0]}
