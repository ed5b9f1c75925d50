"""Time of one training step on Lightning + Pyro against a plain PyTorch ELBO step of the same
networks, in the same process, interleaved.

The models are the VampPrior paper's VAE and two-level HVAE: 784 binary inputs, gated dense
layers of 300 units, z = 40 (z1 = z2 = 40), K = 500 pseudo-inputs, batch 100, Adam 5e-4.

* ``lightning``: pyrovamp's training path -- :class:`pyrovamp.training.SVIModule` under
  Lightning's ``Trainer`` (its loop, hooks, optimizer step and data module; the loss is Pyro's
  ``Trace_ELBO().differentiable_loss`` of the model's ``model``/``guide``). A step's time is the
  wall time between two consecutive ``on_train_batch_start`` hooks: data, forward, backward,
  optimiser and every hook of the loop.
* ``torch``: the same modules and the same distributions' ``log_prob`` with the ELBO written
  by hand, ``-mean(log p(x|z) + log p(z) - log q(z|x))``, one ``torch.optim.Adam`` step, the
  batch taken from a tensor -- the cost floor without Pyro and Lightning.

* ``lightning_ema`` (with ``--ema-decay D``): the Lightning step with the exponential moving
  average of the parameters updated after every step (:class:`pyrovamp.training.ParameterEMA`,
  ``--ema-decay`` of ``pyrovamp train``); ``ema_ratio`` is its time over ``lightning``'s.
* ``lightning_adamnormgrad`` (with ``--adamnormgrad``): the Lightning step with the paper's
  optimiser (:class:`pyrovamp.training.AdamNormGrad`, gradients normalised per tensor and per
  fused block: ``--preset paper``) in place of Adam; ``adamnormgrad_ratio`` is its time over
  ``lightning``'s.
* ``lightning_iwae`` (with ``--iwae K``): the Lightning step with the importance-weighted bound
  of K samples as the loss (:class:`pyrovamp.training.IWAELoss`, ``--loss iwae --num-particles K``
  of ``pyrovamp train``) in place of the ELBO; ``iwae_ratio`` is its time over ``lightning``'s.
* ``lightning_iwae_dreg`` (with ``--iwae K --dreg``): the same bound with the doubly
  reparameterised gradient (``IWAELoss(K, estimator="dreg")``, ``--loss iwae_dreg``);
  ``dreg_ratio`` is its time over ``lightning_iwae``'s.

Rounds alternate (Lightning for ``--steps`` steps, then PyTorch for as many, then Lightning with
the EMA), so machine noise hits all alike; the figures are medians over all steps after the
first two of each round. ``paired_ratio`` is the median over rounds of each round's Lightning
median over the PyTorch median of the same round: on a machine whose speed drifts (a shared
virtual machine) it is the steadier figure.

Usage: python benchmarks/train_step.py [--device cuda] [--steps 30] [--rounds 4] [--real-data DIR]
       [--precision 32|bf16-mixed] [--batch-size 100] [--ema-decay 0.999] [--adamnormgrad]
       [--iwae K [--dreg]]
The last line printed is a JSON object with ``lightning_ms``, ``torch_ms``, ``ratio`` and
``paired_ratio`` (VAE) and ``hvae_lightning_ms``, ``hvae_torch_ms``, ``hvae_ratio``,
``hvae_paired_ratio`` (and ``[hvae_]lightning_ema_ms``,
``[hvae_]ema_ratio`` with ``--ema-decay``; ``[hvae_]adamnormgrad_ratio`` with ``--adamnormgrad``;
``[hvae_]iwae_ratio`` with ``--iwae K``; ``[hvae_]dreg_ratio`` with ``--dreg``).
"""

import argparse
import dataclasses
import json
import logging
import statistics
import time

import lightning.pytorch as pl
import pyro
import torch

from pyrovamp import HVAE, VAE
from pyrovamp.training.callbacks import ParameterEMA
from pyrovamp.training.config import TrainConfig
from pyrovamp.training.data import EpochData, SVIDataModule
from pyrovamp.training.plan import SVIModule
from pyrovamp.training.runner import quiet_lightning


