"""Command line: ``pyrovamp train`` and ``pyrovamp evaluate``.

``pyrovamp train`` trains a VAE with a chosen prior and writes a run folder; its defaults on
Digits are the book's setup (L=2, K=16, 256 hidden units, Adamax 1e-3, batch 64, early stopping
with patience 20), on static MNIST the VampPrior paper's. ``pyrovamp evaluate RUN_DIR``
recomputes the test metrics from the checkpoint. Bad arguments give a one-line error and exit
status 2, before any work and without touching an existing run folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
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
        if not v > 0:
            raise argparse.ArgumentTypeError(
                f"{name} must be at least 1, got {v}" if kind is int else f"{name} must be positive, got {v}")
        return v
    return conv


def _positive_int(name):
    return _positive(name, int)


def _positive_float(name):
    return _positive(name, float)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pyrovamp``."""
    from .data import DATASETS
    from .priors import PRIORS
    from .inference import LOSSES, OPTIMIZERS

    p = _Parser(prog="pyrovamp", description="VAEs with learnable priors in Pyro.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a VAE and write a run folder")
    t.add_argument("--dataset", default="digits", choices=DATASETS)
    t.add_argument("--prior", default="vampprior", choices=PRIORS)
    t.add_argument("--model", choices=("vae", "hvae", "convhvae"),
                   help="one-level VAE (default), two-level HVAE or convolutional HVAE")
    t.add_argument("--preset", choices=("book", "paper"),
                   help="protocol defaults (Digits: book; other data sets: paper)")
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
    t.add_argument("--dropout", type=float, help="dropout in the decoder's hidden layers")
    t.add_argument("--learn-weights", action=argparse.BooleanOptionalAction, default=None,
                   help="learn the prior's mixing weights (default: the prior's own choice)")
    t.add_argument("--pseudo-inputs", choices=("random", "data"), default="random",
                   help="VampPrior pseudo-input initialisation")
    t.add_argument("--epochs", type=_positive_int("--epochs"))
    t.add_argument("--batch-size", type=_positive_int("--batch-size"))
    t.add_argument("--lr", type=_positive_float("--lr"))
    t.add_argument("--optimizer", choices=tuple(OPTIMIZERS))
    t.add_argument("--loss", choices=tuple(LOSSES), default="trace")
    t.add_argument("--warmup-epochs", type=int)
    t.add_argument("--patience", type=_positive_int("--patience"))
    t.add_argument("--ema-decay", type=float,
                   help="average the parameters with this decay per step (0 < d < 1; 0: off)")
    t.add_argument("--val-num-samples", type=_positive_int("--val-num-samples"),
                   help="ELBO samples per validation point for early stopping")
    t.add_argument("--num-samples", type=_positive_int("--num-samples"),
                   help="importance samples per test point (default 5000)")
    t.add_argument("--data-root", help="folder with the data set's canonical files")
    t.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--max-minutes", type=_positive_float("--max-minutes"),
                   help="stop cleanly with a checkpoint after this long; continue with --resume")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--out", help="run folder (default: runs/<dataset>_<prior>_<time>)")

    c = sub.add_parser("compare", help="compare runs on their common test set (ArviZ)")
    c.add_argument("run_dirs", nargs="+")
    c.add_argument("--out", required=True, help="folder for comparison.csv, compare.png, pareto_k.png")
    c.add_argument("--num-samples", type=_positive_int("--num-samples"), default=1000,
                   help="importance samples per test point (default 1000)")
    c.add_argument("--device", default="cpu", choices=("cpu", "cuda"))

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
    e.add_argument("--bdmc", type=_positive_int("--bdmc"), metavar="N",
                   help="also sandwich log p(x) by bidirectional Monte Carlo on N simulated points")
    e.add_argument("--data-root")
    e.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    return p


