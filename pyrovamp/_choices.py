"""Names of the training options' choices, importable without loading Lightning (the command
line's parser and ``import pyrovamp`` stay fast); :mod:`pyrovamp.training` maps them to objects."""

LOSS_NAMES = ("trace", "meanfield", "jit_trace", "jit_meanfield", "iwae")
OPTIMIZER_NAMES = ("adam", "adamax", "adamnormgrad")
VAL_BOUNDS = ("elbo", "iwae")
# the training settings added after runs were made, as those runs trained (constant rate, ELBO);
# read back by pyrovamp.training.config.saved_config and its resume check
LEGACY_TRAINING = {"lr_decay": None, "lr_patience": 10, "val_bound": "elbo"}
WEIGHT_INITS = ("default", "he")  # pyrovamp.workflow.runs.build_model
PRECISIONS = ("32", "bf16-mixed", "16-mixed")
LOGGERS = ("csv", "tensorboard", "none")