class _StepClock(pl.Callback):
    def __init__(self):
        self.starts = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self.starts.append(time.perf_counter())

    def on_train_epoch_end(self, trainer, pl_module):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self.starts.append(time.perf_counter())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--precision", default="32")
    ap.add_argument("--real-data", help="folder with binarized_mnist_valid.amat (else random)")
    ap.add_argument("--ema-decay", type=float, help="also time the step with the parameter EMA")
    ap.add_argument(
        "--adamnormgrad",
        action="store_true",
        help="also time the step with the paper's AdamNormGrad instead of Adam",
    )
    ap.add_argument(
        "--iwae",
        type=int,
        metavar="K",
        help="also time the step with the IWAE-K bound as the loss (K >= 2)",
    )
    ap.add_argument(
        "--dreg",
        action="store_true",
        help="with --iwae K: also time the bound with the doubly reparameterised gradient",
    )
    args = ap.parse_args()
    if args.iwae is not None and args.iwae < 2:
        ap.error(f"--iwae K needs K >= 2, got {args.iwae}")
    if args.dreg and args.iwae is None:
        ap.error("--dreg needs --iwae K")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    dev = torch.device(args.device)
    pyro.set_rng_seed(0)
    n = args.steps * args.batch_size
    if args.real_data:
        from pyrovamp.data import read_amat

        x_all = read_amat(f"{args.real_data}/binarized_mnist_valid.amat")[:n]
        if x_all.shape[0] < n:
            ap.error(f"--steps x --batch-size = {n} exceeds the {x_all.shape[0]} validation images")
    else:
        x_all = (torch.rand(n, 784) < 0.13).float()

    results = {}
    for name in ("vae", "hvae"):
        res = bench(name, x_all, dev, args)
        prefix = "" if name == "vae" else "hvae_"
        results.update({prefix + k: v for k, v in res.items()})
        print(
            f"{name.upper()}: Lightning + Pyro step {res['lightning_ms']:.1f} ms, PyTorch step "
            f"{res['torch_ms']:.1f} ms: ratio {res['ratio']:.3f}"
        )
    results.update(
        device=str(dev),
        batch_size=args.batch_size,
        steps=args.steps,
        rounds=args.rounds,
        precision=args.precision,
        threads=torch.get_num_threads(),
        ema_decay=args.ema_decay,
        adamnormgrad=args.adamnormgrad,
        iwae=args.iwae,
        dreg=args.dreg,
        data="static MNIST validation images" if args.real_data else "random binary",
    )
    print(json.dumps(results))


