"""Command line: ``pyrovamp train``, ``pyrovamp evaluate``, ``pyrovamp compare`` and
``pyrovamp reproduce table1`` (:mod:`pyrovamp.reproduce`).

``pyrovamp train`` trains a VAE with a chosen prior and writes a run folder; its defaults on
Digits are the book's setup (L=2, K=16, 256 hidden units, Adamax 1e-3, batch 64, early stopping
with patience 20), on static MNIST the VampPrior paper's. ``pyrovamp evaluate RUN_DIR``
recomputes the test metrics from the checkpoint (``--method is|ais|exact``: one estimator;
``--refine-guide EPOCHS``: IS with a guide refined on the training set, the model frozen,
:func:`pyrovamp.refine.refine_guide`). Bad arguments give a one-line error and exit
status 2, before any work and without touching an existing run folder.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


class UsageError(Exception):
    """A user error reported as one line."""


def _positive(name, kind=int):
    """argparse type: a positive ``kind`` (int: at least 1), with an error naming ``name``."""
    what = "an integer" if kind is int else "a number"

    def conv(s):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {what}, got {s!r}") from None
        if not (v > 0 and math.isfinite(v)):
            raise argparse.ArgumentTypeError(
                f"{name} must be at least 1, got {v}" if kind is int
                else f"{name} must be a finite positive number, got {v}")
        return v
    return conv


def _positive_int(name):
    return _positive(name, int)


def _positive_float(name):
    return _positive(name, float)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pyrovamp``."""
    from pyrovamp.data.datasets import DATASETS
    from pyrovamp.priors.base import FLOWS, PRIORS, PSEUDO_INPUT_PARAMETERIZATIONS
    from pyrovamp._choices import LOGGERS, LOSS_NAMES, OPTIMIZER_NAMES, PRECISIONS, VAL_BOUNDS, WEIGHT_INITS

    p = _Parser(prog="pyrovamp", description="VAEs with learnable priors in Pyro.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a VAE and write a run folder")
    t.add_argument("--dataset", default="digits", choices=DATASETS)
    t.add_argument("--prior", default="vampprior", choices=PRIORS)
    t.add_argument("--flow", choices=FLOWS,
                   help="the zuko flow of --prior flow (default realnvp)")
    t.add_argument("--model", choices=("vae", "hvae", "convhvae", "pixelhvae"),
                   help="one-level VAE (default), two-level HVAE, convolutional HVAE or PixelHVAE "
                        "(PixelCNN decoder)")
    t.add_argument("--preset", choices=("book", "paper", "fast"),
                   help="protocol defaults (Digits: book; other data sets: paper); fast: the "
                        "paper's model and warm-up with batch 200, lr 1e-3, bf16-mixed precision and "
                        "parameter EMA 0.999")
    t.add_argument("--max-points", type=_positive_int("--max-points"),
                   help="use at most this many training, validation and test points (quick runs)")
    t.add_argument("--latent-dim", type=_positive_int("--latent-dim"))
    t.add_argument("--num-components", type=_positive_int("--num-components"),
                   help="K: mixture components / pseudo-inputs")
    t.add_argument("--grid-side", type=_positive_int("--grid-side"),
                   help="GTM grid side (K = side^2); default sqrt(K)")
    t.add_argument("--hidden-dim", type=_positive_int("--hidden-dim"))
    t.add_argument("--num-hidden-layers", type=_positive_int("--num-hidden-layers"))
    t.add_argument("--architecture", choices=("mlp", "gated"))
    t.add_argument("--dropout", type=float,
                   help="dropout in the decoder's hidden layers (vae, hvae; training only)")
    t.add_argument("--learn-weights", action=argparse.BooleanOptionalAction, default=None,
                   help="learn the prior's mixing weights (default: the prior's own choice)")
    t.add_argument("--pseudo-inputs", choices=("random", "data"), default="random",
                   help="VampPrior pseudo-input initialisation")
    t.add_argument("--pseudo-input-parameterization", choices=PSEUDO_INPUT_PARAMETERIZATIONS,
                   help="VampPrior pseudo-inputs: sigmoid of a parameter, or a parameter clamped "
                        "to the data range and started nearly black (clamp, the paper's code); "
                        "default: the preset's (paper: clamp)")
    t.add_argument("--weight-init", choices=WEIGHT_INITS,
                   help="initialisation of the linear layers: PyTorch's default or He (the "
                        "paper's code); default: the preset's (paper: he)")
    t.add_argument("--epochs", type=_positive_int("--epochs"))
    t.add_argument("--batch-size", type=_positive_int("--batch-size"))
    t.add_argument("--lr", type=_positive_float("--lr"))
    t.add_argument("--optimizer", choices=OPTIMIZER_NAMES)
    t.add_argument("--loss", choices=LOSS_NAMES, default="trace",
                   help="training objective: Pyro's Trace_ELBO (default), TraceMeanField_ELBO "
                        "(analytic KL), their JIT variants, or the importance-weighted bound "
                        "(iwae, Burda et al. 2016) with --num-particles K")
    t.add_argument("--num-particles", type=_positive_int("--num-particles"), default=1,
                   help="samples per data point and step: of the ELBO, or the K >= 2 of --loss iwae")
    t.add_argument("--init-from", metavar="RUN_DIR",
                   help="start from the trained parameters (model.pt) of a run of the same model "
                        "instead of a random initialisation: fine-tuning, e.g. with --loss iwae "
                        "after ELBO training")
    t.add_argument("--warmup-epochs", type=int)
    t.add_argument("--patience", type=_positive_int("--patience"))
    t.add_argument("--lr-decay", type=float,
                   help="multiply the learning rate by this factor in (0, 1) when the validation "
                        "score (--val-bound) has not improved for --lr-patience epochs after the "
                        "warm-up (default: constant)")
    t.add_argument("--lr-patience", type=_positive_int("--lr-patience"),
                   help="epochs without a better validation score before --lr-decay (default 10)")
    t.add_argument("--ema-decay", type=float,
                   help="average the parameters with this decay per step (0 < d < 1; 0: off)")
    t.add_argument("--val-bound", choices=VAL_BOUNDS,
                   help="validation score for early stopping, the best parameters and --lr-decay: "
                        "the ELBO (default, the paper's) or the importance-weighted bound with "
                        "--val-num-samples samples")
    t.add_argument("--val-points", type=_positive_int("--val-points"),
                   help="validate on this many validation points spread over the validation set "
                        "(default: all)")
    t.add_argument("--val-num-samples", type=_positive_int("--val-num-samples"),
                   help="samples per validation point: of the ELBO, or the K of --val-bound iwae")
    t.add_argument("--num-samples", type=_positive_int("--num-samples"),
                   help="importance samples per test point (default 5000)")
    t.add_argument("--data-root", help="folder with the data set's canonical files")
    t.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="shorthand for --accelerator cpu|gpu")
    t.add_argument("--accelerator", choices=("cpu", "gpu", "auto"),
                   help="Lightning accelerator (default: from --device)")
    t.add_argument("--devices", type=_positive_int("--devices"), default=1,
                   help="devices (processes) per machine; >1 trains data-parallel")
    t.add_argument("--num-nodes", type=_positive_int("--num-nodes"), default=1,
                   help="machines taking part (Lightning's launcher; see the README)")
    t.add_argument("--strategy", default="auto",
                   choices=("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true"),
                   help="Lightning strategy; ddp for several processes")
    t.add_argument("--precision", choices=PRECISIONS,
                   help="32, bf16-mixed (autocast to bfloat16) or 16-mixed (GPU); default: the "
                        "preset's (32; fast: bf16-mixed)")
    t.add_argument("--logger", default="csv", choices=LOGGERS,
                   help="Lightning logger writing to RUN/logs (history.csv is always written)")
    t.add_argument("--test-every", type=_positive_int("--test-every"),
                   help="a learning curve: every N epochs, the test log-likelihood (IS) on "
                        "--test-points test images spread over the test set (history.csv, "
                        "loss.png); not counted as training time")
    t.add_argument("--test-points", type=_positive_int("--test-points"), default=TEST_POINTS,
                   help=f"test images of the --test-every curve (default {TEST_POINTS})")
    t.add_argument("--test-num-samples", type=_positive_int("--test-num-samples"), default=TEST_NUM_SAMPLES,
                   help=f"importance samples per test image of the --test-every curve (default {TEST_NUM_SAMPLES})")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--max-minutes", type=_positive_float("--max-minutes"),
                   help="stop cleanly with a checkpoint after this long; continue with --resume")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out (only --epochs, --max-minutes, --num-samples "
                        "and the device options may change)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--out", help="run folder (default: runs/<dataset>_<prior>_<time>)")

    c = sub.add_parser("compare", help="compare runs on their common test set (ArviZ)")
    c.add_argument("run_dirs", nargs="+")
    c.add_argument("--out", required=True, help="folder for comparison.csv, compare.png, pareto_k.png")
    c.add_argument("--num-samples", type=_positive_int("--num-samples"), default=1000,
                   help="importance samples per test point (default 1000)")
    c.add_argument("--recompute", action="store_true",
                   help="evaluate every run anew instead of reusing its stored evaluation.nc "
                        "(and store the new one)")
    c.add_argument("--device", default="cpu", choices=("cpu", "cuda"))

    r = sub.add_parser("reproduce", help="train the cells of the VampPrior paper's table, "
                                         "resumably, and write table1.md beside the paper's values")
    r.add_argument("table", choices=("table1",))
    r.add_argument("--out", required=True, help="folder of the cells' run folders and table1.md")
    r.add_argument("--datasets", nargs="+", default=["static_mnist"], choices=DATASETS,
                   metavar="DATASET")
    r.add_argument("--models", nargs="+", default=["vae", "hvae", "convhvae", "pixelhvae"],
                   choices=("vae", "hvae", "convhvae", "pixelhvae"), metavar="MODEL")
    r.add_argument("--priors", nargs="+", default=["standard", "vampprior"],
                   choices=("standard", "vampprior"), metavar="PRIOR")
    r.add_argument("--max-minutes", type=_positive_float("--max-minutes"),
                   help="training time per cell and call; run the command again to continue")
    r.add_argument("--accelerator", choices=("cpu", "gpu", "auto"), default="auto")
    r.add_argument("--devices", type=_positive_int("--devices"), default=1)
    r.add_argument("--data-root", nargs="+", metavar="[DATASET=]DIR",
                   help="folder with the data files (DATASET=DIR for one data set)")
    r.add_argument("--max-points", type=_positive_int("--max-points"),
                   help="smoke test: the first N training, validation and test points")
    r.add_argument("--num-samples", type=_positive_int("--num-samples"),
                   help="importance samples per test image (default: the paper's 5000)")
    r.add_argument("--epochs", type=_positive_int("--epochs"),
                   help="at most this many epochs per cell (default: the paper's 2000)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")

    e = sub.add_parser("evaluate", help="recompute a run's test metrics from its checkpoint")
    e.add_argument("run_dir")
    e.add_argument("--num-samples", type=_positive_int("--num-samples"), default=None)
    e.add_argument("--method", choices=("is", "ais", "exact"),
                   help="estimate the test log-likelihood with this method only and merge it "
                        "into metrics.json (default: recompute all test metrics and figures)")
    e.add_argument("--num-steps", type=_positive_int("--num-steps"),
                   help="AIS/BDMC intermediate distributions T (default 600)")
    e.add_argument("--num-chains", type=_positive_int("--num-chains"),
                   help="AIS/BDMC chains per data point (default 16)")
    e.add_argument("--refine-guide", type=_positive_int("--refine-guide"), metavar="EPOCHS",
                   help="refine a copy of the guide on the training set for EPOCHS epochs of the "
                        "importance-weighted bound, the model frozen, then estimate the test "
                        "log-likelihood by IS with it (test_log_likelihood_refined; "
                        "--num-samples sets its S) beside the run's plain IS estimate")
    e.add_argument("--refine-on", choices=("train", "test"),
                   help="fit the refined guide on the training set (default: a better amortised "
                        "guide, test_log_likelihood_refined) or on the test images it then "
                        "scores (a proposal adapted to them, as AIS adapts its chains; "
                        "test_log_likelihood_refined_on_test)")
    e.add_argument("--refine-num-samples", type=_positive_int("--refine-num-samples"),
                   metavar="K", help="importance samples of the refinement's bound (default 10)")
    e.add_argument("--refine-lr", type=_positive_float("--refine-lr"),
                   help="Adam's learning rate of the refinement (default 1e-4)")
    e.add_argument("--refine-batch-size", type=_positive_int("--refine-batch-size"),
                   help="training points per step of the refinement (default 100; smaller "
                        "uses less memory)")
    e.add_argument("--bdmc", type=_positive_int("--bdmc"), metavar="N",
                   help="also sandwich log p(x) by bidirectional Monte Carlo on N simulated points")
    e.add_argument("--data-root")
    e.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    e.add_argument("--no-progress", action="store_true",
                   help="no progress bar over the test points")
    return p


