"""Importance-sampled test log-likelihood at S=5000: useful GFLOP/s against the machine's own
GEMM rate, data points per second, and memory.

Model: the VampPrior paper's VAE (784 inputs, gated dense 300 units, z = 40, K = 500) -- by
default the trained zoo model ``static-mnist-vae-vampprior`` (``--model``; ``--model random``: a
freshly initialised one of the "paper" preset; ``--run RUN_DIR``: a trained run's model), on the
first ``--points`` static MNIST test images (``--data-root``, default
``../shared/data/static_mnist``; the benchmark stops if the file is missing -- it never times
random images).

**Useful work and the GEMM rate.** The useful floating-point operations of IS per data point are
``S * (sum over the decoder's linear layers of 2 * in * out + 4 * L * K)``: the decoder on the S
latent draws and the K component densities of the mixture prior (its quadratic form as one product
of ``(z^2, z)`` with ``(-prec/2, mu * prec)``, 2L x K per draw): 4.79 GFLOP for the paper's VAE. The
machine's rate is a plain float32 ``torch.mm`` of the decoder's shapes (``(S, in) @ (in, out)`` for
each of its linear layers) at the same thread count, timed in the same process in rounds
interleaved with the IS rounds (wall clock); ``gemm_fraction`` is the median over rounds of
(useful GFLOP/s of IS) / (GEMM GFLOP/s) -- 1.0 would be IS running at the speed of its matrix
products alone.

Baselines timed in the same process, on the same images and weights:

* ``--reference REV``: this repository's ``pyrovamp`` package at git revision ``REV`` (e.g. the
  commit before a speed-up), imported as a separate package; the implementations run in
  alternation ``--rounds`` times; ``speedup_over_reference`` is the median of the per-round ratios.
  Both estimate with the same seed; where both plans split the draws alike (the same chunks, so the
  same random draws) ``max_abs_diff_to_reference`` is the largest per-image difference (nats);
* the original research code's scheme -- per test point, chunks of 100 samples, each re-encoding
  100 copies of x and all K pseudo-inputs, the mixture density by a (100, K, L) broadcast -- timed
  on ``--baseline-points`` points.

Memory: the plans (:func:`pyrovamp.infer.planning.evaluation_plan`) for the paper's VAE and convHVAE
at S, and the measured peak of live tensor bytes (:func:`pyrovamp.infer.planning.peak_bytes`) of a
convHVAE chunk of this device's plan and of the largest chunk the budget allows.

Usage: python benchmarks/log_likelihood.py [--threads 1] [--points 48] [--reference REV]
The last line printed is a JSON object with ``gemm_fraction``, ``useful_gflops``, ``gemm_gflops``,
``points_per_second``, ``cpu_capability`` and ``threads``.
"""

import argparse
import importlib
import json
import math
import pathlib
import re
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
    """``pyrovamp`` as it was at git revision ``rev``, imported as package ``pyrovamp_ref``: every
    ``pyrovamp`` name in its sources is renamed, so that its modules import each other, never
    this checkout's."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="pyrovamp_ref_"))
    archive = subprocess.run(
        ["git", "-C", str(HERE.parent), "archive", rev, "pyrovamp"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    (root / "pyrovamp").rename(root / "pyrovamp_ref")
    for path in (root / "pyrovamp_ref").rglob("*.py"):
        path.write_text(re.sub(r"\bpyrovamp\b", "pyrovamp_ref", path.read_text()))
    sys.path.insert(0, str(root))
    return importlib.import_module("pyrovamp_ref")


def useful_flops_per_point(vae, num_samples: int) -> int:
    """FLOPs of IS per data point that any implementation must do: the decoder's linear layers on
    the S draws (2 * in * out each) and the mixture prior's K component densities (4 * L * K)."""
    dense = sum(2 * m.in_features * m.out_features for m in vae.decoder.modules()
                if isinstance(m, torch.nn.Linear))  # fmt: skip
    K = vae.prior.num_components
    return num_samples * (dense + 4 * vae.latent_dim * K)


def decoder_gemm(vae, rows: int, device):
    """A function running a plain float32 ``torch.mm`` of each of the decoder's linear layers on
    ``rows`` rows, and its FLOPs."""
    layers = [m for m in vae.decoder.modules() if isinstance(m, torch.nn.Linear)]
    gen = torch.Generator().manual_seed(0)
    ins = [torch.randn(rows, m.in_features, generator=gen).to(device) for m in layers]
    ws = [m.weight.detach().float().t().contiguous() for m in layers]
    flops = sum(2 * rows * w.shape[0] * w.shape[1] for w in ws)

    def run():
        for a, w in zip(ins, ws, strict=True):
            torch.mm(a, w)

    return run, flops


def load_model(args, dev):
    """The model to score and its description."""
    if args.run:
        from pyrovamp.workflow.runs import load_run

        return load_run(args.run, args.device)[0], f"run {args.run}"
    if args.model == "random":
        torch.manual_seed(0)
        return VAE((784,), 40, **PAPER_VAE).to(dev), "the paper's VAE + VampPrior, random init"
    import pyrovamp

    return pyrovamp.from_pretrained(args.model, device=args.device), f"zoo {args.model}"


