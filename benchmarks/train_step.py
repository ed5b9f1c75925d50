"""Time of one Pyro SVI step against a plain PyTorch ELBO step of the same networks.

The model is the VampPrior paper's VAE: 784 binary inputs, gated dense layers of 300 units,
z = 40, K = 500 pseudo-inputs, batch 100, Adam. Both steps use the very same modules and the
same distributions' ``log_prob`` -- the PyTorch step computes
``-mean(log p(x|z) + log p(z) - log q(z|x))`` by hand and steps one ``torch.optim.Adam`` -- so the
ratio is the cost of Pyro's machinery (tracing, param store, per-parameter optimisers).
Also reported: the same PyTorch step with the VampPrior density computed the way the original
research code does (a (B, K, L) broadcast), for scale.

Usage: python benchmarks/train_step.py [--device cuda] [--steps 40] [--real-data DIR]
The last line printed is a JSON object with ``pyro_ms``, ``torch_ms`` and ``ratio``.
"""

import argparse
import json
import math
import statistics
import time

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO

from pyrovamp import VAE


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

    def make():
        return VAE((784,), 40, "vampprior", "bernoulli", hidden_dim=300, architecture="gated",
                   num_components=500, logvar_bounds=(-6.0, 2.0)).to(dev)

    vae_pyro, vae_torch = make(), make()
    vae_torch.load_state_dict(vae_pyro.state_dict())
    svi = SVI(vae_pyro.model, vae_pyro.guide, pyro.optim.Adam({"lr": 5e-4}), Trace_ELBO())
    opt = torch.optim.Adam(vae_torch.parameters(), lr=5e-4)

    def torch_step(x, naive=False):
        opt.zero_grad()
        q = vae_torch.encode(x)
        z = q.rsample()
        if naive:  # the original code's (B, K, L) broadcast of the mixture density
            mu, scale = vae_torch.encoder(vae_torch.prior.pseudo_inputs)
            lp = torch.distributions.Normal(mu, scale).log_prob(z[:, None, :]).sum(-1)
            log_p = torch.logsumexp(lp - math.log(mu.shape[0]), dim=-1)
        else:
            log_p = vae_torch.prior().log_prob(z)
        elbo = vae_torch.decode(z).log_prob(x) + log_p - q.log_prob(z)
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
        for name, fn in (("pyro", pyro_step), ("torch", torch_step),
                         ("torch_naive", lambda x: torch_step(x, naive=True))):
            sync()
            t0 = time.perf_counter()
            fn(x)
            sync()
            times[name].append(time.perf_counter() - t0)
    res = {k + "_ms": round(1000 * statistics.median(v), 3) for k, v in times.items()}
    res["ratio"] = round(res["pyro_ms"] / res["torch_ms"], 3)
    res.update(device=str(dev), batch_size=b, steps=args.steps, threads=torch.get_num_threads())
    print(f"Pyro SVI step {res['pyro_ms']:.1f} ms, PyTorch step {res['torch_ms']:.1f} ms "
          f"(naive mixture density {res['torch_naive_ms']:.1f} ms): ratio {res['ratio']:.3f}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
