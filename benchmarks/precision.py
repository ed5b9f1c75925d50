"""Accuracy of bfloat16 mixed precision (``precision="bf16-mixed"``, ``torch.autocast``): the
log-densities a training step computes under autocast against float32, for a trained model.

Model: a zoo model (``--model``, default ``static-mnist-hvae-vampprior``) on the first
``--points`` static-MNIST training images (``--data-root``, default ``../shared/data/static_mnist``;
stops if the files are missing). With the model in training mode, as a training step sees it:

* ``log_lik_err_std`` / ``log_lik_err_max``: ``log p(x|h)`` of the same draws ``h`` (drawn in
  float32, ``--draws`` per image) under bfloat16 autocast minus float32 -- the standard deviation
  and the largest absolute value, nats per draw;
* ``prior_err_std`` / ``prior_err_max``: the same for ``log p(z)`` of the top latent (the prior);
* ``iwae_bound_bf16`` / ``iwae_bound_fp32``: the IWAE-K bound (``--k``, the loss per image of
  ``IWAELoss``, nats) of the images, the same draws (one seed) under autocast and in float32.

A log-density of 784 Bernoulli pixels is a difference of sums of thousands of nats that bfloat16
would round in steps of 16-32 nats; pyrovamp computes the densities in float32 from the
networks' bfloat16 outputs (``pyrovamp._precision``), so what remains is the networks' own
rounding. ``--reference REV`` runs the same on the package at git revision ``REV`` as well (e.g.
one before that fix), imported as a separate package.

Usage: python benchmarks/precision.py [--points 200] [--draws 50] [--k 50] [--reference REV]
The last line printed is a JSON object (``reference_*`` keys for ``--reference``), with
``cpu_capability`` and ``threads``.
"""

import argparse
import importlib
import json
import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from log_likelihood import HERE, import_revision  # noqa: E402

PRIORS = {"StandardPrior": "standard", "VampPrior": "vampprior", "MoGPrior": "mog"}


def reference_copy(ref, model, name):
    """The zoo model ``name`` (``model``, loaded by this checkout) as the reference revision's
    class with the same constructor arguments (its ``config.json``) and weights."""
    from pyrovamp import PRETRAINED

    config = json.loads((PRETRAINED[name] / "config.json").read_text())["model"]

    def plain(v):
        return tuple(v["$tuple"]) if isinstance(v, dict) and "$tuple" in v else v

    kw = {k: plain(v) for k, v in config["arguments"].items()}
    prior = config.get("children", {}).get("prior", {}).get("$module", {}).get("class")
    if prior:
        kw["prior"] = PRIORS[prior.rsplit(".", 1)[1]]
    kw = {k: v for k, v in kw.items() if v is not None}
    copy = getattr(ref, type(model).__name__)(**kw)
    copy.load_state_dict(model.state_dict())
    return copy


def measure(pv, model, x, draws, k):
    """The figures of the module docstring for the package ``pv`` (a pyrovamp module) and its
    ``model``."""
    import pyro

    iwae = importlib.import_module(pv.__name__ + ".infer").IWAELoss
    model.train()  # as a training step sees it (dropout drawn; the same masks below)
    hierarchical = hasattr(model, "encode_z1")
    with torch.no_grad():
        top = model.encode(x).sample((draws,))
        if hierarchical:
            lower = model.encode_z1(x, top).sample()
        out = {}
        for name, bf16 in (("fp32", False), ("bf16", True)):
            torch.manual_seed(0)  # the same dropout masks
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                like = model.decode(lower, top) if hierarchical else model.decode(top)
                out[name] = (
                    like.log_prob(x).float(),
                    model.prior(register=False).log_prob(top).float(),
                )
            pyro.set_rng_seed(0)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = iwae(k).differentiable_loss(model.model, model.guide, x)
            out["iwae_" + name] = float(loss) / x.shape[0]
    lik = out["bf16"][0] - out["fp32"][0]
    prior = out["bf16"][1] - out["fp32"][1]
    return {
        "log_lik_err_std": round(float(lik.std()), 4),
        "log_lik_err_max": round(float(lik.abs().max()), 4),
        "prior_err_std": round(float(prior.std()), 4),
        "prior_err_max": round(float(prior.abs().max()), 4),
        "iwae_bound_bf16": round(-out["iwae_bf16"], 3),
        "iwae_bound_fp32": round(-out["iwae_fp32"], 3),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="static-mnist-hvae-vampprior")
    ap.add_argument("--points", type=int, default=200)
    ap.add_argument("--draws", type=int, default=50)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument(
        "--data-root", default=str(HERE.parent.parent / "shared" / "data" / "static_mnist")
    )
    ap.add_argument("--reference", metavar="REV", help="also measure this git revision")
    args = ap.parse_args()
    import pyrovamp as pv
    from pyrovamp.data import load_dataset

    if not pathlib.Path(args.data_root).is_dir():
        sys.exit(f"no static MNIST at {args.data_root} (--data-root)")
    x = load_dataset("static_mnist", root=args.data_root).train[: args.points].float()
    model = pv.from_pretrained(args.model)
    result = measure(pv, model, x, args.draws, args.k)
    if args.reference:
        ref = import_revision(args.reference)
        copy = reference_copy(ref, model, args.model)
        for k, v in measure(ref, copy, x, args.draws, args.k).items():
            result["reference_" + k] = v
    result.update(
        model=args.model,
        points=args.points,
        draws=args.draws,
        k=args.k,
        reference=args.reference,
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        threads=torch.get_num_threads(),
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
