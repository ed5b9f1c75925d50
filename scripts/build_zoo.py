"""Build pyrovamp's zoo (``pyrovamp/zoo/<name>/``) from finished run folders, and write the zoo's
table into the README and the docs from the cards.

Each zoo model is a run folder trained by the command its card names, evaluated with
``pyrovamp evaluate RUN --method is`` (the per-image values) and ``--method ais``; this script
exports it (:func:`pyrovamp.workflow.zoo.export_run`) with its recipe and commands.

    python scripts/build_zoo.py --runs /path/to/run/folders [--names NAME ...]

Digits runs are ``RUNS/digits_vae_<prior>_bf16`` (``scripts/round_weights.py``); static-MNIST
cells are the last stage of the best recipe, ``RUNS/static_mnist_<model>_<prior>.best/2-iwae``
(``pyrovamp reproduce table1 --recipe best --out RUNS``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from pyrovamp.workflow.recipes import RECIPES
from pyrovamp.workflow.reproduce import hardware
from pyrovamp.workflow.runs import read_json_object
from pyrovamp.workflow.zoo import export_run, update_zoo_tables

ROOT = Path(__file__).resolve().parents[1]
DIGITS_PRIORS = ("standard", "mog", "vampprior", "gtm", "gtm-vampprior", "flow")


def _digits(prior: str) -> tuple[str, str, list[str], str | None]:
    """The Digits models are trained in float32 and shipped in bfloat16 (the zoo's size budget):
    their weights are rounded into RUN_bf16 and that model is what is evaluated and shipped."""
    run = f"digits_vae_{prior}"
    return (
        f"{run}_bf16",
        "book",  # pyrovamp train's defaults on Digits: the book's setup
        [
            f"pyrovamp train --dataset digits --prior {prior} --out {run}",
            f"python scripts/round_weights.py {run} {run}_bf16 --dtype bfloat16",
            f"pyrovamp evaluate {run}_bf16",
            f"pyrovamp evaluate {run}_bf16 --method ais",
        ],
        "bfloat16",
    )


def _static_mnist(model: str, prior: str) -> tuple[str, str, list[str], str | None]:
    recipe = RECIPES["best"]
    cell = f"static_mnist_{model}_{prior}.best"
    stages = f"{recipe.name} v{recipe.version}: " + ", then ".join(s.name for s in recipe.stages)
    run = f"{cell}/{len(recipe.stages)}-{recipe.stages[-1].name}"
    command = (
        "pyrovamp reproduce table1 --recipe best --out . --data-root DATA "
        f"--models {model} --priors {prior}"
    )
    ais = f"pyrovamp evaluate {run} --method ais --num-chains 8 --num-steps 500"
    return run, stages, [command, ais], None


def zoo_plan() -> dict[str, tuple[str, str, list[str], str | None]]:
    """name -> (run folder under RUNS, recipe, commands, the weights' dtype (None: the model's))."""
    plan = {f"digits-vae-{p}": _digits(p) for p in DIGITS_PRIORS}
    for model in ("vae", "hvae"):
        for prior in ("standard", "vampprior"):
            plan[f"static-mnist-{model}-{prior}"] = _static_mnist(model, prior)
    return plan


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", required=True, type=Path, help="the folder of the run folders")
    p.add_argument("--names", nargs="+", help="only these zoo models (default: every finished one)")
    p.add_argument("--out", type=Path, default=ROOT / "pyrovamp" / "zoo")
    args = p.parse_args()
    machine = (
        f"{hardware()} ({torch.backends.cpu.get_cpu_capability()}; "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})"
    )
    for name, (run, recipe, commands, dtype) in zoo_plan().items():
        if args.names and name not in args.names:
            continue
        folder = args.runs / run
        if not (folder / "log_likelihood_is.npz").is_file():
            print(f"{name}: {folder} not finished or not evaluated, skipped")
            continue
        notes = None
        if dtype is not None:  # the shift of the rounding, measured on the whole test set
            full = read_json_object(
                folder.parent / folder.name.removesuffix("_bf16") / "metrics.json"
            )
            low = read_json_object(folder / "metrics.json")
            key = next(k for k in ("test_log_likelihood_exact", "test_log_likelihood") if k in low)
            shift = low[key] - full[key]
            notes = (
                f"Weights stored in {dtype}: {key} {low[key]:.4f} against {full[key]:.4f} with "
                f"the float32 weights (a shift of {shift:+.4f} nats per image); the card's "
                f"numbers are those of the {dtype} weights."
            )
            if abs(shift) >= 0.01:
                raise SystemExit(f"{name}: rounding to {dtype} moves {key} by {shift:+.4f} nats")
        first = folder.parent / f"1-{RECIPES['best'].stages[0].name}"
        if dtype is None and first.is_dir() and not (first / "recipe.json").is_file():
            notes = (
                f"Stage 1 ({first.name}) was trained before `--recipe best` existed, by "
                "`pyrovamp train` in `--max-minutes` pieces with the same config.json as the "
                "recipe's stage 1 (fast preset, decoder dropout 0.1, IWAE-20 validation on 2000 "
                "images, learning-rate halving, seed 0); the recipe's command took it as "
                "finished and ran stage 2 from it."
            )
        if dtype is None and (first / "metrics.json").is_file():  # the card's time is stage 2's
            m1 = read_json_object(first / "metrics.json")
            if m1.get("train_seconds"):
                notes = (notes + " " if notes else "") + (
                    f"The training time above is the last stage's; stage 1 took "
                    f"{m1['train_seconds'] / 60:.0f} min ({m1.get('epochs_trained')} epochs)."
                )
        export_run(
            folder,
            args.out / name,
            name=name,
            recipe=recipe,
            commands=commands,
            hardware=machine,
            weights_dtype=getattr(torch, dtype) if dtype else None,
            notes=notes,
        )
        print(f"{name}: {folder} -> {args.out / name}")
    for page in update_zoo_tables(
        ROOT / "README.md", ROOT / "docs" / "user-guide" / "pretrained.md"
    ):
        print(f"updated {page}")


if __name__ == "__main__":
    main()
