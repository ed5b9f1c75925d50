"""The model card of a pretrained folder (``README.md``): its YAML metadata (the Hugging Face
Hub's ``library_name``, ``tags``, ``datasets``; the card's fields under ``pyrovamp``) and its text
(the numbers, the recipe, the networks of its own, how to load it); for
:func:`pyrovamp.save_pretrained`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["card_text", "plain_card"]


def card_text(config: dict, card: dict) -> str:
    """The model card: YAML metadata (``library_name``, ``tags``, ``datasets`` and the card's
    fields under ``pyrovamp``) and a short text with the numbers and how to load the model."""
    import yaml  # a dependency of huggingface_hub

    model = config["model"]["class"].rsplit(".", 1)[-1]
    prior = config["model"].get("children", {}).get("prior", {}).get("$module", {}).get("class")
    prior = card.get("prior") or (prior or "").rsplit(".", 1)[-1]
    meta: dict[str, Any] = {
        "library_name": "pyrovamp",
        "license": "mit",
        "tags": ["pyrovamp", "pyro", "vae", "variational-autoencoder"]
        + ([prior.lower()] if prior else []),
    }
    data = str(config.get("dataset") or "")
    local = "/" in data or "\\" in data  # your own data: a local path, named by its stem
    data = Path(data).stem if local else data
    if data and not local:
        meta["datasets"] = [data]
    meta["pyrovamp"] = card
    name = card.get("name") or f"{model} with a {prior or 'learnable'} prior"
    lines = [f"# {name}", ""]
    lines.append(
        f"A pyrovamp `{model}` with the `{prior}` prior"
        + (f", trained on `{data}`{' (local data)' if local else ''}." if data else ".")
    )
    rows = [
        ("test log-likelihood, IS", card.get("test_log_likelihood"), card.get("is_num_samples")),
        ("test log-likelihood, AIS", card.get("test_log_likelihood_ais"), None),
        ("test log-likelihood, exact (quadrature)", card.get("test_log_likelihood_exact"), None),
        ("test ELBO", card.get("test_elbo"), None),
    ]
    table = [(w, v, s) for w, v, s in rows if isinstance(v, (int, float))]
    if table:
        lines += ["", "| measure (nats per test image) | value |", "|---|---|"]
        for what, value, s in table:
            lines.append(f"| {what}{f', S={s}' if s else ''} | {value:.2f} |")
    for key, what in (("recipe", "Recipe"), ("hardware", "Hardware"),
                      ("pyrovamp_version", "pyrovamp version")):  # fmt: skip
        if card.get(key):
            lines += ["", f"{what}: {card[key]}"]
    if card.get("commands"):
        lines += ["", "Trained and scored with:", "", "```bash", *card["commands"], "```"]
    if card.get("notes"):
        lines += ["", str(card["notes"])]
    networks = networks_of(config["model"])
    imports = sorted(
        {c.rsplit(".", 1)[0] for c, _ in networks.values() if not c.startswith("pyrovamp.")}
    )
    if networks:
        lines += ["", "Networks of its own (the classes and their constructor arguments):", ""]
        for arg, (cls, args) in networks.items():
            lines.append(f"- `{arg}`: `{cls}({args})`")
    ident = card.get("name") or "FOLDER"
    lines += [
        "",
        "Load it" + (" (the networks' modules imported first):" if imports else ":"),
        "",
        "```python",
        *(f"import {m}" for m in imports),
        "import pyrovamp as pv",
        "",
        f'model = pv.from_pretrained("{ident}")',
        "samples = model.sample(16)",
        "```",
        "",
    ]
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return f"---\n{front}---\n\n" + "\n".join(lines)


def networks_of(model: dict) -> dict[str, tuple[str, str]]:
    """The networks a model was given (``encoder=``, ``decoder=``, ...: arguments holding a
    module): argument -> (class path, its arguments as ``key=value`` text)."""
    out = {}
    for arg, value in (model.get("arguments") or {}).items():
        inner = value.get("$module") if isinstance(value, dict) else None
        if isinstance(inner, dict) and isinstance(inner.get("class"), str):
            args = inner.get("arguments") or {}
            text = ", ".join(f"{k}={json.dumps(v)}" for k, v in args.items())
            out[arg] = (inner["class"], text)
    return out


def plain_card(card: dict) -> dict:
    """The card's fields as YAML-safe values (NumPy and 0-d torch numbers as Python numbers).

    Raises:
        ValueError: a field that is not a number, string, bool, None, list or dict of them.
    """

    def plain(value, key):
        if isinstance(value, (np.generic, torch.Tensor)) and getattr(value, "ndim", 1) == 0:
            return value.item()
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, (list, tuple)):
            return [plain(v, key) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v, key) for k, v in value.items()}
        raise ValueError(f"card field {key!r} is a {type(value).__name__}: not storable in a card")

    return {str(k): plain(v, k) for k, v in card.items()}
