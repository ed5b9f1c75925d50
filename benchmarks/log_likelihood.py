"""Importance-sampled test log-likelihood at S=5000: data points per second, and memory.

Model: the VampPrior paper's VAE (784 inputs, gated dense 300 units, z = 40, K = 500; the
"paper" preset of :mod:`pyrovamp.workflow.runs`), on the first ``--points`` static MNIST test images
(``--data-root``, default ``../shared/data/static_mnist``; the benchmark stops if the file is
missing -- it never times random images). ``--run RUN_DIR`` scores a trained run's model instead
of a freshly initialised one.

Baselines timed in the same process, on the same images and weights:

* ``--reference REV``: this repository's ``pyrovamp`` package at git revision ``REV`` (e.g. the
  commit before a speed-up), imported as a separate package; the two implementations run in
  alternation ``--rounds`` times and the reported speed-up is the median of the per-round ratios
  (robust to other load on a shared machine). On a CPU the times are the process's CPU time (run
  with ``OMP_NUM_THREADS=1``), which other processes on a shared machine do not inflate;
* the original research code's scheme -- per test point, chunks of 100 samples, each re-encoding
  100 copies of x and all K pseudo-inputs, the mixture density by a (100, K, L) broadcast -- timed
  on ``--baseline-points`` points.

Memory: the plans (:func:`pyrovamp.infer.planning.evaluation_plan`) for the paper's VAE and convHVAE
at S, and the measured peak of live tensor bytes (:func:`pyrovamp.infer.planning.peak_bytes`) of a
convHVAE chunk of this device's plan and of the largest chunk the budget allows.

Usage: OMP_NUM_THREADS=1 python benchmarks/log_likelihood.py [--points 48] [--reference REV]
The last line printed is a JSON object with ``points_per_second`` and ``num_samples``.
"""

import argparse
import importlib
import json
import math
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import pyro
import torch

from pyrovamp import VAE, ConvHVAE, log_likelihood
from pyrovamp.data import read_amat
from pyrovamp.infer import planning
from pyrovamp.infer.planning import DEFAULT_MEMORY_BUDGET, evaluation_plan, peak_bytes

HERE = pathlib.Path(__file__).resolve().parent
PAPER_VAE = dict(
    prior="vampprior",
    likelihood="bernoulli",
    hidden_dim=300,
    architecture="gated",
    num_components=500,
    logvar_bounds=(-6.0, 2.0),
)


