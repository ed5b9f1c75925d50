"""The library's own exceptions (importable without loading Lightning)."""

__all__ = [
    "NonFiniteLossError",
    "CheckpointError",
    "ArgumentTypeError",
    "TrainingInterrupted",
    "CellsFailedError",
]


class NonFiniteLossError(FloatingPointError):
    """The loss or the parameters became NaN or infinite; training stopped before writing them
    (the message names the epoch, the step and the last good checkpoint)."""


class CheckpointError(ValueError):
    """A checkpoint or model file is missing, truncated, corrupt, unsafe or from another model,
    or a resumed run asks for a setting that differs from the run's (one line naming the file or
    the setting)."""


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (e.g. a float where an integer is expected, a list where a
    tensor is): one line naming the argument, what was expected and what came.

    A ``TypeError`` as Python's convention asks; also a ``ValueError``, so code written against
    pyrovamp 0.1 (which raised ``ValueError`` for every bad argument) keeps working."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal (SIGTERM, as a scheduler sends at the end of a time slot, or
    SIGINT, Ctrl-C) after the last checkpoint was written; ``resume=True`` (``pyrovamp train
    --resume``) continues from it.

    A ``KeyboardInterrupt``, so that code which stops on Ctrl-C stops on it too.

    Attributes:
        signal: ``"SIGTERM"`` or ``"SIGINT"``.
        epoch: the epochs completed in the checkpoint (0: none yet).
        checkpoint: the checkpoint to resume from (``None``: none was written, e.g. a run
            without a ``checkpoint_dir``).
        stage: ``"training"``, or ``"evaluation"`` when training had finished and the test
            evaluation of a run folder was interrupted.
    """

    def __init__(self, signal: str, epoch: int, checkpoint=None, stage: str = "training"):
        self.signal, self.epoch, self.checkpoint, self.stage = signal, epoch, checkpoint, stage
        where = f"the checkpoint {checkpoint}" if checkpoint is not None else "no checkpoint"
        super().__init__(f"{stage} stopped by {signal} at epoch {epoch} ({where})")


class CellsFailedError(RuntimeError):
    """Cells of ``pyrovamp reproduce table1`` failed (bad data, a non-finite loss), the others
    went on and the table was written, each failed cell's row saying so
    (:func:`pyrovamp.workflow.reproduce.reproduce_table1` with ``strict=True``; the command's
    exit status 1).

    Attributes:
        cells: the names of the failed cells (``static_mnist_vae_standard``).
        table: the path of the table written.
    """

    def __init__(self, cells, table):
        self.cells, self.table = list(cells), table
        super().__init__(
            f"{len(self.cells)} cell{'s' if len(self.cells) > 1 else ''} failed "
            f"({', '.join(self.cells)}; see the messages above); the table: {table}"
        )
