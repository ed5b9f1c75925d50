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
    from pyrovamp.infer.diagnostics import khat_against_truth
    from pyrovamp.workflow.plots import plot_khat_vs_error

    out, panels = {}, {}
    for run in map(Path, args.runs):
        is_ = np.load(run / "log_likelihood_is.npz")
        exact = np.load(run / "log_likelihood_exact.npz")["log_likelihood"]
        cfg = json.loads((run / "metrics.json").read_text())
        r = khat_against_truth(
            is_["log_likelihood"],
            is_["pareto_k"],
            exact,
            int(cfg.get("num_samples", 5000)),
            args.tolerance,
        )
        out[run.name] = {
            "is_minus_exact_mean": round(r["mean_error"], 4),
            "is_minus_exact_worst": round(r["worst_error"], 3),
            "points_off": r["points_off"],
            "points": r["points"],
            "flagged": r["flagged"],
            "khat_threshold": round(r["khat_threshold"], 3),
            "precision": round(r["precision"], 3),
            "recall": round(r["recall"], 3),
        }
        print(run.name, out[run.name])
        panels[run.name.replace("digits_", "")] = {**r, "pareto_k": is_["pareto_k"]}
    if args.figure:
        plot_khat_vs_error(panels, args.tolerance).savefig(args.figure, dpi=110)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
