"""The library's own exceptions (importable without loading Lightning)."""

__all__ = ["NonFiniteLossError", "CheckpointError"]


class NonFiniteLossError(FloatingPointError):
    """The loss or the parameters became NaN or infinite; training stopped before writing them
    (the message names the epoch, the step and the last good checkpoint)."""


class CheckpointError(ValueError):
    """A checkpoint or model file is missing, truncated, corrupt, unsafe or from another model,
    or a resumed run asks for a setting that differs from the run's (one line naming the file or
    the setting)."""