def reference_model(ref, vae, dev):
    """The reference revision's paper VAE holding ``vae``'s weights (dropout layers as
    ``vae``'s decoder, so that the parameter names agree)."""
    dropout = [m.p for m in vae.decoder.modules() if isinstance(m, torch.nn.Dropout)]
    ref_vae = ref.VAE((784,), 40, **PAPER_VAE, dropout=dropout[0] if dropout else 0.0).to(dev)
    ref_vae.load_state_dict(vae.state_dict())
    return ref_vae


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    ap.add_argument("--points", type=int, default=48)
    ap.add_argument("--baseline-points", type=int, default=2)
    ap.add_argument("--num-samples", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reference", help="git revision of pyrovamp to time in the same process")
    ap.add_argument(
        "--data-root", default=str(HERE.parent.parent / "shared" / "data" / "static_mnist")
    )
    ap.add_argument("--model", default="static-mnist-vae-vampprior",
                    help="a zoo name or pretrained folder, or 'random'")  # fmt: skip
    ap.add_argument("--run", help="a run folder of a static MNIST VampPrior model to score")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
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

    vae, model_name = load_model(args, dev)
    vae_plan = evaluation_plan(vae, S, budget)
    flops_per_point = useful_flops_per_point(vae, S)
    gemm, gemm_flops = decoder_gemm(vae, S, dev)
    ref_vae = ref_plan = None
    if args.reference:
        ref = import_revision(args.reference)
        ref_vae = reference_model(ref, vae, dev)
        ref_planning = importlib.import_module("pyrovamp_ref.infer.planning")
        ref_plan = tuple(ref_planning.evaluation_plan(ref_vae, S, budget))

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def timed(fn):
        """``(result, wall-clock seconds)``."""
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        return out, time.perf_counter() - t0

    def gemm_seconds():
        """Seconds of one decoder-shaped GEMM pass (median of enough repeats to take ~1 s)."""
        reps = []
        end = time.perf_counter() + 1.0
        while time.perf_counter() < end or len(reps) < 3:
            reps.append(timed(gemm)[1])
        return statistics.median(reps)

    log_likelihood(vae, x[:2], S, seed=0)  # warm-up
    gemm_seconds()
    if ref_vae is not None:
        ref.log_likelihood(ref_vae, x[:2], S, seed=0)
    new_s, ref_s, gemm_s = [], [], []
    for _ in range(args.rounds):
        ll, t = timed(lambda: log_likelihood(vae, x, S, seed=0))
        new_s.append(t)
        gemm_s.append(gemm_seconds())
        if ref_vae is not None:
            ll_ref, t = timed(lambda: ref.log_likelihood(ref_vae, x, S, seed=0))
            ref_s.append(t)
    nb = args.baseline_points
    ll_base, base_seconds = timed(lambda: original_scheme_log_likelihood(vae, x[:nb], S))
    n = x.shape[0]
    useful = [n * flops_per_point / t / 1e9 for t in new_s]
    machine = [gemm_flops / t / 1e9 for t in gemm_s]
    fractions = [u / m for u, m in zip(useful, machine, strict=True)]
    res = {
        "gemm_fraction": round(statistics.median(fractions), 3),
        "useful_gflops": round(statistics.median(useful), 1),
        "gemm_gflops": round(statistics.median(machine), 1),
        "useful_gflop_per_point": round(flops_per_point / 1e9, 3),
        "points_per_second": round(n / statistics.median(new_s), 3),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "model": model_name,
        "num_samples": S,
        "points": n,
        "seconds": [round(t, 2) for t in new_s],
        "gemm_fraction_per_round": [round(f, 3) for f in fractions],
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
        "clock": "wall",
    }
    if ref_vae is not None:
        ratios = [r / t for r, t in zip(ref_s, new_s, strict=False)]
        same_draws = ref_plan == tuple(vae_plan)
        res.update(
            {
                "reference": args.reference,
                "reference_points_per_second": round(n / statistics.median(ref_s), 3),
                "reference_seconds": [round(t, 2) for t in ref_s],
                "speedup_over_reference": round(statistics.median(ratios), 3),
                "speedup_per_round": [round(r, 3) for r in ratios],
                "reference_mean_log_likelihood": round(float(ll_ref.mean()), 3),
                "reference_plan": ref_plan,
                "max_abs_diff_to_reference": (
                    round(float((ll.cpu() - ll_ref.cpu()).abs().max()), 5) if same_draws else None
                ),
            }
        )
    line = (
        f"{res['points_per_second']} points/s at S={S} on {res['threads']} thread(s) "
        f"({res['cpu_capability']}): {res['useful_gflops']} useful GFLOP/s, "
        f"{res['gemm_fraction']} of the decoder-shaped GEMM's {res['gemm_gflops']} GFLOP/s"
    )
    if ref_vae is not None:
        line += (
            f"; {args.reference}: {res['reference_points_per_second']} points/s, speed-up "
            f"{res['speedup_over_reference']}x (median of {args.rounds} interleaved rounds), "
            f"largest per-image difference {res['max_abs_diff_to_reference']} nats"
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
