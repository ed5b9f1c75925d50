"""Annealed importance sampling (AIS): its cost on the VampPrior paper's VAE, against a reference
revision and as a multiple of importance sampling (IS), and its accuracy against the exact
log-likelihood on Digits.

Speed: the trained zoo model ``static-mnist-vae-vampprior`` (``--model``) on the first ``--points``
real static MNIST test images (``--data-root``; the benchmark stops if the file is missing); AIS
with ``--num-chains`` chains and ``--num-steps`` temperatures (pyrovamp's defaults otherwise),
timed in ``--rounds`` rounds interleaved with the same AIS of ``--reference REV`` (this
repository's ``pyrovamp`` at git revision ``REV``, imported apart as in ``log_likelihood.py``) on
the same weights, seed and images; ``speedup_over_reference`` is the median of the per-round
ratios. The AIS cost is also given per data point as a multiple of IS with S=5000 on the same
images
(``ais_cost_over_is``, for the chains and temperatures asked: 8 x 500 is the zoo cards' AIS).

Accuracy (``--digits``): every Digits zoo model (two latent dimensions) -- AIS with pyrovamp's
default options on all Digits test images against the exact log-likelihood (quadrature):
the mean difference and the largest per-image difference, nats.

Usage: python benchmarks/ais.py [--threads 1] [--points 32] [--num-steps 100] [--reference REV]
       [--digits]
The last line printed is a JSON object with ``ais_seconds_per_point``, ``ais_cost_over_is`` and,
with ``--reference``, ``speedup_over_reference``; with ``--digits`` ``digits`` (per model).
"""

import argparse
import json
import pathlib
import statistics
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from log_likelihood import HERE, import_revision, reference_model  # noqa: E402

import pyrovamp  # noqa: E402
from pyrovamp import exact_log_likelihood, log_likelihood  # noqa: E402
from pyrovamp.data import read_amat  # noqa: E402


def digits_accuracy() -> dict:
    """AIS (defaults) against the exact value on all Digits test images, per zoo model."""
    x = pyrovamp.load_dataset("digits").test
    out = {}
    for name in [n for n in pyrovamp.PRETRAINED if n.startswith("digits-")]:
        model = pyrovamp.from_pretrained(name)
        t0 = time.perf_counter()
        ais = log_likelihood(model, x, method="ais", seed=0).double()
        seconds = time.perf_counter() - t0
        exact = exact_log_likelihood(model, x).double()
        diff = ais - exact
        out[name] = {
            "mean_ais_minus_exact": round(float(diff.mean()), 4),
            "max_abs_ais_minus_exact": round(float(diff.abs().max()), 4),
            "points": x.shape[0],
            "ais_seconds": round(seconds, 1),
        }
        print(name, out[name], flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int)
    ap.add_argument("--points", type=int, default=32)
    ap.add_argument("--num-chains", type=int, default=8)
    ap.add_argument("--num-steps", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reference")
    ap.add_argument("--model", default="static-mnist-vae-vampprior")
    ap.add_argument(
        "--data-root", default=str(HERE.parent.parent / "shared" / "data" / "static_mnist")
    )
    ap.add_argument("--digits", action="store_true", help="also AIS against exact on Digits")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    test = pathlib.Path(args.data_root) / "binarized_mnist_test.amat"
    if not test.is_file():
        sys.exit(f"{test} is missing: the benchmark runs on real static MNIST test images only")
    x = read_amat(test)[: args.points]
    vae = pyrovamp.from_pretrained(args.model)
    opts = dict(method="ais", num_chains=args.num_chains, num_steps=args.num_steps, seed=0)
    ref_vae = None
    if args.reference:
        ref = import_revision(args.reference)
        ref_vae = reference_model(ref, vae, torch.device("cpu"))

    def timed(fn):
        t0 = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - t0

    log_likelihood(vae, x[:2], **{**opts, "num_steps": 5})  # warm-up
    if ref_vae is not None:
        ref.log_likelihood(ref_vae, x[:2], **{**opts, "num_steps": 5})
    new_s, ref_s, is_s = [], [], []
    for _ in range(args.rounds):
        ll, t = timed(lambda: log_likelihood(vae, x, **opts))
        new_s.append(t)
        is_s.append(timed(lambda: log_likelihood(vae, x, 5000, seed=0))[1])
        if ref_vae is not None:
            ll_ref, t = timed(lambda: ref.log_likelihood(ref_vae, x, **opts))
            ref_s.append(t)
    n = x.shape[0]
    pairs = list(zip(new_s, is_s, strict=True))
    res = {
        "ais_seconds_per_point": round(statistics.median(new_s) / n, 4),
        "is_seconds_per_point": round(statistics.median(is_s) / n, 4),
        "ais_cost_over_is": round(statistics.median(a / i for a, i in pairs), 3),
        "num_chains": args.num_chains,
        "num_steps": args.num_steps,
        "points": n,
        "mean_ais": round(float(ll.mean()), 3),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "model": args.model,
        "seconds": [round(t, 2) for t in new_s],
        "clock": "wall",
    }
    if ref_vae is not None:
        ratios = [r / t for r, t in zip(ref_s, new_s, strict=True)]
        res.update(
            reference=args.reference,
            reference_seconds=[round(t, 2) for t in ref_s],
            speedup_over_reference=round(statistics.median(ratios), 3),
            speedup_per_round=[round(r, 3) for r in ratios],
            max_abs_diff_to_reference=round(float((ll - ll_ref).abs().max()), 4),
        )
    if args.digits:
        res["digits"] = digits_accuracy()
    print(
        f"AIS {args.num_chains} chains x {args.num_steps} steps: {res['ais_seconds_per_point']} s "
        f"per point, {res['ais_cost_over_is']}x IS (S=5000)"
        + (f"; speed-up {res['speedup_over_reference']}x over {args.reference}" if ref_vae else "")
    )
    print(json.dumps(res))


if __name__ == "__main__":
    main()