def main(argv=None) -> int:
    """Entry point of the ``pyrovamp`` command. Returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "compare":
            return _compare(args)
        return _evaluate(args)
    except (UsageError, ValueError, FileNotFoundError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"pyrovamp {args.command}: error: {msg}", file=sys.stderr)
        return 2


def _check_device(device):
    from .inference import check_device

    check_device(device)


def _train(args) -> int:
    import torch
    import pyro

    from .data import load_dataset
    from .inference import Trainer, TrainConfig
    from .runs import atomic_write_text, build_model, resolve_config, write_history_csv

    # --- every check before any work ---------------------------------------------------------
    _check_device(args.device)
    if args.data_root is not None and not Path(args.data_root).is_dir():
        raise UsageError(f"--data-root {args.data_root} is not a folder")
    out = Path(args.out) if args.out else Path("runs") / (
        f"{args.dataset}_{args.prior}_{time.strftime('%Y%m%d-%H%M%S')}")
    if args.resume:
        if args.out is None:
            raise UsageError("--resume needs --out RUN_DIR")
        for f in ("config.json", "checkpoint.pt"):
            if not (out / f).is_file():
                raise UsageError(f"cannot resume: {out / f} is missing")
        cfg = resolve_config(json.loads((out / "config.json").read_text()))
        if args.epochs is not None:
            cfg["epochs"] = args.epochs
        cfg.update(device=args.device, max_minutes=args.max_minutes)
        if args.num_samples is not None:
            cfg["num_samples"] = args.num_samples
    else:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UsageError(f"--out {out} already exists and is not empty; use --resume to "
                             "continue that run or choose another folder")
        if args.warmup_epochs is not None and args.warmup_epochs < 0:
            raise UsageError(f"--warmup-epochs must be >= 0, got {args.warmup_epochs}")
        cfg = resolve_config({k: v for k, v in vars(args).items()
                              if k not in ("command", "resume", "out", "no_progress")})
        if cfg["ema_decay"] == 0:
            cfg["ema_decay"] = None
    tcfg = TrainConfig(epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                       optimizer=cfg["optimizer"], loss=cfg["loss"],
                       warmup_epochs=cfg["warmup_epochs"], patience=cfg["patience"],
                       seed=cfg["seed"], device=cfg["device"], max_minutes=cfg.get("max_minutes"),
                       val_num_samples=cfg["val_num_samples"], ema_decay=cfg["ema_decay"],
                       progress=not args.no_progress)
    tcfg.validate()
    dataset = _limit(load_dataset(cfg["dataset"], cfg.get("data_root")), cfg.get("max_points"))
    pyro.set_rng_seed(cfg["seed"])
    model = build_model(cfg, dataset)  # raises ValueError on a bad combination, e.g. non-square K

    # --- work ------------------------------------------------------------------------------------
    out.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        atomic_write_text(out / "config.json", json.dumps(cfg, indent=2) + "\n")
        if cfg.get("pseudo_inputs") == "data" and hasattr(model.prior, "init_from_data"):
            idx = torch.randperm(dataset.train.shape[0])[: model.prior.num_components]
            model.prior.init_from_data(dataset.train[idx])
    trainer = Trainer(model, tcfg, checkpoint_path=out / "checkpoint.pt")
    print(f"training {cfg['model']} with the {cfg['prior']} prior on {cfg['dataset']} -> {out}", file=sys.stderr)
    history = trainer.fit(dataset.train_sampler or dataset.train, dataset.validation,
                          resume=args.resume)
    write_history_csv(history, out / "history.csv")
    _write_metrics_and_figures(model, dataset, cfg, trainer, out, cfg["num_samples"], cfg["device"])
    return 0


def _limit(dataset, n):
    """The data set cut to its first ``n`` training, validation and test points (``None``: all)."""
    if n is None:
        return dataset
    import dataclasses

    sampler = dataset.train_sampler
    return dataclasses.replace(
        dataset, train=dataset.train[:n], validation=dataset.validation[:n], test=dataset.test[:n],
        train_sampler=(lambda: sampler()[:n]) if sampler else None)


def _write_metrics_and_figures(model, dataset, cfg, trainer_or_ckpt, out, num_samples, device):
    import matplotlib

    matplotlib.use("Agg")
    from .plots import (plot_active_units, plot_history, plot_latent, plot_pseudo_inputs,
                        plot_reconstructions, plot_samples)
    from .runs import atomic_write_text, evaluate_run, save_figure

    if isinstance(trainer_or_ckpt, dict):
        ck = trainer_or_ckpt
        epochs, seconds, finished, history = ck["epoch"], ck["train_seconds"], ck["finished"], ck["history"]
        best = ck["best_val"]
    else:
        t = trainer_or_ckpt
        epochs, seconds, finished, history = t.epoch, t.train_seconds, t.finished, t.history
        best = t.best_val
    t0 = time.perf_counter()
    metrics = evaluate_run(model, dataset, num_samples, device=device)
    metrics.update(eval_seconds=time.perf_counter() - t0, epochs_trained=epochs,
                   train_seconds=seconds, finished=finished,
                   best_val_elbo=best if best != float("-inf") else None,
                   dataset=cfg["dataset"], model=cfg.get("model", "vae"), prior=cfg["prior"],
                   latent_dim=cfg["latent_dim"], device=str(device))
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
          f"{epochs} epochs in {seconds:.0f} s -> {out}")


def _compare(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from .runs import atomic_write_text, save_figure
    from .workflow import compare, plot_compare, plot_pareto_k, to_inference_data

    _check_device(args.device)
    runs = [Path(r) for r in args.run_dirs]
    for r in runs:
        for f in ("config.json", "checkpoint.pt"):
            if not (r / f).is_file():
                raise UsageError(f"{r} is not a run folder: {r / f} is missing")
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise UsageError(f"run folders must have distinct names, got {names}")
    if len(runs) < 2:
        raise UsageError("compare needs at least two run folders")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    idatas = {r.name: to_inference_data(r, num_samples=args.num_samples, device=args.device,
                                        keep_log_weights=False) for r in runs}
    table = compare(idatas)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "comparison.csv", table.to_csv())
    save_figure(plot_compare(table), out / "compare.png")
    save_figure(plot_pareto_k(idatas), out / "pareto_k.png")
    cols = ["rank", "mean_log_likelihood", "mean_log_likelihood_diff", "mean_dse", "mean_elbo",
            "share_k_above_0.7"]
    print(table[cols].to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"-> {out}")
    return 0


def _evaluate(args) -> int:
    from .runs import load_run

    _check_device(args.device)
    run = Path(args.run_dir)
    if args.data_root is not None and not Path(args.data_root).is_dir():
        raise UsageError(f"--data-root {args.data_root} is not a folder")
    if args.num_samples is not None and args.method not in (None, "is"):
        raise UsageError("--num-samples applies to --method is")
    if (args.num_steps or args.num_chains) and args.method != "ais" and args.bdmc is None:
        raise UsageError("--num-steps and --num-chains apply to --method ais and --bdmc")
    model, cfg, dataset, ckpt = load_run(run, args.device, args.data_root)
    dataset = _limit(dataset, cfg.get("max_points"))
    num_samples = args.num_samples or cfg.get("num_samples", 5000)
    if args.method is not None or args.bdmc is not None:
        from .runs import evaluate_estimators

        evaluate_estimators(model, dataset.test.to(args.device), run, args.method, args.bdmc,
                            num_samples=num_samples, num_chains=args.num_chains,
                            num_steps=args.num_steps)
        return 0
    from .runs import merge_metrics

    path = run / "metrics.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    _write_metrics_and_figures(model, dataset, cfg, ckpt, run, num_samples, args.device)
    merge_metrics(path, {**old, **json.loads(path.read_text())})  # keep e.g. the AIS keys
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
