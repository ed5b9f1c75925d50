"""save_pretrained / from_pretrained: exact round trips from a folder and through
huggingface_hub offline, every model and prior, damaged and foreign files in one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pyrovamp as pv
from pyrovamp._rebuild import build_from_config, module_config
from pyrovamp.errors import CheckpointError
from pyrovamp.pretrained import CARD, CONFIG, WEIGHTS

PRIORS = ["standard", "mog", "vampprior", "gtm", "gtm-vampprior", "flow"]


def _data(n=12, shape=(1, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, *shape, generator=g) > 0.5).float()


def _trained_like(model, seed=0):
    """Move every parameter away from its initial value (a round trip of fresh parameters would
    not show that the weights, rather than the seed, were restored)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model.eval()


def _ll(model, x, seed=3):
    return pv.log_likelihood(model, x, 20, seed=seed)


@pytest.mark.parametrize("prior", PRIORS)
def test_a_vae_round_trips_exactly_through_a_folder(tmp_path, prior):
    torch.manual_seed(0)
    vae = _trained_like(pv.VAE((1, 8, 8), 3, prior=prior, hidden_dim=16, num_components=4))
    vae.save_pretrained(tmp_path / "m", dataset="digits", card={"test_log_likelihood": -1.5})
    torch.manual_seed(123)  # another seed: the rebuilt model's fresh values are overwritten
    back = pv.from_pretrained(tmp_path / "m")
    assert type(back) is pv.VAE and type(back.prior) is type(vae.prior)
    assert not back.training and not any(m.training for m in back.modules())
    x = _data()
    assert torch.equal(_ll(back, x), _ll(vae, x))
    for (k, a), (k2, b) in zip(vae.state_dict().items(), back.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    if hasattr(back.prior, "encoder"):  # still the model's own encoder, not a copy
        assert back.prior.encoder is back.encoder
    assert pv.load_card(tmp_path / "m") == {"test_log_likelihood": -1.5}
    assert json.loads((tmp_path / "m" / CONFIG).read_text())["dataset"] == "digits"


@pytest.mark.parametrize("cls", [pv.HVAE, pv.ConvHVAE, pv.PixelHVAE])
def test_hierarchical_models_round_trip_exactly(tmp_path, cls):
    torch.manual_seed(0)
    model = _trained_like(cls((1, 8, 8), 3, hidden_dim=8, num_components=3, prior="vampprior"))
    model.save_pretrained(tmp_path)
    back = pv.from_pretrained(tmp_path)
    x = _data(4)
    assert type(back) is cls and torch.equal(_ll(back, x), _ll(model, x))


def test_a_prior_assigned_after_construction_and_a_categorical_likelihood_round_trip(tmp_path):
    torch.manual_seed(0)
    vae = pv.VAE((8, 8), 2, prior="standard", likelihood="categorical", num_values=17)
    vae.prior = pv.VampPrior(vae.encoder, 64, num_components=5, init=torch.rand(5, 64) * 16)
    vae.prior = pv.MoGPrior(2, num_components=7, learn_weights=True)
    _trained_like(vae)
    cfg = module_config(vae)
    assert cfg["children"]["prior"]["$module"]["arguments"]["num_components"] == 7
    vae.save_pretrained(tmp_path)
    back = pv.from_pretrained(tmp_path)
    x = torch.randint(0, 17, (6, 8, 8)).float()
    assert isinstance(back.prior, pv.MoGPrior) and torch.equal(_ll(back, x), _ll(vae, x))


def test_a_vampprior_initialised_from_data_stores_no_data_and_uses_the_models_encoder():
    vae = pv.VAE((8, 8), 2, prior="standard")
    data = torch.rand(5, 64)
    vae.prior = pv.VampPrior(vae.encoder, 64, num_components=5, init=data)
    prior = module_config(vae)["children"]["prior"]["$module"]["arguments"]
    assert prior["init"] == "random" and prior["encoder"] == {"$ref": "encoder"}
    rebuilt = build_from_config(module_config(vae))
    assert rebuilt.prior.encoder is rebuilt.encoder


def test_a_model_in_float64_comes_back_in_float64_and_can_be_stored_in_bfloat16(tmp_path):
    vae = _trained_like(pv.VAE((1, 8, 8), 2, prior="vampprior", hidden_dim=64).double())
    vae.save_pretrained(tmp_path / "d")
    assert pv.from_pretrained(tmp_path / "d").encoder.net[0].weight.dtype == torch.float64
    vae.float().save_pretrained(tmp_path / "f")
    vae.save_pretrained(tmp_path / "h", weights_dtype=torch.bfloat16)
    back = pv.from_pretrained(tmp_path / "h")
    w, w0 = back.decoder[0].weight, vae.decoder[0].weight
    assert w.dtype == torch.float32 and torch.equal(w, w0.bfloat16().float())
    size = (tmp_path / "h" / WEIGHTS).stat().st_size
    assert size < 0.6 * (tmp_path / "f" / WEIGHTS).stat().st_size  # about half of float32's


def test_a_truncated_or_foreign_weights_file_is_one_line_naming_the_file(tmp_path):
    vae = pv.VAE((1, 8, 8), 2, prior="vampprior", hidden_dim=8, num_components=4)
    vae.save_pretrained(tmp_path / "a")
    pv.VAE((1, 8, 8), 2, prior="mog", hidden_dim=8).save_pretrained(tmp_path / "b")
    pv.VAE((1, 8, 8), 2, prior="standard", hidden_dim=8).save_pretrained(tmp_path / "c")
    weights = tmp_path / "a" / WEIGHTS
    good = weights.read_bytes()
    for damage in (good[: len(good) // 2], b"not a safetensors file"):
        weights.write_bytes(damage)
        with pytest.raises(CheckpointError, match="not a readable safetensors file") as e:
            pv.from_pretrained(tmp_path / "a")
        assert str(weights) in str(e.value) and "\n" not in str(e.value)
    for other in ("b", "c"):  # other shapes; missing tensors (the prior's)
        shutil.copy(tmp_path / other / WEIGHTS, weights)
        with pytest.raises(CheckpointError, match="weights of another model") as e:
            pv.from_pretrained(tmp_path / "a")
        assert str(weights) in str(e.value) and "\n" not in str(e.value)
    from safetensors.torch import load_file, save_file

    shutil.copy(tmp_path / "b" / WEIGHTS, weights)
    tensors = load_file(weights)
    tensors[next(iter(tensors))][0] = float("nan")  # a damaged file: readable, with a NaN
    save_file(tensors, tmp_path / "b" / WEIGHTS)
    with pytest.raises(CheckpointError, match="holds NaN or infinite values") as e:
        pv.from_pretrained(tmp_path / "b")
    assert str(tmp_path / "b" / WEIGHTS) in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "a" / CONFIG).write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        pv.from_pretrained(tmp_path / "a")
    (tmp_path / "a" / CONFIG).write_text(json.dumps({"format": "other"}))
    with pytest.raises(CheckpointError, match="not a pyrovamp pretrained configuration"):
        pv.from_pretrained(tmp_path / "a")


def test_a_configuration_cannot_build_an_arbitrary_class(tmp_path):
    vae = pv.VAE((1, 8, 8), 2, prior="standard", hidden_dim=8)
    vae.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / CONFIG).read_text())
    cfg["model"]["class"] = "subprocess.Popen"
    (tmp_path / CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="not a rebuildable pyrovamp module class"):
        pv.from_pretrained(tmp_path)


