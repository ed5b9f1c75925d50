"""The data side of a run: the training data of each epoch (a fixed tensor or a fresh
binarisation drawn from the run's seed and the epoch), each process's shard of it, and the
``LightningDataModule`` that serves both with the validation tensor. A run therefore does not
depend on how it was cut into pieces or on the number of processes."""

from __future__ import annotations

from collections.abc import Callable

import lightning.pytorch as pl
import torch

from pyrovamp._random import derive_seed
from pyrovamp.training.config import BINARISATION_STREAM

__all__ = ["EpochData", "EpochSampler", "SVIDataModule"]


class EpochData(torch.utils.data.Dataset):
    """Training data for one epoch: a fixed ``(N, D)`` tensor, or a fresh binarisation of grey
    images per epoch drawn from ``sampler(generator=...)`` with a generator seeded from the
    run's seed and the epoch (so every process and every piece of a run draws the same one).
    Batches are gathered by one tensor index (``__getitems__``), not item by item.

    Args:
        data: the ``(N, D)`` data of the first epoch.
        sampler: ``sampler(generator=None) -> (N, D)``, or ``None`` for fixed data.
        seed: the run's seed.
        check: applied to every draw of ``sampler`` (the model's data check), or ``None``.
    """

    def __init__(
        self,
        data: torch.Tensor,
        sampler: Callable | None = None,
        seed: int = 0,
        check: Callable | None = None,
    ):
        self.data, self.sampler, self.seed, self.check = data, sampler, seed, check
        self.epoch: int | None = None

    def set_epoch(self, epoch: int) -> None:
        """Draw the data of (0-based) ``epoch`` (nothing to do for fixed data)."""
        if self.sampler is not None and epoch != self.epoch:
            g = torch.Generator().manual_seed(derive_seed(self.seed, BINARISATION_STREAM, epoch))
            x = self.sampler(generator=g)
            self.data = self.check(x) if self.check is not None else x
        self.epoch = epoch

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, i):
        return self.data[i]

    def __getitems__(self, idx):
        return self.data[torch.as_tensor(idx, dtype=torch.long)]


class EpochSampler(torch.utils.data.DistributedSampler):
    """``DistributedSampler`` (each process its own shard, reshuffled every epoch from the seed)
    that also tells the :class:`EpochData` which epoch it is. With one process it is a seeded
    random permutation per epoch."""

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if isinstance(self.dataset, EpochData):
            self.dataset.set_epoch(epoch)


def _identity(batch):
    return batch


class SVIDataModule(pl.LightningDataModule):
    """Training data (:class:`EpochData`) and the ``(M, D)`` validation tensor (or ``None``) of
    a run; ``batch_size`` is the global batch, each process loads ``batch_size // world_size``."""

    def __init__(
        self, train: EpochData, validation: torch.Tensor | None, batch_size: int, seed: int
    ):
        super().__init__()
        self.train_data, self.validation = train, validation
        self.batch_size, self.seed = batch_size, seed

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        assert self.trainer is not None, "called by Trainer.fit"
        world, rank = self.trainer.world_size, self.trainer.global_rank
        sampler = EpochSampler(
            self.train_data,
            num_replicas=world,
            rank=rank,
            shuffle=True,
            seed=self.seed,
            drop_last=False,
        )
        self.train_data.set_epoch(0)
        return torch.utils.data.DataLoader(
            self.train_data,
            batch_size=self.batch_size // world,
            sampler=sampler,
            collate_fn=_identity,
            generator=torch.Generator().manual_seed(self.seed),
        )