def main(argv=None) -> int:
    """Entry point of the ``pyrovamp`` command. Returns the exit status (2: bad input, 1: a run
    that failed, e.g. a non-finite loss)."""
    from pyrovamp.errors import NonFiniteLossError

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        with _quiet():
            if args.command == "train":
                return _train(args, argv)
            if args.command == "compare":
                return _compare(args)
            if args.command == "reproduce":
                return _reproduce(args)
            return _evaluate(args)
    except NonFiniteLossError as e:
        print(f"pyrovamp {args.command}: error: {e}", file=sys.stderr)
        return 1
    except (UsageError, ValueError, FileNotFoundError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"pyrovamp {args.command}: error: {msg}", file=sys.stderr)
        return 2


@contextlib.contextmanager
def _quiet():
    """Known, harmless library warnings are not shown in the commands' output (never errors)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
        warnings.filterwarnings("ignore", message=".*arviz.*refactor.*")
        warnings.filterwarnings("ignore", message=".*torch.jit.trace.*is deprecated.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        yield


def _check_device(device):
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda was asked for but torch.cuda.is_available() is False")


def _rank(devices: int = 1) -> int:
    """This process's global rank under Lightning's or torchrun's launcher (0 when alone)."""
    if os.environ.get("RANK"):
        return int(os.environ["RANK"])
    return int(os.environ.get("NODE_RANK", 0)) * devices + int(os.environ.get("LOCAL_RANK", 0))


