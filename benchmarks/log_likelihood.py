"""Importance-sampled test log-likelihood at S=5000: data points per second.

Model: the VampPrior paper's VAE (784 inputs, gated dense 300 units, z = 40, K = 500), on static
MNIST test images (``--data-root``, default ``../shared/data/static_mnist``; random binary images
if the files are missing). ``--run RUN_DIR`` scores a trained run's model instead of a freshly
initialised one. Baseline in the same process: the original research code's scheme -- per test
point, chunks of 100 samples, each chunk re-encoding 100 copies of x and re-encoding all K
pseudo-inputs, the mixture density by a (100, K, L) broadcast -- timed on a few points.

Usage: python benchmarks/log_likelihood.py [--points 50] [--device cuda]
The last line printed is a JSON object with ``points_per_second`` and ``num_samples``.
"""

import argparse
import json
import math
import pathlib
import time

import pyro
import torch

from pyrovamp import VAE, log_likelihood
from pyrovamp.data import read_amat

HERE = pathlib.Path(__file__).resolve().parent


@torch.no_grad()
def baseline_log_likelihood(vae, x, num_samples, chunk=100):
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--points", type=int, default=50)
    ap.add_argument("--baseline-points", type=int, default=2)
    ap.add_argument("--num-samples", type=int, default=5000)
    ap.add_argument("--data-root", default=str(HERE.parent.parent / "shared" / "data" / "static_mnist"))
    ap.add_argument("--run", help="a run folder of a static MNIST VampPrior model to score")
    args = ap.parse_args()
    dev = torch.device(args.device)
    pyro.set_rng_seed(0)
    test = pathlib.Path(args.data_root) / "binarized_mnist_test.amat"
    if test.is_file():
        x, source = read_amat(test)[: args.points], str(test)
    else:
        x, source = (torch.rand(args.points, 784) < 0.13).float(), "random binary images"
    x = x.to(dev)
    if args.run:
        from pyrovamp.runs import load_run
        vae = load_run(args.run, args.device)[0]
    else:
        vae = VAE((784,), 40, prior="vampprior", likelihood="bernoulli", hidden_dim=300, architecture="gated",
                  num_components=500, logvar_bounds=(-6.0, 2.0)).to(dev)
    S = args.num_samples

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    log_likelihood(vae, x[:2], S, seed=0)  # warm-up
    sync()
    t0 = time.perf_counter()
    ll = log_likelihood(vae, x, S, seed=0)
    sync()
    seconds = time.perf_counter() - t0
    nb = args.baseline_points
    t0 = time.perf_counter()
    ll_base = baseline_log_likelihood(vae, x[:nb], S)
    sync()
    base_seconds = time.perf_counter() - t0
    res = {
        "points_per_second": round(x.shape[0] / seconds, 3),
        "num_samples": S,
        "points": x.shape[0],
        "seconds": round(seconds, 2),
        "baseline_points_per_second": round(nb / base_seconds, 3),
        "speedup": round((x.shape[0] / seconds) / (nb / base_seconds), 1),
        "mean_log_likelihood": round(float(ll.mean()), 3),
        "max_abs_diff_to_baseline": round(float((ll[:nb] - ll_base).abs().max()), 4),
        "device": str(dev),
        "data": source,
        "threads": torch.get_num_threads(),
    }
    print(f"{res['points_per_second']} points/s at S={S} "
          f"(original scheme: {res['baseline_points_per_second']} points/s, "
          f"speed-up {res['speedup']}x)")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
