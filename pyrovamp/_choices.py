"""Names of the training options' choices, importable without loading Lightning (the command
line's parser and ``import pyrovamp`` stay fast); :mod:`pyrovamp.training` maps them to objects."""

LOSS_NAMES = ("trace", "meanfield", "jit_trace", "jit_meanfield", "iwae")
OPTIMIZER_NAMES = ("adam", "adamax", "adamnormgrad")
VAL_BOUNDS = ("elbo", "iwae")
WEIGHT_INITS = ("default", "he")  # pyrovamp.runs.build_model
PRECISIONS = ("32", "bf16-mixed", "16-mixed")
LOGGERS = ("csv", "tensorboard", "none")
