"""The library's own exceptions (importable without loading Lightning)."""

__all__ = ["NonFiniteLossError", "CheckpointError", "ArgumentTypeError"]


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
