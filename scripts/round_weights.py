"""Round a run folder's trained parameters to a lower precision, into a new run folder.

    python scripts/round_weights.py RUN OUT [--dtype bfloat16]

``OUT`` gets ``config.json``, ``history.csv`` and ``model.pt`` with every floating parameter and
buffer rounded to ``--dtype`` and stored back in its own dtype, so a pretrained folder that keeps
the weights in that dtype (``export_run(..., weights_dtype=...)``) holds exactly the evaluated
model. Evaluate ``OUT`` anew (``pyrovamp evaluate OUT``, ``--method ais``) and compare its exact or
IS value with the run's: the zoo stores weights in bfloat16 only where the whole-test-set
log-likelihood moves by less than 0.01 nats.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from pyrovamp.training.checkpoint import MODEL, atomic_save, read_checkpoint

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    args = p.parse_args()
    low = DTYPES[args.dtype]
    obj = read_checkpoint(args.run / MODEL)
    state = obj["pyrovamp"]["scored_state"]
    for k, v in state.items():
        if v.is_floating_point():
            state[k] = v.to(low).to(v.dtype)
    args.out.mkdir(parents=True, exist_ok=False)
    for f in ("config.json", "history.csv"):
        shutil.copy2(args.run / f, args.out / f)
    atomic_save(obj, args.out / MODEL)
    print(f"{args.run / MODEL} rounded to {args.dtype} -> {args.out / MODEL}")


if __name__ == "__main__":
    main()
