"""``evaluate --devices N`` on a CPU: importance sampling (S=5000; or with ``--method ais`` AIS
with ``--num-chains`` chains and ``--num-steps`` temperatures) of the trained zoo model
``static-mnist-vae-vampprior`` on the first ``--points`` real static MNIST test images, by one
process using all of torch's threads and by ``--devices`` processes
(:func:`pyrovamp.workflow.parallel.sharded_estimates`, ``cores // N`` threads each), wall clock
including the processes' start (importing torch, Lightning and pyrovamp), interleaved
``--rounds`` times; and whether the per-image values are identical.

Usage: python benchmarks/processes.py [--points 2000] [--devices 2] [--rounds 1]
       [--method is|ais] [--num-chains 8] [--num-steps 100]
The last line printed is a JSON object with ``speedup`` (one process's seconds over N's).
"""

import argparse
import functools
import json
import pathlib
import statistics
import sys
import time

import torch

import pyrovamp
from pyrovamp import log_likelihood
from pyrovamp.data import read_amat
from pyrovamp.workflow.parallel import Estimate, Processes, sharded_estimates
from pyrovamp.workflow.zoo import _pretrained_model

HERE = pathlib.Path(__file__).resolve().parent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=2000)
    ap.add_argument("--devices", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--model", default="static-mnist-vae-vampprior")
    ap.add_argument("--method", choices=("is", "ais"), default="is")
    ap.add_argument("--num-chains", type=int, default=8)
    ap.add_argument("--num-steps", type=int, default=100)
    ap.add_argument(
        "--data-root", default=str(HERE.parent.parent / "shared" / "data" / "static_mnist")
    )
    args = ap.parse_args()
    test = pathlib.Path(args.data_root) / "binarized_mnist_test.amat"
    if not test.is_file():
        sys.exit(f"{test} is missing: the benchmark runs on real static MNIST test images only")
    x = read_amat(test)[: args.points]
    model = pyrovamp.from_pretrained(args.model)
    processes = Processes(args.devices, "cpu", functools.partial(_pretrained_model, args.model))
    if args.method == "ais":
        options = dict(method="ais", num_chains=args.num_chains, num_steps=args.num_steps)
        estimate = Estimate("ais", seed=0, num_chains=args.num_chains, num_steps=args.num_steps)
        what = f"AIS {args.num_chains} chains x {args.num_steps} steps"
    else:
        options = dict(num_samples=5000)
        estimate = Estimate("is", seed=0, num_samples=5000)
        what = "IS S=5000"
    one_s, many_s = [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        one = log_likelihood(model, x, seed=0, **options)
        one_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        many = sharded_estimates(processes, x, [estimate])[0]
        many_s.append(time.perf_counter() - t0)
    res = {
        "speedup": round(statistics.median(a / b for a, b in zip(one_s, many_s, strict=True)), 3),
        "one_process_seconds": [round(t, 1) for t in one_s],
        "sharded_seconds": [round(t, 1) for t in many_s],
        "method": args.method,
        "devices": args.devices,
        "one_process_threads": torch.get_num_threads(),
        "identical": bool(torch.equal(one, torch.as_tensor(many["log_likelihood"]))),
        # AIS's HMC gradients go through the BLAS's backward products, whose last bit can depend
        # on the thread count (one process of all threads against N of fewer): AIS's values are
        # identical only between processes of the same threads (tests/test_evaluate_devices.py)
        "max_abs_diff": float((one - torch.as_tensor(many["log_likelihood"])).abs().max()),
        "points": x.shape[0],
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "clock": "wall, process start included",
    }
    print(
        f"{what} on {res['points']} images: one process ({res['one_process_threads']} "
        f"threads) {res['one_process_seconds']} s, {args.devices} processes "
        f"{res['sharded_seconds']} s: {res['speedup']}x; identical: {res['identical']} "
        f"(largest difference {res['max_abs_diff']:.2g} nats)"
    )
    print(json.dumps(res))


if __name__ == "__main__":
    main()