def test_bad_names_and_folders_are_one_line(tmp_path):
    with pytest.raises(ValueError, match="neither a pretrained model of the zoo"):
        pv.from_pretrained("no such model")
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        pv.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="device 'cuda' was asked for"):
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        pv.from_pretrained(tmp_path, device="cuda")


def test_an_unrebuildable_argument_is_named_before_anything_is_written(tmp_path):
    class Custom(torch.nn.Module):
        pass

    vae = pv.VAE((1, 8, 8), 2, prior="standard", hidden_dim=8)
    vae.prior.extra = Custom()  # harmless; what matters is an argument
    mog = pv.MoGPrior(2, num_components=3)
    mog.__dict__["_constructor_arguments"]["init_scale"] = lambda: 0  # a function: not JSON
    vae.prior = mog
    with pytest.raises(ValueError, match="MoGPrior argument 'init_scale' is a function"):
        vae.save_pretrained(tmp_path / "x")
    assert not (tmp_path / "x").exists()


def _fake_hub_cache(cache: Path, repo_id: str, folder: Path, commit: str = "a" * 40) -> None:
    """The layout huggingface_hub's cache keeps for a downloaded model repository."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in folder.iterdir():
        shutil.copy2(f, snap / f.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def test_push_to_hub_then_from_pretrained_by_repo_id_offline(tmp_path, monkeypatch):
    import huggingface_hub
    import huggingface_hub.constants

    uploaded = {}

    def create_repo(self, repo_id, **kw):
        uploaded["created"] = (repo_id, kw.get("private"), kw.get("exist_ok"))

    def upload_folder(self, *, repo_id, folder_path, commit_message=None, **kw):
        files = {p.name for p in Path(folder_path).iterdir()}
        uploaded["files"] = files
        _fake_hub_cache(tmp_path / "hub", repo_id, Path(folder_path))
        return "commit"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    torch.manual_seed(0)
    vae = _trained_like(pv.VAE((1, 8, 8), 2, prior="vampprior", hidden_dim=8, num_components=3))
    assert vae.push_to_hub("someone/tiny-vamp", card={"test_log_likelihood": -2.0}) == "commit"
    assert uploaded["created"] == ("someone/tiny-vamp", None, True)
    assert uploaded["files"] == {WEIGHTS, CONFIG, CARD}
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    back = pv.from_pretrained("someone/tiny-vamp", cache_dir=tmp_path / "hub")
    x = _data(5)
    assert torch.equal(_ll(back, x), _ll(vae, x))
    assert (
        pv.load_card("someone/tiny-vamp", cache_dir=tmp_path / "hub")["test_log_likelihood"] == -2
    )
    with pytest.raises(
        FileNotFoundError,
        match="someone/other: no such folder, and as a Hugging Face Hub repository id not in "
        "the local cache",
    ):
        pv.from_pretrained("someone/other", cache_dir=tmp_path / "hub")


def test_a_repo_id_loads_from_the_cache_with_hf_hub_offline_in_a_fresh_process(tmp_path):
    torch.manual_seed(0)
    vae = _trained_like(pv.VAE((1, 8, 8), 2, prior="gtm", hidden_dim=8))
    vae.save_pretrained(tmp_path / "m")
    _fake_hub_cache(tmp_path / "hub", "someone/gtm", tmp_path / "m")
    x = _data(3)
    torch.save(x, tmp_path / "x.pt")
    expected = _ll(vae, x)
    code = (
        "import torch, pyrovamp as pv;"
        "m = pv.from_pretrained('someone/gtm');"
        f"x = torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True);"
        "print(repr(pv.log_likelihood(m, x, 20, seed=3).tolist()))"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert eval(out.stdout.strip()) == expected.tolist()


class _PlainVAE(pv.VAE):
    """A user's subclass whose constructor takes other arguments and no ``prior``."""

    def __init__(self, hidden=16, /, *, latent=2):
        super().__init__((1, 8, 8), latent, hidden_dim=hidden, prior="vampprior", num_components=3)


