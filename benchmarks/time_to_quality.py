"""Time to quality: the test log-likelihood against minutes of training on this machine.

Trains one static MNIST run (paper's model; ``--preset paper`` or ``fast``) with ``pyrovamp
train`` in pieces that end at the given marks of training time (``--max-minutes``; a piece ends
at the first epoch end after its mark, so a mark's minutes are the run's own recorded training
time), and after each piece estimates the test log-likelihood of the run's parameters (the ones
``model.pt`` holds: what a user who stopped there would get) by importance sampling with
``--num-samples`` (default 5000) on ``--test-points`` test images spread evenly over the test
set (every k-th image; default: all 10,000), seeded, in float32. Not the first N: static MNIST's
test file is not in random order -- its first 1000 images score about 10 nats lower than the
whole set (-96.9 against -87.1 with one model), its middle ones higher. Training time counts
training and validation epochs only; the
estimates come on top and are not counted.

Run it again with the same ``--out`` and later marks to extend a curve (the run resumes); a
run folder trained by ``pyrovamp train`` or ``pyrovamp reproduce table1`` with the same settings
can be extended the same way. Every mark is kept in ``OUT/time_to_quality.json``.

Usage (one thread, so that two curves measured one after the other are comparable):

    OMP_NUM_THREADS=1 python benchmarks/time_to_quality.py --out DIR --preset fast \
        --minutes 10 20 30 [--model vae] [--prior vampprior] [--test-points 1000]

Draw the curves of finished measurements (validation ELBO of every epoch as a line, the test
log-likelihood at each mark as dots, the paper's value dashed) without training:

    python benchmarks/time_to_quality.py --figure docs/time_to_quality.png --runs DIR DIR...

The last line printed is a JSON object: the settings and the curve (one entry per mark:
``minutes``, ``epochs``, ``test_log_likelihood`` with its standard error, ``test_points``,
``num_samples``, ``eval_seconds``; ``source: metrics.json`` where a finished run's own test
evaluation by ``pyrovamp train`` -- the same test points and S -- is reused) and ``minutes_to``
-- for ``--target`` (default: the paper's value for the model and prior), the first mark whose
estimate reached it, or null.
"""