# the --test-every learning curve's defaults: test images spread over the test set, and IS samples
TEST_POINTS = 1000
TEST_NUM_SAMPLES = 1000

# settings that a resumed run may change; every other one must equal the run's config.json
RESUME_MAY_CHANGE = ("epochs", "max_minutes", "num_samples", "device", "accelerator", "devices",
                     "num_nodes", "strategy", "logger", "data_root", "no_progress", "test_every",
                     "test_points", "test_num_samples")


def _explicit_options(argv) -> dict:
    """The ``train`` options given on the command line (not the defaults)."""
    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    for action in sub._actions:
        action.default = argparse.SUPPRESS
    return vars(p.parse_args(argv))


def _train_config(cfg: dict, progress: bool):
    from pyrovamp.training.trainer import TrainConfig

    accelerator = cfg.get("accelerator") or ("gpu" if cfg.get("device") == "cuda" else "cpu")
    return TrainConfig(epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                       optimizer=cfg["optimizer"], loss=cfg["loss"],
                       num_particles=cfg.get("num_particles") or 1,
                       warmup_epochs=cfg["warmup_epochs"], patience=cfg["patience"],
                       seed=cfg["seed"], max_minutes=cfg.get("max_minutes"),
                       val_num_samples=cfg["val_num_samples"], ema_decay=cfg["ema_decay"],
                       lr_decay=cfg.get("lr_decay"), lr_patience=cfg.get("lr_patience") or 10,
                       val_bound=cfg.get("val_bound") or "elbo",
                       accelerator=accelerator, devices=cfg.get("devices") or 1,
                       num_nodes=cfg.get("num_nodes") or 1, strategy=cfg.get("strategy") or "auto",
                       precision=str(cfg.get("precision") or "32"),
                       logger=cfg.get("logger") or "csv", progress=progress,
                       test_every=cfg.get("test_every"),
                       test_num_samples=cfg.get("test_num_samples") or TEST_NUM_SAMPLES)


