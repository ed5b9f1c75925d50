"""``torch.compile`` of the networks against eager mode: one training step of the paper's VampPrior
VAE (or HVAE) on pyrovamp's Lightning + Pyro path, in the same process, rounds interleaved.

Two copies of the model with the same initial parameters; in one, every network module the
model calls (encoders, decoders -- the VampPrior reuses the encoder for its pseudo-inputs) is
compiled in place with ``nn.Module.compile`` (TorchInductor; parameters and ``state_dict`` keys
unchanged), the Pyro model/guide and the ELBO stay eager Python. Rounds alternate (eager for
``--steps`` steps, then compiled); a step's time is the wall time between two consecutive
``on_train_batch_start`` hooks, the medians are over all steps after the first two of each round.
The first compiled round's first steps (the compilation itself) are reported apart as
``compile_seconds``.

Usage: OMP_NUM_THREADS=1 python benchmarks/compile_step.py [--model vae|hvae] [--steps 30]
       [--rounds 3] [--precision 32|bf16-mixed] [--real-data DIR]
       [--mode default|max-autotune-no-cudagraphs]

The last line printed is a JSON object with ``eager_ms``, ``compiled_ms``, ``speedup`` (eager /
compiled), ``compile_seconds`` and the settings.
"""

import argparse
import json
import logging
import pathlib
import statistics
import sys

import lightning.pytorch as pl
import pyro
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from train_step import _StepClock  # noqa: E402

from pyrovamp import HVAE, VAE  # noqa: E402
from pyrovamp.training.config import TrainConfig  # noqa: E402
from pyrovamp.training.data import EpochData, SVIDataModule  # noqa: E402
from pyrovamp.training.plan import SVIModule  # noqa: E402
from pyrovamp.training.runner import quiet_lightning  # noqa: E402

NETWORKS = ("encoder", "encoder_z1", "p_z1", "decoder")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vae", choices=("vae", "hvae"))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--precision", default="bf16-mixed")
    ap.add_argument("--mode", default="default")
    ap.add_argument("--real-data", help="folder with binarized_mnist_valid.amat (else random)")
    args = ap.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    n = args.steps * args.batch_size
    if args.real_data:
        from pyrovamp.data import read_amat

        x_all = read_amat(f"{args.real_data}/binarized_mnist_valid.amat")[:n]
    else:
        x_all = (torch.rand(n, 784) < 0.13).float()

    def make():
        pyro.set_rng_seed(0)
        cls = VAE if args.model == "vae" else HVAE
        return cls(
            (784,),
            40,
            prior="vampprior",
            likelihood="bernoulli",
            hidden_dim=300,
            architecture="gated",
            num_components=500,
            logvar_bounds=(-6.0, 2.0),
        )

    eager, compiled = make(), make()
    compiled.load_state_dict(eager.state_dict())
    names = [k for k in NETWORKS if isinstance(getattr(compiled, k, None), torch.nn.Module)]
    for k in names:
        getattr(compiled, k).compile(mode=args.mode)
    cfg = TrainConfig(
        epochs=1,
        batch_size=args.batch_size,
        lr=5e-4,
        optimizer="adam",
        patience=None,
        progress=False,
        logger="none",
        precision=args.precision,
    )
    modules = {"eager": SVIModule(eager, cfg), "compiled": SVIModule(compiled, cfg)}
    times = {"eager": [], "compiled": []}
    compile_seconds = None
    for r in range(args.rounds):
        for which, module in modules.items():
            clock = _StepClock()
            with quiet_lightning():
                trainer = pl.Trainer(
                    accelerator="cpu",
                    devices=1,
                    max_epochs=1,
                    precision=args.precision,
                    logger=False,
                    callbacks=[clock],
                    enable_checkpointing=False,
                    enable_progress_bar=False,
                    enable_model_summary=False,
                    num_sanity_val_steps=0,
                    limit_val_batches=0,
                    use_distributed_sampler=False,
                )
                trainer.fit(
                    module,
                    datamodule=SVIDataModule(EpochData(x_all), None, args.batch_size, seed=r),
                )
            steps = [t1 - t0 for t0, t1 in zip(clock.starts, clock.starts[1:], strict=False)]
            if which == "compiled" and r == 0:
                compile_seconds = round(sum(steps[:2]) - 2 * statistics.median(steps[2:]), 1)
            times[which] += steps[2:]
            print(
                f"round {r} {which}: median {1000 * statistics.median(steps[2:]):.1f} ms",
                flush=True,
            )
    res = {k + "_ms": round(1000 * statistics.median(v), 3) for k, v in times.items()}
    res.update(
        speedup=round(res["eager_ms"] / res["compiled_ms"], 3),
        compile_seconds=compile_seconds,
        compiled_networks=names,
        model=args.model,
        precision=args.precision,
        mode=args.mode,
        batch_size=args.batch_size,
        steps=args.steps,
        rounds=args.rounds,
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        data="static MNIST validation images" if args.real_data else "random binary",
    )
    print(json.dumps(res))


if __name__ == "__main__":
    main()