def test_a_subclass_with_its_own_constructor_and_positional_only_arguments_round_trips(tmp_path):
    torch.manual_seed(0)
    vae = _trained_like(_PlainVAE(12, latent=3))
    vae.save_pretrained(tmp_path)
    back = pv.from_pretrained(tmp_path)
    x = _data(4)
    assert type(back) is _PlainVAE and back.latent_dim == 3
    assert torch.equal(_ll(back, x), _ll(vae, x))


def test_loading_leaves_the_callers_random_streams_alone(tmp_path):
    pv.VAE((1, 8, 8), 2, prior="vampprior", hidden_dim=8).save_pretrained(tmp_path)
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    pv.from_pretrained(tmp_path)  # its fresh parameters are drawn on the side, then replaced
    assert torch.equal(torch.rand(3), expected)


def test_a_module_assigned_after_construction_or_a_local_class_is_refused_before_writing(
    tmp_path,
):
    vae = pv.VAE((1, 8, 8), 2, prior="standard", hidden_dim=8)
    vae.decoder = torch.nn.Sequential(torch.nn.Linear(2, 64))  # not what the arguments build
    with pytest.raises(ValueError, match="other tensors .* assigned after construction"):
        vae.save_pretrained(tmp_path / "a")

    class LocalPrior(pv.StandardPrior):
        pass

    vae = pv.VAE((1, 8, 8), 2, prior=LocalPrior(2), hidden_dim=8)
    with pytest.raises(ValueError, match="LocalPrior is defined in a script or a function"):
        vae.save_pretrained(tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_configuration_imports_no_module_of_its_choosing(tmp_path):
    if "this" in sys.modules:
        pytest.skip("the module 'this' is already imported")
    pv.VAE((1, 8, 8), 2, prior="standard", hidden_dim=8).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / CONFIG).read_text())
    cfg["model"]["class"] = "this.Nothing"  # importing it prints the Zen of Python
    (tmp_path / CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="its module is not imported"):
        pv.from_pretrained(tmp_path)
    assert "this" not in sys.modules