def _train(args, argv) -> int:
    import torch
    import pyro

    from pyrovamp.data.datasets import load_dataset, spread_subset
    from pyrovamp.workflow.runs import (CONV_MODELS, atomic_write_text, build_model, make_folder, resolve_config,
                       saved_config, write_history_csv)
    from pyrovamp.training.trainer import CHECKPOINT, MODEL, fit, load_model_weights, read_checkpoint

    rank = _rank(args.devices)
    # --- every check before any work ---------------------------------------------------------
    _check_device(args.device)
    if args.data_root is not None and not Path(args.data_root).is_dir():
        raise UsageError(f"--data-root {args.data_root} is not a folder")
    out = Path(args.out) if args.out else Path("runs") / (
        f"{args.dataset}_{args.prior}_{time.strftime('%Y%m%d-%H%M%S')}")
    if args.resume:
        if args.out is None:
            raise UsageError("--resume needs --out RUN_DIR")
        for f in ("config.json", CHECKPOINT):
            if not (out / f).is_file():
                raise UsageError(f"cannot resume: {out / f} is missing")
        read_checkpoint(out / CHECKPOINT)  # a truncated or corrupt file: one line, before any work
        try:
            cfg = resolve_config(saved_config(json.loads((out / "config.json").read_text())))
        except json.JSONDecodeError as e:
            raise UsageError(f"cannot resume: {out / 'config.json'} is not valid JSON ({e.msg})") from None
        for k, v in _explicit_options(argv).items():
            if k in ("command", "resume", "out"):
                continue
            if k in RESUME_MAY_CHANGE:
                cfg[k] = v
            elif k == "init_from" and cfg.get(k) == str(Path(v).resolve()):
                continue  # the same run folder, named relatively
            elif cfg.get(k) != v and not (k == "ema_decay" and v == 0 and cfg.get(k) is None):
                raise UsageError(f"cannot resume {out}: --{k.replace('_', '-')} {v} differs from the "
                                 f"run's {k}={cfg.get(k)!r} (config.json); only "
                                 f"{', '.join('--' + c.replace('_', '-') for c in RESUME_MAY_CHANGE)} may change")
        if "max_minutes" not in _explicit_options(argv):
            cfg["max_minutes"] = None  # each piece has its own time budget
    else:
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} exists and is not a folder")
        if rank == 0 and out.is_dir() and any(out.iterdir()):
            raise UsageError(f"--out {out} already exists and is not empty; use --resume to "
                             "continue that run or choose another folder")
        if args.warmup_epochs is not None and args.warmup_epochs < 0:
            raise UsageError(f"--warmup-epochs must be >= 0, got {args.warmup_epochs}")
        if args.dropout and args.model in CONV_MODELS:
            raise UsageError(f"--dropout applies to --model vae and hvae, not --model {args.model}")
        if args.lr_decay is not None and not 0.0 < args.lr_decay < 1.0:
            raise UsageError(f"--lr-decay must be in (0, 1), got {args.lr_decay}")
        if args.lr_patience is not None and args.lr_decay is None:
            raise UsageError("--lr-patience applies with --lr-decay F")
        if args.flow is not None and args.prior != "flow":
            raise UsageError(f"--flow applies to --prior flow, not --prior {args.prior}")
        if args.pseudo_input_parameterization is not None and args.prior != "vampprior":
            raise UsageError("--pseudo-input-parameterization applies to --prior vampprior, not "
                             f"--prior {args.prior}")
        cfg = resolve_config({k: v for k, v in vars(args).items()
                              if k not in ("command", "resume", "out", "no_progress")})
        if cfg["prior"] == "flow":
            cfg["flow"] = cfg.get("flow") or "realnvp"
        if cfg["ema_decay"] == 0:
            cfg["ema_decay"] = None
        if cfg["loss"] == "iwae" and cfg["num_particles"] < 2:
            raise UsageError(f"--loss iwae needs --num-particles K >= 2, got {cfg['num_particles']}")
        if cfg.get("init_from") is not None:
            init = Path(cfg["init_from"])
            if not (init / MODEL).is_file():
                raise UsageError(f"--init-from {init}: no {MODEL} there (a finished run folder)")
            cfg["init_from"] = str(init.resolve())
        if cfg["val_bound"] == "iwae" and cfg["val_num_samples"] < 2:
            raise UsageError(f"--val-bound iwae needs --val-num-samples K >= 2 (the {cfg['preset']} "
                             f"preset has {cfg['val_num_samples']})")
    tcfg = _train_config(cfg, progress=not args.no_progress and rank == 0)
    tcfg.validate()
    dataset = _limit(load_dataset(cfg["dataset"], cfg.get("data_root")), cfg.get("max_points"))
    pyro.set_rng_seed(cfg["seed"])
    model = build_model(cfg, dataset)  # raises ValueError on a bad combination, e.g. non-square K
    if not args.resume and cfg.get("init_from") is not None:
        from pyrovamp.errors import CheckpointError

        try:  # before --out is made
            load_model_weights(model, Path(cfg["init_from"]) / MODEL)
        except CheckpointError as e:  # names the keys where the two models differ
            raise UsageError(f"--init-from: {e} (the run's model differs from this one)") from None

    # --- work ------------------------------------------------------------------------------------
    if rank == 0:
        make_folder(out)  # one line naming --out where it cannot be created
    if not args.resume:
        if rank == 0:
            atomic_write_text(out / "config.json", json.dumps(cfg, indent=2) + "\n")
        if cfg.get("pseudo_inputs") == "data" and hasattr(model.prior, "init_from_data") \
                and cfg.get("init_from") is None:
            idx = torch.randperm(dataset.train.shape[0])[: model.prior.num_components]
            model.prior.init_from_data(dataset.train[idx])
    if rank == 0:
        print(f"training {cfg['model']} with the {cfg['prior']} prior on {cfg['dataset']} -> {out}",
              file=sys.stderr)
    test_data = spread_subset(dataset.test, cfg.get("test_points") or TEST_POINTS) \
        if cfg.get("test_every") else None
    validation = dataset.validation if not cfg.get("val_points") else \
        spread_subset(dataset.validation, cfg["val_points"])
    result = fit(model, dataset.train_sampler or dataset.train, validation, tcfg,
                 checkpoint_dir=out, resume=args.resume, test_data=test_data)
    ok = False
    try:
        if rank == 0:
            write_history_csv(result.history, out / "history.csv")
            if not result.finished:  # the learning curve so far (a finished run draws it below)
                import matplotlib

                matplotlib.use("Agg")
                from pyrovamp.workflow.plots import plot_history
                from pyrovamp.workflow.runs import save_figure

                save_figure(plot_history(result.history), out / "loss.png")
        if result.finished:
            _finish_run(model, dataset, cfg, tcfg, result, out)
        elif rank == 0:
            print(f"stopped after {result.epochs} of {cfg['epochs']} epochs (--max-minutes); the test "
                  f"evaluation runs when the run finishes: continue with "
                  f"pyrovamp train --resume --out {out}", file=sys.stderr)
        ok = True
    finally:
        _end_processes(ok)
    return 0


