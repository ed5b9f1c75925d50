"""Two-process data parallelism (DDP, gloo) on CPU: each step of two processes on a global batch
is the step of one process on that whole batch, the processes' shards of an epoch are disjoint
and cover it, each process draws from the run's own seeded streams and gives the caller's back,
the sharded test evaluation equals the one-process evaluation, and the command line end to
end."""

import json
import os
import subprocess
import sys
import textwrap

import pyro
import pyro.distributions as dist
import torch

N, DIM, EPOCHS, BATCH, SEED = 16, 8, 2, 8, 5


def _points() -> torch.Tensor:
    """``N`` distinct binary points: the bits of ``0..N-1`` and their complements."""
    bits = (torch.arange(N)[:, None] >> torch.arange(3, -1, -1)) & 1
    return torch.cat([bits, 1 - bits], dim=1).float()


def _index(rows: torch.Tensor) -> list[int]:
    """The indices into :func:`_points` of ``rows``."""
    return (rows[:, :4] * torch.tensor([8.0, 4.0, 2.0, 1.0])).sum(1).long().tolist()


class PointMass(torch.nn.Module):
    """A VAE whose guide is a point mass, ``q(z|x) = delta(enc(x))``: its ELBO has no noise, so
    a data-parallel step can be compared with one process's to float precision. Records, at
    every training step, the indices of its batch, its decoder's weight before the update and
    one draw from torch's global stream."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.enc, self.dec = torch.nn.Linear(DIM, 2), torch.nn.Linear(2, DIM)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
        self.seen: list[list[int]] = []
        self.weights: list[torch.Tensor] = []
        self.draws: list[float] = []

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x)

    def guide(self, x):
        if torch.is_grad_enabled():
            self.seen.append(_index(x))
            self.weights.append(self.dec.weight.detach().clone())
            self.draws.append(float(torch.rand(())))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Delta(self.enc(x)).to_event(1))


def _config(devices: int):
    from pyrovamp.training import TrainConfig

    return TrainConfig(
        epochs=EPOCHS,
        batch_size=BATCH,
        lr=0.5,
        optimizer=torch.optim.SGD,
        patience=None,
        ema_decay=None,
        seed=SEED,
        progress=False,
        logger="none",
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
    )


_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    torch.set_num_threads(1)
    import pyro
    from pyrovamp import HVAE, VAE
    from pyrovamp.infer.importance import log_likelihood
    from pyrovamp.training import fit, sharded_over_processes
    sys.path.insert(0, sys.argv[2])
    from test_ddp import PointMass, _config, _points

    out = sys.argv[1]
    model = PointMass()
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    r = fit(model, _points(), None, _config(2), checkpoint_dir=out)
    rank = r.trainer.global_rank
    assert r.trainer.world_size == 2
    assert torch.equal(torch.get_rng_state(), before), "the caller's stream changed"
    torch.save({"seen": model.seen, "weights": model.weights, "draws": model.draws,
                "final": {k: v.clone() for k, v in model.state_dict().items()}},
               f"{out}/rank{rank}.pt")

    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.9, 0.9, 0.1, 0.1, 0.5, 0.9, 0.2, 0.7])
    t = (torch.rand(21, 8, generator=g) < p).float()
    for kind in ("vae", "hvae"):
        pyro.set_rng_seed(0)
        vae = (VAE((8,), 2, prior="vampprior", num_components=4, hidden_dim=16) if kind == "vae"
               else HVAE((8,), 3, prior="vampprior", num_components=4, hidden_dim=16))

        def fn(part, first_block, block):
            return {"ll": log_likelihood(vae, part, 40, seed=5, batch_size=block,
                                         first_block=first_block)}

        got = sharded_over_processes(fn, t, 4, r.trainer)
        torch.save(got["ll"], f"{out}/ll_{kind}{rank}.pt")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()  # gloo's threads end before the interpreter does
""")


def test_two_process_ddp_steps_as_one_process_on_the_global_batch(tmp_path):
    from pyrovamp import HVAE, VAE
    from pyrovamp.infer.importance import log_likelihood
    from pyrovamp.training import fit

    script = tmp_path / "ddp.py"
    script.write_text(_SCRIPT)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    here = os.path.dirname(os.path.abspath(__file__))
    r = subprocess.run(
        [sys.executable, str(script), str(out), here],
        env=env,
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [torch.load(out / f"rank{i}.pt", weights_only=True) for i in (0, 1)]
    one = PointMass()
    fit(one, _points(), None, _config(1))
    steps = EPOCHS * N // BATCH
    assert len(one.seen) == steps and all(len(s["seen"]) == steps for s in ranks)
    for step in range(steps):
        shards = [set(s["seen"][step]) for s in ranks]
        # each process took half of the global batch, the two halves are the one process's batch
        assert all(len(s) == BATCH // 2 for s in shards) and not shards[0] & shards[1]
        assert shards[0] | shards[1] == set(one.seen[step])
        # the parameters before every step are the one process's (gradients averaged)
        for s in ranks:
            assert torch.allclose(s["weights"][step], one.weights[step], rtol=0, atol=1e-6)
    assert not torch.allclose(one.weights[0], one.weights[-1], atol=1e-3)  # it did train
    for epoch in range(EPOCHS):  # the shards of an epoch cover it
        covered = [i for s in ranks for b in s["seen"][2 * epoch : 2 * epoch + 2] for i in b]
        assert sorted(covered) == list(range(N))
    # every process draws from the run's seeded stream, as the one process does
    assert ranks[0]["draws"] == ranks[1]["draws"] == one.draws
    final = dict(one.state_dict())
    for s in ranks:
        for k, v in s["final"].items():
            assert torch.allclose(v, final[k], rtol=0, atol=1e-6), k
    # the sharded evaluation equals one process's
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.9, 0.9, 0.1, 0.1, 0.5, 0.9, 0.2, 0.7])
    t = (torch.rand(21, 8, generator=g) < p).float()
    for kind in ("vae", "hvae"):
        pyro.set_rng_seed(0)
        vae = (
            VAE((8,), 2, prior="vampprior", num_components=4, hidden_dim=16)
            if kind == "vae"
            else HVAE((8,), 3, prior="vampprior", num_components=4, hidden_dim=16)
        )
        ll0 = torch.load(out / f"ll_{kind}0.pt", weights_only=True)
        assert torch.equal(ll0, torch.load(out / f"ll_{kind}1.pt", weights_only=True))
        expected = log_likelihood(vae, t, 40, seed=5, batch_size=4)
        assert ll0.shape == (21,) and torch.allclose(ll0, expected, rtol=0, atol=1e-9), kind


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