@torch.no_grad()
def original_scheme_log_likelihood(vae, x, num_samples, chunk=100):
    """The original repository's estimator, written out (one data point at a time)."""
    out = []
    for xi in x:
        log_w = []
        for _ in range(num_samples // chunk):
            xs = xi.expand(chunk, -1)
            loc, scale = vae.encoder(xs)
            z = loc + scale * torch.randn_like(loc)
            mu, sc = vae.encoder(vae.prior.pseudo_inputs)  # all K pseudo-inputs, every chunk
            lp = torch.distributions.Normal(mu, sc).log_prob(z[:, None, :]).sum(-1)
            log_p = torch.logsumexp(lp - math.log(mu.shape[0]), dim=-1)
            log_q = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
            log_w.append(vae.decode(z).log_prob(xs) + log_p - log_q)
        out.append(torch.logsumexp(torch.cat(log_w).double(), 0) - math.log(num_samples))
    return torch.stack(out)


def import_revision(rev: str):
    """``pyrovamp`` as it was at git revision ``rev``, imported as package ``pyrovamp_ref``."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="pyrovamp_ref_"))
    archive = subprocess.run(
        ["git", "-C", str(HERE.parent), "archive", rev, "pyrovamp"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    (root / "pyrovamp").rename(root / "pyrovamp_ref")
    sys.path.insert(0, str(root))
    return importlib.import_module("pyrovamp_ref")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--points", type=int, default=48)
    ap.add_argument("--baseline-points", type=int, default=2)
    ap.add_argument("--num-samples", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reference", help="git revision of pyrovamp to time in the same process")
    ap.add_argument(
        "--data-root", default=str(HERE.parent.parent / "shared" / "data" / "static_mnist")
    )
    ap.add_argument("--run", help="a run folder of a static MNIST VampPrior model to score")
    args = ap.parse_args()
    dev = torch.device(args.device)
    S, budget = args.num_samples, DEFAULT_MEMORY_BUDGET
    test = pathlib.Path(args.data_root) / "binarized_mnist_test.amat"
    if not test.is_file():
        sys.exit(
            f"{test} is missing: the benchmark runs on real static MNIST test images only "
            "(see ../shared/data/README.md); pass --data-root"
        )
    x = read_amat(test)[: args.points].to(dev)
    pyro.set_rng_seed(0)

    # memory: the convHVAE's chunks against the budget -- the chunk of this device's plan and
    # the largest the budget allows (a GPU's chunk; on a CPU chunks stop at CPU_CHUNK_BYTES)
    conv = ConvHVAE((28, 28), 40, prior="vampprior").to(dev)
    conv_plan = evaluation_plan(conv, S, budget)
    cap, planning.CPU_CHUNK_BYTES = planning.CPU_CHUNK_BYTES, budget
    try:
        conv_full = evaluation_plan(conv, S, budget)
    finally:
        planning.CPU_CHUNK_BYTES = cap
    conv_peak = peak_bytes(conv, x[: conv_plan.points_per_chunk], conv_plan.samples_per_chunk)
    conv_full_peak = peak_bytes(conv, x[: conv_full.points_per_chunk], conv_full.samples_per_chunk)
    del conv

    if args.run:
        from pyrovamp.workflow.runs import load_run

        vae = load_run(args.run, args.device)[0]
    else:
        vae = VAE((784,), 40, **PAPER_VAE).to(dev)
    vae_plan = evaluation_plan(vae, S, budget)
    ref_vae = None
    if args.reference:
        ref = import_revision(args.reference)
        ref_vae = ref.VAE((784,), 40, **PAPER_VAE).to(dev)
        ref_vae.load_state_dict(vae.state_dict())

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def timed(fn):
        """``(result, seconds)``: wall-clock seconds on a GPU; on a CPU the process's CPU seconds,
        which a busy shared machine does not inflate by descheduling (run with one thread)."""
        sync()
        clock = time.perf_counter if dev.type == "cuda" else time.process_time
        t0 = clock()
        out = fn()
        sync()
        return out, clock() - t0

    log_likelihood(vae, x[:2], S, seed=0)  # warm-up
    if ref_vae is not None:
        ref.log_likelihood(ref_vae, x[:2], S, seed=0)
    new_s, ref_s = [], []
    for _ in range(args.rounds):
        ll, t = timed(lambda: log_likelihood(vae, x, S, seed=0))
        new_s.append(t)
        if ref_vae is not None:
            ll_ref, t = timed(lambda: ref.log_likelihood(ref_vae, x, S, seed=0))
            ref_s.append(t)
    nb = args.baseline_points
    ll_base, base_seconds = timed(lambda: original_scheme_log_likelihood(vae, x[:nb], S))
    n = x.shape[0]
    res = {
        "points_per_second": round(n / statistics.median(new_s), 3),
        "num_samples": S,
        "points": n,
        "seconds": [round(t, 2) for t in new_s],
        "plan": vae_plan._asdict(),
        "memory_budget_mib": budget / 2**20,
        "mean_log_likelihood": round(float(ll.mean()), 3),
        "original_scheme_points_per_second": round(nb / base_seconds, 3),
        "max_abs_diff_to_original_scheme": round(
            float((ll[:nb].cpu() - ll_base.cpu()).abs().max()), 4
        ),
        "convhvae_plan": conv_plan._asdict(),
        "convhvae_chunk_peak_mib": round(conv_peak / 2**20, 1),
        "convhvae_budget_sized_chunk": conv_full._asdict(),
        "convhvae_budget_sized_chunk_peak_mib": round(conv_full_peak / 2**20, 1),
        "convhvae_budget_sized_chunk_peak_over_budget": round(conv_full_peak / budget, 3),
        "device": str(dev),
        "data": str(test),
        "threads": torch.get_num_threads(),
        "clock": "wall" if dev.type == "cuda" else "process CPU time",
    }
    if ref_vae is not None:
        ratios = [r / t for r, t in zip(ref_s, new_s, strict=False)]
        res.update(
            {
                "reference": args.reference,
                "reference_points_per_second": round(n / statistics.median(ref_s), 3),
                "reference_seconds": [round(t, 2) for t in ref_s],
                "speedup_over_reference": round(statistics.median(ratios), 3),
                "speedup_per_round": [round(r, 3) for r in ratios],
                "reference_mean_log_likelihood": round(float(ll_ref.mean()), 3),
            }
        )
    line = (
        f"{res['points_per_second']} points/s at S={S} ({vae_plan.points_per_block} points "
        f"per block, chunks of {vae_plan.points_per_chunk} x {vae_plan.samples_per_chunk})"
    )
    if ref_vae is not None:
        line += (
            f"; {args.reference}: {res['reference_points_per_second']} points/s, speed-up "
            f"{res['speedup_over_reference']}x (median of {args.rounds} interleaved rounds)"
        )
    print(line)
    print(
        f"convHVAE: chunk of {conv_plan.points_per_chunk} x {conv_plan.samples_per_chunk} "
        f"measured peak {res['convhvae_chunk_peak_mib']} MiB; budget-sized chunk of "
        f"{conv_full.points_per_chunk} x {conv_full.samples_per_chunk} measured peak "
        f"{res['convhvae_budget_sized_chunk_peak_mib']} MiB of a {budget / 2**20:.0f} MiB budget"
    )
    print(json.dumps(res))


if __name__ == "__main__":
    main()