def _end_processes(ok: bool) -> None:
    """After data-parallel training: wait for every process (when all went well) and end the
    process group, so gloo's and NCCL's threads stop before the interpreter does."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if ok:
            dist.barrier()
        dist.destroy_process_group()


def _finish_run(model, dataset, cfg, tcfg, result, out):
    """The test metrics and figures of a finished run (sharded over the processes of a
    data-parallel run)."""
    import torch

    trainer = result.trainer
    device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
    meta = {"epochs_trained": result.epochs, "train_seconds": result.train_seconds,
            "finished": result.finished, "stopped_early": result.stopped_early,
            "best_val_elbo": result.best_val_elbo, "val_bound": tcfg.val_bound,
            "parameters": result.source,
            "processes": trainer.world_size if trainer is not None else 1,
            "precision": str(tcfg.precision)}
    _write_metrics_and_figures(model, dataset, cfg, meta, result.history, out, cfg["num_samples"],
                               device, trainer=trainer if trainer is not None and trainer.world_size > 1 else None,
                               progress=tcfg.progress)


def _limit(dataset, n):
    """The data set cut to its first ``n`` training, validation and test points (``None``: all)."""
    if n is None:
        return dataset
    import dataclasses

    sampler = dataset.train_sampler
    return dataclasses.replace(
        dataset, train=dataset.train[:n], validation=dataset.validation[:n], test=dataset.test[:n],
        train_sampler=(lambda generator=None: sampler(generator=generator)[:n]) if sampler else None)


def _write_metrics_and_figures(model, dataset, cfg, meta, history, out, num_samples, device,
                               trainer=None, progress=False):
    """Test metrics (sharded over the processes of ``trainer`` when there are several) into
    ``metrics.json`` and the figures, by the process of rank 0; ``progress``: a progress bar
    over the test points for the importance sampling."""
    import matplotlib

    matplotlib.use("Agg")
    from pyrovamp.workflow.runs import atomic_write_text, evaluate_run, save_figure

    t0 = time.perf_counter()
    model = model.to(device)
    metrics = evaluate_run(model, dataset, num_samples, device=device, trainer=trainer,
                           progress=progress)
    if trainer is not None and not trainer.is_global_zero:
        return
    from pyrovamp.workflow.plots import (plot_active_units, plot_history, plot_latent, plot_pseudo_inputs,
                        plot_reconstructions, plot_samples)

    metrics.update(eval_seconds=time.perf_counter() - t0, **meta,
                   dataset=cfg["dataset"], model=cfg.get("model", "vae"), prior=cfg["prior"],
                   latent_dim=cfg["latent_dim"], device=str(device))
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"non-finite test metrics {bad}: metrics.json not written")
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    x = dataset.test.to(device)
    save_figure(plot_latent(model, x), out / "latent.png")
    save_figure(plot_samples(model), out / "samples.png")
    save_figure(plot_reconstructions(model, x), out / "reconstructions.png")
    save_figure(plot_history(history), out / "loss.png")
    if x.shape[0] > 1:
        save_figure(plot_active_units(model, x), out / "active_units.png")
    if hasattr(model.prior, "pseudo_inputs"):
        save_figure(plot_pseudo_inputs(model), out / "pseudo_inputs.png")
    print(f"test log-likelihood {metrics['test_log_likelihood']:.2f} nats "
          f"(S={num_samples}), test ELBO {metrics['test_elbo']:.2f}, "
          f"{meta['epochs_trained']} epochs in {meta['train_seconds']:.0f} s -> {out}")


def _compare(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from pyrovamp.workflow.runs import atomic_write_text, make_folder, save_figure
    from pyrovamp.workflow.comparison import compare, khat_threshold, plot_compare, plot_pareto_k, to_inference_data

    _check_device(args.device)
    runs = [Path(r) for r in args.run_dirs]
    for r in runs:
        for f in ("config.json", "model.pt"):
            if not (r / f).is_file():
                raise UsageError(f"{r} is not a run folder: {r / f} is missing")
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise UsageError(f"run folders must have distinct names, got {names}")
    if len(runs) < 2:
        raise UsageError("compare needs at least two run folders")
    out = make_folder(args.out)
    idatas = {}
    for r in runs:
        t0 = time.perf_counter()
        idatas[r.name] = to_inference_data(r, num_samples=args.num_samples, device=args.device,
                                           keep_log_weights=False, recompute=args.recompute)
        how = ("reused its stored evaluation" if idatas[r.name].attrs.get("from_cache")
               else f"evaluated in {time.perf_counter() - t0:.1f} s")
        print(f"{r.name}: {how} (S={args.num_samples})", file=sys.stderr)
    table = compare(idatas)
    atomic_write_text(out / "comparison.csv", table.to_csv())
    save_figure(plot_compare(table), out / "compare.png")
    save_figure(plot_pareto_k(idatas), out / "pareto_k.png")
    cols = ["rank", "mean_log_likelihood", "mean_log_likelihood_diff", "mean_dse", "mean_elbo",
            "share_k_above_threshold"]
    print(table[cols].to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"k-hat threshold min(1 - 1/log10 S, 0.7) = {khat_threshold(args.num_samples):.2f} "
          f"for S={args.num_samples} (Vehtari et al. 2024)")
    print(f"-> {out}")
    return 0


def _reproduce(args) -> int:
    from pyrovamp.data.datasets import DATASETS
    from pyrovamp.workflow.reproduce import reproduce_table1

    roots = {}
    for item in args.data_root or ():
        name, sep, folder = item.partition("=")
        if sep and name in DATASETS:
            roots[name] = folder
        else:
            roots[None] = item
    reproduce_table1(args.out, args.datasets, args.models, args.priors,
                     max_minutes=args.max_minutes, accelerator=args.accelerator,
                     devices=args.devices, data_roots=roots, max_points=args.max_points,
                     num_samples=args.num_samples, epochs=args.epochs,
                     progress=not args.no_progress)
    return 0


def _evaluate(args) -> int:
    from pyrovamp.workflow.runs import load_run

    _check_device(args.device)
    run = Path(args.run_dir)
    if args.data_root is not None and not Path(args.data_root).is_dir():
        raise UsageError(f"--data-root {args.data_root} is not a folder")
    if args.num_samples is not None and args.method not in (None, "is"):
        raise UsageError("--num-samples applies to --method is")
    if (args.num_steps or args.num_chains) and args.method != "ais" and args.bdmc is None:
        raise UsageError("--num-steps and --num-chains apply to --method ais and --bdmc")
    if args.refine_guide is None and (args.refine_num_samples or args.refine_lr
                                      or args.refine_batch_size or args.refine_on):
        raise UsageError("--refine-on, --refine-num-samples, --refine-lr and --refine-batch-size "
                         "need --refine-guide")
    if args.refine_guide is not None and args.method is not None:
        raise UsageError(f"--refine-guide is an estimate of its own (IS with the refined guide); "
                         f"run --method {args.method} separately")
    if args.refine_guide is not None and run.is_dir() and "test_log_likelihood" not in (
            json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file()
            else {}):
        raise UsageError(f"{run} has no test evaluation yet (metrics.json without "
                         f"test_log_likelihood): run pyrovamp evaluate {run} first, then "
                         "--refine-guide to set the refined estimate beside it")
    model, cfg, dataset, meta = load_run(run, args.device, args.data_root)
    dataset = _limit(dataset, cfg.get("max_points"))
    num_samples = args.num_samples or cfg.get("num_samples", 5000)
    if args.refine_guide is not None:
        from pyrovamp.workflow.runs import evaluate_refined

        evaluate_refined(model, dataset, run, epochs=args.refine_guide,
                         refine_num_samples=args.refine_num_samples or 10,
                         lr=args.refine_lr or 1e-4, batch_size=args.refine_batch_size or 100,
                         num_samples=num_samples, device=args.device,
                         refine_on=args.refine_on or "train", trained_epochs=meta.get("epochs"),
                         progress=not args.no_progress)
        if args.bdmc is None:
            return 0
    if args.method is not None or args.bdmc is not None:
        from pyrovamp.workflow.runs import evaluate_estimators

        evaluate_estimators(model, dataset.test.to(args.device), run, args.method, args.bdmc,
                            num_samples=num_samples, num_chains=args.num_chains,
                            num_steps=args.num_steps, epochs=meta.get("epochs"),
                            progress=not args.no_progress)
        return 0
    from pyrovamp.workflow.runs import merge_metrics

    path = run / "metrics.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    info = {"epochs_trained": meta.get("epochs"), "train_seconds": meta.get("train_seconds"),
            "finished": meta.get("finished"), "stopped_early": meta.get("stopped_early"),
            "best_val_elbo": meta.get("best_val_elbo"), "val_bound": cfg.get("val_bound") or "elbo",
            "parameters": meta.get("source")}
    _write_metrics_and_figures(model, dataset, cfg, info, meta.get("history", []), run,
                               num_samples, args.device, progress=not args.no_progress)
    merge_metrics(path, {**old, **json.loads(path.read_text())})  # keep e.g. the AIS keys
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
