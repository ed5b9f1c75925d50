"""How well Pareto k-hat identifies the test points whose importance-sampling estimate is off,
checked against the exact log-likelihood (quadrature; models with <= 2 latent dimensions).

Reads the per-point arrays that ``pyrovamp evaluate RUN --method is`` and ``--method exact``
write into each run folder (``log_likelihood_is.npz``, ``log_likelihood_exact.npz``) and reports,
per run: the mean and worst IS error (IS minus exact, nats per data point), the number of points
more than ``--tolerance`` nats off, and the precision and recall of ``k-hat > threshold`` as a
detector of those points; with ``--figure`` a scatter plot of IS error against k-hat.

Usage: python benchmarks/khat_vs_exact.py RUN_DIR... [--tolerance 0.5] [--figure docs/khat.png]
The last line printed is a JSON object with one entry per run.
"""

import argparse
import json
from pathlib import Path

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--tolerance", type=float, default=0.5)
    ap.add_argument("--figure")
    args = ap.parse_args()
    from pyrovamp.diagnostics import khat_threshold

    out, panels = {}, []
    for run in map(Path, args.runs):
        is_ = np.load(run / "log_likelihood_is.npz")
        exact = np.load(run / "log_likelihood_exact.npz")["log_likelihood"]
        cfg = json.loads((run / "metrics.json").read_text())
        thr = khat_threshold(int(cfg.get("num_samples", 5000)))
        err = is_["log_likelihood"] - exact  # <= 0 up to noise: IS is a stochastic lower bound
        bad, flag = err < -args.tolerance, is_["pareto_k"] > thr
        tp = int((bad & flag).sum())
        out[run.name] = {
            "is_minus_exact_mean": round(float(err.mean()), 4),
            "is_minus_exact_worst": round(float(err.min()), 3),
            "points_off": int(bad.sum()), "points": int(err.size), "flagged": int(flag.sum()),
            "khat_threshold": round(thr, 3),
            "precision": round(tp / max(1, int(flag.sum())), 3),
            "recall": round(tp / max(1, int(bad.sum())), 3)}
        print(run.name, out[run.name])
        panels.append((run.name, is_["pareto_k"], err, thr))
    if args.figure:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(3.2 * len(panels), 3.0))
        axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
        for ax, (name, k, err, thr) in zip(axes, panels):
            ax.scatter(k, -err, s=4, alpha=0.5)
            ax.axvline(thr, color="C3", lw=1)
            ax.axhline(args.tolerance, color="0.5", lw=1, ls="--")
            ax.set_yscale("symlog", linthresh=0.1)
            ax.set_title(name.replace("digits_", ""), fontsize=9)
            ax.set_xlabel("Pareto k-hat")
        axes[0].set_ylabel("exact - IS (nats)")
        fig.tight_layout()
        fig.savefig(args.figure, dpi=110)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