import argparse
import json
import os
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
PAPER = {
    ("vae", "standard"): -88.56,
    ("vae", "vampprior"): -85.57,
    ("hvae", "standard"): -86.05,
    ("hvae", "vampprior"): -83.19,
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="the run folder (created or continued)")
    ap.add_argument("--figure", help="draw the curves of --runs into this file (no training)")
    ap.add_argument("--runs", nargs="+", default=[], help="run folders to draw (--figure)")
    ap.add_argument("--preset", default="paper", choices=("paper", "fast"))
    ap.add_argument("--model", default="vae", choices=("vae", "hvae"))
    ap.add_argument("--prior", default="vampprior", choices=("standard", "vampprior"))
    ap.add_argument(
        "--minutes", type=float, nargs="+", help="marks of training time, minutes (increasing)"
    )
    ap.add_argument(
        "--test-points",
        type=int,
        help="N test images spread evenly over the test set (default: all)",
    )
    ap.add_argument("--num-samples", type=int, default=5000)
    ap.add_argument("--target", type=float, help="nats per image (default: the paper's value)")
    ap.add_argument(
        "--data-root", default=str(HERE.parent.parent / "shared" / "data" / "static_mnist")
    )
    ap.add_argument(
        "--train-arg",
        action="append",
        default=[],
        help="one more `pyrovamp train` option (repeat), e.g. --train-arg=--precision=32; "
        "also passed when a run is resumed, where it must be one that a resumed "
        "run may change (e.g. --train-arg=--test-every=25) or equal the run's",
    )
    args = ap.parse_args(argv)
    if args.figure:
        if not args.runs:
            ap.error("--figure needs --runs DIR...")
        return draw(args.runs, args.figure, args.target)
    if not args.out or not args.minutes:
        ap.error("--out and --minutes are required (or --figure with --runs)")
    marks = list(args.minutes)
    if any(m <= 0 for m in marks) or marks != sorted(marks):
        ap.error("--minutes must be positive and increasing")
    if args.test_points is not None and args.test_points < 1:
        ap.error("--test-points must be >= 1")
    if not (pathlib.Path(args.data_root) / "binarized_mnist_test.amat").is_file():
        ap.error(
            f"--data-root {args.data_root} holds no static MNIST files "
            "(see ../shared/data/README.md)"
        )

    import torch

    from pyrovamp import log_likelihood
    from pyrovamp.cli import main as pyrovamp
    from pyrovamp.data import spread_subset
    from pyrovamp.training.checkpoint import CHECKPOINT, MODEL, read_checkpoint
    from pyrovamp.workflow.runs import atomic_write_text, load_run, saved_config

    out = pathlib.Path(args.out)
    record = out / "time_to_quality.json"
    curve = json.loads(record.read_text())["curve"] if record.is_file() else []
    target = args.target if args.target is not None else PAPER[(args.model, args.prior)]

    def trained_minutes(name=MODEL):
        """Training minutes and epochs of ``model.pt`` (the parameters scored) or of
        ``checkpoint.ckpt`` (where training resumes: later than model.pt after a killed piece)."""
        if not (out / name).is_file():
            return 0.0, 0
        ckpt = read_checkpoint(out / name, map_location="cpu")
        meta = ckpt["pyrovamp"]
        epochs = meta.get("epochs") if name == MODEL else ckpt.get("epoch", -1) + 1
        return float(meta.get("train_seconds") or 0.0) / 60.0, int(epochs or 0)

    for mark in marks:
        done = max(trained_minutes()[0], trained_minutes(CHECKPOINT)[0])
        if any(abs(p["mark"] - mark) < 1e-9 for p in curve):
            continue
        if done < mark:
            if (out / CHECKPOINT).is_file():
                argv = ["train", "--resume", "--out", str(out), *args.train_arg]
            else:
                argv = [
                    "train",
                    "--dataset",
                    "static_mnist",
                    "--data-root",
                    args.data_root,
                    "--model",
                    args.model,
                    "--prior",
                    args.prior,
                    "--preset",
                    args.preset,
                    "--out",
                    str(out),
                    *args.train_arg,
                ]
            argv += ["--max-minutes", repr(mark - done), "--no-progress"]
            print(f"[{time.strftime('%H:%M:%S')}] pyrovamp {' '.join(argv)}", flush=True)
            if pyrovamp(argv) != 0:
                sys.exit(f"training failed at the {mark}-minute mark")
        minutes, epochs = trained_minutes()
        model, cfg, dataset, meta = load_run(out)
        # spread evenly over the test file (its order is not random)
        x = spread_subset(dataset.test, args.test_points or dataset.test.shape[0])
        point = {"mark": mark, "minutes": round(minutes, 2), "epochs": epochs}
        done_metrics = (
            json.loads((out / "metrics.json").read_text())
            if meta.get("finished") and (out / "metrics.json").is_file()
            else {}
        )
        if (
            done_metrics.get("num_test_points"),
            done_metrics.get("num_samples"),
            done_metrics.get("epochs_trained"),
        ) == (x.shape[0], args.num_samples, epochs):
            # a finished run's own test evaluation (pyrovamp train, the same estimate of the
            # same parameters with its own seed): not computed twice
            point.update(
                test_log_likelihood=round(done_metrics["test_log_likelihood"], 3),
                test_log_likelihood_se=round(done_metrics["test_log_likelihood_se"], 3),
                eval_seconds=done_metrics.get("eval_seconds"),
                source="metrics.json",
            )
        else:
            t0 = time.perf_counter()
            ll = log_likelihood(model, x, args.num_samples, seed=0)
            point.update(
                test_log_likelihood=round(float(ll.mean()), 3),
                test_log_likelihood_se=round(float(ll.std() / len(ll) ** 0.5), 3),
                eval_seconds=round(time.perf_counter() - t0, 1),
            )
        point.update(
            test_points=int(x.shape[0]),
            num_samples=args.num_samples,
            finished=bool(meta.get("finished")),
        )
        curve.append(point)
        print(f"[{time.strftime('%H:%M:%S')}] {point}", flush=True)
        atomic_write_text(record, json.dumps({"curve": curve}, indent=2) + "\n")
        if meta.get("finished"):
            break  # early stopping fired: later marks add nothing
    cfg = saved_config(json.loads((out / "config.json").read_text()))
    reached = [p for p in curve if p["test_log_likelihood"] >= target]
    res = {
        "run": str(out),
        "model": cfg["model"],
        "prior": cfg["prior"],
        "preset": cfg["preset"],
        "precision": cfg.get("precision"),
        "optimizer": cfg["optimizer"],
        "weight_init": cfg["weight_init"],
        "pseudo_input_parameterization": cfg["pseudo_input_parameterization"],
        "batch_size": cfg["batch_size"],
        "lr": cfg["lr"],
        "warmup_epochs": cfg["warmup_epochs"],
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "target": target,
        "minutes_to": reached[0]["minutes"] if reached else None,
        "curve": curve,
    }
    print(json.dumps(res))