def test_cards_keep_every_field_and_take_numpy_numbers(tmp_path):
    import numpy as np

    card = {"recipe": "best v1---fine-tuned\n---", "test_elbo": np.float32(-90.5), "n": np.int64(3)}
    pv.VAE((1, 8, 8), 2, prior="standard", hidden_dim=8).save_pretrained(tmp_path, card=card)
    assert pv.load_card(tmp_path) == {
        "recipe": "best v1---fine-tuned\n---",
        "test_elbo": -90.5,
        "n": 3,
    }
    with pytest.raises(ValueError, match="card field 'curve' is a Tensor"):
        pv.VAE((1, 8, 8), 2, prior="standard").save_pretrained(
            tmp_path / "x", card={"curve": torch.zeros(3)}
        )


def test_bad_dtypes_and_constructor_errors_are_one_line(tmp_path):
    vae = pv.VAE((1, 8, 8), 2, prior="standard", hidden_dim=8)
    for bad in ("half-ish", torch.int8):
        with pytest.raises(ValueError, match="weights_dtype must be one of"):
            vae.save_pretrained(tmp_path / "x", weights_dtype=bad)
    assert not (tmp_path / "x").exists()
    vae.save_pretrained(tmp_path / "y", weights_dtype="bfloat16")
    with pytest.raises(ValueError, match="dtype must be one of"):
        pv.from_pretrained(tmp_path / "y", dtype="float64x")
    assert (
        pv.from_pretrained(tmp_path / "y", dtype="float64").decoder[0].weight.dtype == torch.float64
    )
    with pytest.raises(TypeError, match=r"VAE.__init__\(\) missing 1 required positional"):
        pv.VAE()


def test_a_mistyped_folder_is_not_sent_to_the_hub_and_resaving_drops_stale_values(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for typo in ("runs/typo", str(tmp_path / "typo")):  # "runs/typo" has a repo id's form
        with pytest.raises(FileNotFoundError, match="no folder"):
            pv.from_pretrained(typo)
    vae = pv.VAE((1, 8, 8), 2, prior="standard", hidden_dim=8)
    vae.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "log_likelihood_is.npz").write_bytes(b"old")
    (tmp_path / "m" / "notes.txt").write_text("the user's")
    vae.save_pretrained(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {WEIGHTS, CONFIG, CARD, "notes.txt"}


def test_a_run_folder_or_a_file_as_root_is_named_for_what_it_is(tmp_path):
    from pyrovamp import train

    vae = pv.VAE(6, 2, prior="standard", hidden_dim=8)
    x = (torch.rand(64, 6, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    train(vae, x, epochs=1, batch_size=32, progress=False, checkpoint_dir=tmp_path / "run")
    with pytest.raises(FileNotFoundError, match=r"is a run folder \(model.pt\).*load_run"):
        pv.from_pretrained(tmp_path / "run")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="root .*afile is a file, not a folder"):
        pv.load_dataset("static_mnist", root=tmp_path / "afile", download=False)


def test_saving_into_a_run_folder_or_over_another_config_is_refused_before_writing(tmp_path):
    """``model.save_pretrained(RUN)`` would replace the run's ``config.json`` (its settings) and
    break ``--resume``: refused, as is a folder whose ``config.json`` is something else's; a
    mistyped data set is refused when saving, not at the first ``pyrovamp evaluate``."""
    from pyrovamp import train

    vae = pv.VAE(6, 2, prior="standard", hidden_dim=8)
    x = (torch.rand(64, 6, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    run = tmp_path / "run"
    train(vae, x, epochs=1, batch_size=32, progress=False, checkpoint_dir=run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match=r"^folder .*run is a run folder \(model.pt\): its "):
        vae.save_pretrained(run)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    other = tmp_path / "other"
    other.mkdir()
    (other / CONFIG).write_text('{"name": "a tool of its own"}')
    with pytest.raises(ValueError, match=r"holds a config.json that is not a pyrovamp pretrained"):
        vae.save_pretrained(other)
    assert {p.name for p in other.iterdir()} == {CONFIG}
    with pytest.raises(ValueError, match=r"^unknown data set 'digit'; expected one of digits"):
        vae.save_pretrained(tmp_path / "m", dataset="digit")
    assert not (tmp_path / "m").exists()
    vae.save_pretrained(tmp_path / "m", dataset="digits")
    vae.save_pretrained(tmp_path / "m", dataset="digits")  # its own folder: saved again
    with pytest.raises(ValueError, match=r"^device must be a device such as 'cpu'.*got 'gpu'$"):
        pv.from_pretrained(tmp_path / "m", device="gpu")
