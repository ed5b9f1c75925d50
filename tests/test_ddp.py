"""Two-process data parallelism (DDP, gloo) on CPU: identical parameters on both processes after
training, the sharded test evaluation equal to the one-process evaluation, and the command line
end to end."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

_SCRIPT = textwrap.dedent("""
    import sys, torch, pyro
    torch.set_num_threads(1)
    from pyrovamp import VAE, HVAE
    from pyrovamp.infer.importance import log_likelihood
    from pyrovamp.training import TrainConfig, fit, sharded_over_processes

    out, kind = sys.argv[1], sys.argv[2]
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.9, 0.9, 0.1, 0.1, 0.5, 0.9, 0.2, 0.7])
    x = (torch.rand(128, 8, generator=g) < p).float()
    v = (torch.rand(32, 8, generator=g) < p).float()
    t = (torch.rand(21, 8, generator=g) < p).float()
    pyro.set_rng_seed(0)
    if kind == "vae":
        model = VAE((8,), 2, prior="vampprior", num_components=4, hidden_dim=16)
    else:
        model = HVAE((8,), 3, prior="vampprior", num_components=4, hidden_dim=16)
    r = fit(model, x, v, TrainConfig(epochs=3, batch_size=16, lr=1e-2, patience=None,
                                     ema_decay=0.9, progress=False, logger="none",
                                     accelerator="cpu", devices=2, strategy="ddp"),
            checkpoint_dir=out)
    rank = r.trainer.global_rank
    assert r.trainer.world_size == 2
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, f"{out}/params{rank}.pt")

    def fn(part, first_block, block):
        return {"ll": log_likelihood(model, part, 40, seed=5, batch_size=block,
                                     first_block=first_block)}

    got = sharded_over_processes(fn, t, 4, r.trainer)
    torch.save(got["ll"], f"{out}/ll{rank}.pt")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()  # gloo's threads end before the interpreter does
""")


def _data_t():
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.9, 0.9, 0.1, 0.1, 0.5, 0.9, 0.2, 0.7])
    torch.rand(128, 8, generator=g), torch.rand(32, 8, generator=g)
    return (torch.rand(21, 8, generator=g) < p).float()


@pytest.mark.parametrize("kind", ["vae", "hvae"])
def test_two_process_ddp_keeps_parameters_identical_and_shards_evaluation(tmp_path, kind):
    from pyrovamp import HVAE, VAE
    from pyrovamp.infer.importance import log_likelihood

    script = tmp_path / "ddp.py"
    script.write_text(_SCRIPT)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, str(script), str(out), kind],
        env=env,
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    p0 = torch.load(out / "params0.pt", weights_only=True)
    p1 = torch.load(out / "params1.pt", weights_only=True)
    fresh = (
        VAE((8,), 2, prior="vampprior", num_components=4, hidden_dim=16)
        if kind == "vae"
        else HVAE((8,), 3, prior="vampprior", num_components=4, hidden_dim=16)
    )
    changed = False
    for k in p0:
        assert torch.equal(p0[k], p1[k]), k
        changed |= not torch.equal(p0[k], fresh.state_dict()[k])
    assert changed  # training did move the parameters
    ll0 = torch.load(out / "ll0.pt", weights_only=True)
    assert torch.equal(ll0, torch.load(out / "ll1.pt", weights_only=True))
    fresh.load_state_dict(p0)
    one = log_likelihood(fresh, _data_t(), 40, seed=5, batch_size=4)
    assert ll0.shape == (21,)
    assert torch.allclose(ll0, one, rtol=0, atol=1e-9)


def test_ddp_from_the_command_line(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyrovamp.cli",
            "train",
            "--prior",
            "mog",
            "--epochs",
            "2",
            "--max-points",
            "200",
            "--num-samples",
            "20",
            "--devices",
            "2",
            "--strategy",
            "ddp",
            "--accelerator",
            "cpu",
            "--no-progress",
            "--out",
            str(out),
        ],
        env=env,
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["processes"] == 2 and m["num_test_points"] == 200 and m["epochs_trained"] == 2
    # quiet: the one line saying what trains where, nothing from the libraries
    assert [ln for ln in r.stderr.splitlines() if ln.strip()] == [
        f"training vae with the mog prior on digits -> {out}"
    ], r.stderr