def draw(runs, path, target=None):
    """Validation ELBO (line, every epoch) and test log-likelihood (dots: the marks, hollow on a
    subset of the test set, filled on the whole of it; plus the run's ``metrics.json`` estimate --
    its final test evaluation or ``pyrovamp evaluate --method is`` -- where that is not a mark)
    against minutes of training, one colour per run folder."""
    import csv

    from matplotlib.figure import Figure

    from pyrovamp.workflow.runs import PRESETS, saved_config

    fig = Figure(figsize=(7.0, 4.6))
    ax = fig.subplots()
    summary = {}
    for i, run in enumerate(map(pathlib.Path, runs)):
        cfg = saved_config(json.loads((run / "config.json").read_text()))
        # named by its settings (a preset's meaning may have changed since the run was made)
        keys = (
            "precision",
            "batch_size",
            "lr",
            "warmup_epochs",
            "ema_decay",
            "optimizer",
            "weight_init",
            "pseudo_input_parameterization",
        )
        now = [
            name
            for name, p in PRESETS.items()
            if name != "book" and all((cfg.get(k) or None) == (p.get(k) or None) for k in keys)
        ]
        label = (
            f"{cfg['model']} + {cfg['prior']} ({cfg.get('precision') or '32'}, batch "
            f"{cfg['batch_size']}, lr {cfg['lr']:g}, warm-up {cfg['warmup_epochs']}"
            + (f", EMA {cfg['ema_decay']:g}" if cfg.get("ema_decay") else "")
            + (
                f", {cfg['optimizer']}, {cfg['weight_init']} init"
                + (
                    f", {cfg['pseudo_input_parameterization']} pseudo-inputs"
                    if cfg["prior"] == "vampprior"
                    else ""
                )
            )
            + ")"
            + (f" = --preset {now[0]}" if now else "")
        )
        with open(run / "history.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        minutes, t = [], 0.0
        for r in rows:
            t += float(r["seconds"]) / 60.0
            minutes.append(t)
        ax.plot(
            minutes,
            [float(r["val_elbo"]) for r in rows],
            color=f"C{i}",
            lw=1,
            alpha=0.6,
            label=label + ": validation ELBO",
        )
        record = run / "time_to_quality.json"
        curve = json.loads(record.read_text())["curve"] if record.is_file() else []
        m = (
            json.loads((run / "metrics.json").read_text())
            if (run / "metrics.json").is_file()
            else {}
        )
        m_epochs = m.get("epochs_trained") or m.get("is_epochs")  # final, or `evaluate --method is`
        if (
            m.get("test_log_likelihood") is not None
            and m_epochs
            and m_epochs <= len(rows)
            and not any(
                (p["epochs"], p["test_points"]) == (m_epochs, m["num_test_points"]) for p in curve
            )
        ):
            curve = curve + [
                {
                    "minutes": minutes[m_epochs - 1],
                    "epochs": m_epochs,
                    "test_log_likelihood": m["test_log_likelihood"],
                    "test_points": m["num_test_points"],
                    "num_samples": m["num_samples"],
                }
            ]
        for n_points in sorted({p["test_points"] for p in curve}):  # filled: the whole test set
            pts = [p for p in curve if p["test_points"] == n_points]
            whole = n_points == max(p["test_points"] for p in curve) and n_points >= 10000
            ax.plot(
                [p["minutes"] for p in pts],
                [p["test_log_likelihood"] for p in pts],
                "o",
                color=f"C{i}",
                markerfacecolor=None if whole else "white",
                label=f"test log-likelihood (IS, S={pts[0]['num_samples']}, "
                f"{n_points} test images)",
            )
        summary[str(run)] = {"epochs": len(rows), "minutes": round(t, 2), "curve": curve}
        if target is None:
            target = PAPER.get((cfg["model"], cfg["prior"]))
    if target is not None:
        ax.axhline(target, color="0.3", ls="--", lw=1, label=f"paper: {target}")
    ax.set_ylim(
        target - 10 if target is not None else None, target + 2 if target is not None else None
    )
    ax.set_xlabel("minutes of training (one thread of a 2-core CPU)")
    ax.set_ylabel("nats per image")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
