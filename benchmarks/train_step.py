"""Time of one Pyro SVI step against a plain PyTorch ELBO step of the same networks.

The models are the VampPrior paper's VAE and two-level HVAE: 784 binary inputs, gated dense
layers of 300 units, z = 40 (z1 = z2 = 40), K = 500 pseudo-inputs, batch 100, Adam. Both steps use the very same modules and the
same distributions' ``log_prob`` -- the PyTorch step computes
``-mean(log p(x|z) + log p(z) - log q(z|x))`` by hand and steps one ``torch.optim.Adam`` -- so the
ratio is the cost of Pyro's machinery (tracing, param store, per-parameter optimisers).
Also reported: the same PyTorch step with the VampPrior density computed the way the original
research code does (a (B, K, L) broadcast), for scale.

Usage: python benchmarks/train_step.py [--device cuda] [--steps 40] [--real-data DIR]
The last line printed is a JSON object with ``pyro_ms``, ``torch_ms`` and ``ratio`` (VAE) and
``hvae_pyro_ms``, ``hvae_torch_ms``, ``hvae_ratio``.
"""

import argparse
import json
import math
import statistics
import time

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO

from pyrovamp import HVAE, VAE


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--real-data", help="folder with binarized_mnist_train.amat (else random)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    pyro.set_rng_seed(0)
    if args.real_data:
        from pyrovamp.data import read_amat
        x_all = read_amat(f"{args.real_data}/binarized_mnist_valid.amat")[:2000]
    else:
        x_all = (torch.rand(2000, 784) < 0.13).float()
    x_all = x_all.to(dev)

    results = {}
    for name in ("vae", "hvae"):
        res = bench(name, x_all, dev, args)
        prefix = "" if name == "vae" else "hvae_"
        results.update({prefix + k: v for k, v in res.items()})
        print(f"{name.upper()}: Pyro SVI step {res['pyro_ms']:.1f} ms, PyTorch step "
              f"{res['torch_ms']:.1f} ms (naive mixture density {res['torch_naive_ms']:.1f} ms): "
              f"ratio {res['ratio']:.3f}")
    results.update(device=str(dev), batch_size=args.batch_size, steps=args.steps,
                   threads=torch.get_num_threads())
    print(json.dumps(results))


def bench(name, x_all, dev, args):
    def make():
        cls = VAE if name == "vae" else HVAE
        return cls((784,), 40, prior="vampprior", likelihood="bernoulli", hidden_dim=300,
                   architecture="gated", num_components=500, logvar_bounds=(-6.0, 2.0)).to(dev)

    pyro.set_rng_seed(0)
    vae_pyro, vae_torch = make(), make()
    vae_torch.load_state_dict(vae_pyro.state_dict())
    svi = SVI(vae_pyro.model, vae_pyro.guide, pyro.optim.Adam({"lr": 5e-4}), Trace_ELBO())
    opt = torch.optim.Adam(vae_torch.parameters(), lr=5e-4)

    def log_prior(z, naive):
        if naive:  # the original code's (B, K, L) broadcast of the mixture density
            mu, scale = vae_torch.encoder(vae_torch.prior.pseudo_inputs)
            lp = torch.distributions.Normal(mu, scale).log_prob(z[:, None, :]).sum(-1)
            return torch.logsumexp(lp - math.log(mu.shape[0]), dim=-1)
        return vae_torch.prior().log_prob(z)

    def torch_step(x, naive=False):
        opt.zero_grad()
        q = vae_torch.encode(x)
        z = q.rsample()
        if name == "vae":
            elbo = vae_torch.decode(z).log_prob(x) + log_prior(z, naive) - q.log_prob(z)
        else:  # z is z2; then z1 ~ q(z1|x, z2)
            q1 = vae_torch.encode_z1(x, z)
            z1 = q1.rsample()
            loc, scale = vae_torch.p_z1(z)
            p1 = torch.distributions.Normal(loc, scale).log_prob(z1).sum(-1)
            elbo = (vae_torch.decode(z1, z).log_prob(x) + p1 + log_prior(z, naive)
                    - q.log_prob(z) - q1.log_prob(z1))
        loss = -elbo.sum()
        loss.backward()
        opt.step()
        return loss.item()

    def pyro_step(x):
        return svi.step(x)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    b = args.batch_size
    batches = [x_all[i * b:(i + 1) * b] for i in range(x_all.shape[0] // b)]
    for i in range(5):  # warm-up
        pyro_step(batches[i]), torch_step(batches[i]), torch_step(batches[i], naive=True)
    times = {"pyro": [], "torch": [], "torch_naive": []}
    for i in range(args.steps):  # interleaved so that machine noise hits all alike
        x = batches[i % len(batches)]
        for kind, fn in (("pyro", pyro_step), ("torch", torch_step),
                         ("torch_naive", lambda x: torch_step(x, naive=True))):
            sync()
            t0 = time.perf_counter()
            fn(x)
            sync()
            times[kind].append(time.perf_counter() - t0)
    res = {k + "_ms": round(1000 * statistics.median(v), 3) for k, v in times.items()}
    res["ratio"] = round(res["pyro_ms"] / res["torch_ms"], 3)
    return res


if __name__ == "__main__":
    main()