def bench(name, x_all, dev, args):
    def make():
        cls = VAE if name == "vae" else HVAE
        return cls(
            (784,),
            40,
            prior="vampprior",
            likelihood="bernoulli",
            hidden_dim=300,
            architecture="gated",
            num_components=500,
            logvar_bounds=(-6.0, 2.0),
        ).to(dev)

    pyro.set_rng_seed(0)
    m_light, m_torch = make(), make()
    m_torch.load_state_dict(m_light.state_dict())
    cfg = TrainConfig(
        epochs=1,
        batch_size=args.batch_size,
        lr=5e-4,
        optimizer="adam",
        patience=None,
        progress=False,
        logger="none",
        accelerator="gpu" if dev.type == "cuda" else "cpu",
        precision=args.precision,
    )
    module = SVIModule(m_light, cfg)
    if args.adamnormgrad:  # the same start, the paper's optimiser
        m_ang = make()
        m_ang.load_state_dict(m_light.state_dict())
        module_ang = SVIModule(m_ang, dataclasses.replace(cfg, optimizer="adamnormgrad"))
    if args.iwae is not None:  # the same start, the IWAE-K bound as the loss
        m_iwae = make()
        m_iwae.load_state_dict(m_light.state_dict())
        module_iwae = SVIModule(
            m_iwae, dataclasses.replace(cfg, loss="iwae", num_particles=args.iwae)
        )
    if args.dreg:  # the same start, the same bound, the doubly reparameterised gradient
        m_dreg = make()
        m_dreg.load_state_dict(m_light.state_dict())
        module_dreg = SVIModule(
            m_dreg, dataclasses.replace(cfg, loss="iwae_dreg", num_particles=args.iwae)
        )
    opt = torch.optim.Adam(m_torch.parameters(), lr=5e-4)
    x_dev = x_all.to(dev)
    b = args.batch_size

    def torch_step(i):
        x = x_dev[i * b : (i + 1) * b]
        opt.zero_grad()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed"):
            q = m_torch.encode(x)
            z = q.rsample()
            if name == "vae":
                elbo = m_torch.decode(z).log_prob(x) + m_torch.prior().log_prob(z) - q.log_prob(z)
            else:  # z is z2; then z1 ~ q(z1|x, z2)
                q1 = m_torch.encode_z1(x, z)
                z1 = q1.rsample()
                loc, scale = m_torch.p_z1(z)
                p1 = torch.distributions.Normal(loc, scale).log_prob(z1).sum(-1)
                elbo = (
                    m_torch.decode(z1, z).log_prob(x)
                    + p1
                    + m_torch.prior().log_prob(z)
                    - q.log_prob(z)
                    - q1.log_prob(z1)
                )
            loss = -elbo.mean()
        loss.backward()
        opt.step()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def lightning_round(r, extra=(), module=module):
        clock = _StepClock()
        with quiet_lightning():
            trainer = pl.Trainer(
                accelerator=cfg.accelerator,
                devices=1,
                max_epochs=1,
                precision=args.precision,
                logger=False,
                callbacks=[clock, *extra],
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                num_sanity_val_steps=0,
                limit_val_batches=0,
                use_distributed_sampler=False,
            )
            trainer.fit(module, datamodule=SVIDataModule(EpochData(x_all), None, b, seed=r))
        return [t1 - t0 for t0, t1 in zip(clock.starts, clock.starts[1:], strict=False)][2:]

    times = {"lightning": [], "torch": []}
    paired = []  # per round: its Lightning median over its PyTorch median (drift cancels)
    if args.ema_decay is not None:
        times["lightning_ema"] = []
    if args.adamnormgrad:
        times["lightning_adamnormgrad"] = []
    if args.iwae is not None:
        times["lightning_iwae"] = []
    if args.dreg:
        times["lightning_iwae_dreg"] = []
    for r in range(args.rounds):
        light = lightning_round(r)
        times["lightning"] += light
        m_light.train()
        sync()
        stamps = [time.perf_counter()]
        for i in range(args.steps):
            torch_step(i)
            sync()
            stamps.append(time.perf_counter())
        plain = [t1 - t0 for t0, t1 in zip(stamps, stamps[1:], strict=False)][2:]
        times["torch"] += plain
        paired.append(statistics.median(light) / statistics.median(plain))
        if args.ema_decay is not None:
            times["lightning_ema"] += lightning_round(r, [ParameterEMA(args.ema_decay)])
        if args.adamnormgrad:
            times["lightning_adamnormgrad"] += lightning_round(r, module=module_ang)
        if args.iwae is not None:
            times["lightning_iwae"] += lightning_round(r, module=module_iwae)
        if args.dreg:
            times["lightning_iwae_dreg"] += lightning_round(r, module=module_dreg)
    res = {k + "_ms": round(1000 * statistics.median(v), 3) for k, v in times.items()}
    res["ratio"] = round(res["lightning_ms"] / res["torch_ms"], 3)
    res["paired_ratio"] = round(statistics.median(paired), 3)
    if args.ema_decay is not None:
        res["ema_ratio"] = round(res["lightning_ema_ms"] / res["lightning_ms"], 3)
    if args.adamnormgrad:
        res["adamnormgrad_ratio"] = round(res["lightning_adamnormgrad_ms"] / res["lightning_ms"], 3)
    if args.iwae is not None:
        res["iwae_ratio"] = round(res["lightning_iwae_ms"] / res["lightning_ms"], 3)
    if args.dreg:
        res["dreg_ratio"] = round(res["lightning_iwae_dreg_ms"] / res["lightning_iwae_ms"], 3)
    return res


if __name__ == "__main__":
    main()
