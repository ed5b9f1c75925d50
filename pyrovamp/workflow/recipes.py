"""Training recipes of ``pyrovamp reproduce table1 --recipe NAME``: named, versioned sequences of
``pyrovamp train`` runs (stages), each in its own folder, the later ones starting from the
parameters of the one before.

A recipe is defined once, here (:data:`RECIPES`); a change to what a recipe trains is a new
``version``, so that a folder trained by one version is never continued by another. Each stage
folder holds ``recipe.json`` (:func:`write_recipe_file`): the recipe, its version, the stage, its
index (from 1) and the exact ``pyrovamp train`` command that started the stage.

- ``paper`` (version 1): one stage, the VampPrior paper's protocol (``--preset paper``) with the
  test log-likelihood curve every 25 epochs (``--test-every 25``), in the cell's own folder
  ``OUT/<dataset>_<model>_<prior>`` (Tomczak & Welling 2018, sec. 4).
- ``best`` (version 1), for the MLP models (``vae``, ``hvae``): the settings that gave this
  project's best static-MNIST numbers (docs/results/paper-table.md), in
  ``OUT/<dataset>_<model>_<prior>.best/1-elbo`` and ``.../2-iwae``:

  1. ``elbo``: the fast preset (batch 200, Adam 1e-3, parameter average 0.999) with decoder
     dropout 0.1, early stopping and learning-rate halving on the validation IWAE-20 bound of
     2000 validation images (a bound with K >= 5 agrees with the test log-likelihood, the ELBO
     does not), seed 0;
  2. ``iwae``: started from stage 1's parameters (``--init-from``), fine-tuned on the IWAE-20
     bound (Burda et al. 2016, "Importance Weighted Autoencoders", ICLR) with learning rate
     2.5e-4, no warm-up, validated on IWAE-100 of 1000 images, patience 10, the rate halved
     after 3 epochs without progress.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pyrovamp._io import atomic_write_text
from pyrovamp.workflow.settings import RUN_DEFAULTS

__all__ = [
    "Stage",
    "Recipe",
    "RECIPES",
    "RECIPE_FILE",
    "TEST_EVERY",
    "read_recipe_file",
    "write_recipe_file",
    "check_stage_folder",
]

#: The file of a stage folder that names its recipe, version, stage and command.
RECIPE_FILE = "recipe.json"
#: The ``paper`` recipe's learning curve: the test log-likelihood on a fixed, spread test subset
#: every this many epochs (``pyrovamp train --test-every``; not counted as training time).
TEST_EVERY = 25

# settings a stage may not set: the cell's own, and what reproduce_table1 decides per call
_CELL_KEYS = (
    "dataset",
    "model",
    "prior",
    "init_from",
    "max_minutes",
    "max_points",
    "data_root",
    "device",
    "accelerator",
    "devices",
    "strategy",
)


@dataclass(frozen=True)
class Stage:
    """One ``pyrovamp train`` run of a recipe.

    Attributes:
        name: the stage's name (a word: its folder is ``<index>-<name>``).
        options: the settings of ``pyrovamp train`` this stage sets, keyed as
            :data:`pyrovamp.workflow.settings.RUN_DEFAULTS` (``{"preset": "fast", "dropout":
            0.1}``: ``--preset fast --dropout 0.1``); every other setting takes its default or the
            preset's. Read it, do not change it.
        init_from_previous: start from the parameters of the stage before (``--init-from`` its
            folder) instead of a fresh initialisation.

    Raises:
        ValueError: a name that is not a word, a setting ``pyrovamp train`` does not have, or one
            that belongs to the cell or the call (``dataset``, ``model``, ``prior``,
            ``init_from``, ``max_minutes``, ``data_root``, ...).
    """

    name: str
    options: dict = field(hash=False)
    init_from_previous: bool = False

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"Stage name must be a word (letters, digits, _), got {self.name!r}")
        if not isinstance(self.options, dict):
            raise ValueError(f"Stage options must be a dict, got {type(self.options).__name__}")
        unknown = sorted(set(self.options) - set(RUN_DEFAULTS))
        if unknown:
            raise ValueError(f"Stage {self.name} options: unknown settings {unknown}")
        reserved = sorted(set(self.options) & set(_CELL_KEYS))
        if reserved:
            raise ValueError(
                f"Stage {self.name} options: {reserved} are set per cell and call, not by a stage"
            )


@dataclass(frozen=True)
class Recipe:
    """A named, versioned sequence of stages (:class:`Stage`), each one ``pyrovamp train`` run in
    its own folder, a stage starting when the one before has finished (trained and evaluated).

    Attributes:
        name: the recipe's name (``--recipe NAME``).
        version: its version (an integer from 1), raised whenever what it trains changes; a
            folder of another version is not continued.
        description: one line on what it trains, with its source.
        stages: the stages, in order (the first one may not start from a previous one).
        models: the models the recipe was designed for (``None``: every model of the table).
        in_cell_folder: the one stage runs in the cell's own folder ``OUT/<cell>`` (the folders
            of the table before recipes existed); otherwise stage ``i`` runs in
            ``OUT/<cell>.<name>/<i>-<stage name>``.

    Raises:
        ValueError: no stages, a first stage that starts from a previous one, a version below 1,
            a name that is not a word, or ``in_cell_folder`` with several stages.
    """

    name: str
    version: int
    description: str
    stages: tuple[Stage, ...]
    models: tuple[str, ...] | None = None
    in_cell_folder: bool = False

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"Recipe name must be a word (letters, digits, _), got {self.name!r}")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise ValueError(f"Recipe version must be an integer >= 1, got {self.version!r}")
        stages = tuple(self.stages)
        object.__setattr__(self, "stages", stages)
        if not stages or not all(isinstance(s, Stage) for s in stages):
            raise ValueError(f"Recipe {self.name} stages must be one or more Stage objects")
        if stages[0].init_from_previous:
            raise ValueError(f"Recipe {self.name}: its first stage has no previous stage")
        if self.in_cell_folder and len(stages) != 1:
            raise ValueError(f"Recipe {self.name}: in_cell_folder needs exactly one stage")

    @property
    def label(self) -> str:
        """The recipe as the table names it: ``"paper v1"``, ``"best v1 (2 stages)"``."""
        n = len(self.stages)
        return f"{self.name} v{self.version}" + (f" ({n} stages)" if n > 1 else "")

    def stage_folder(self, cell_folder, index: int) -> Path:
        """The folder of stage ``index`` (from 1) of the cell whose folder is ``cell_folder``
        (``OUT/<dataset>_<model>_<prior>``)."""
        cell_folder = Path(cell_folder)
        if self.in_cell_folder:
            return cell_folder
        stage = self.stages[index - 1]
        return cell_folder.with_name(f"{cell_folder.name}.{self.name}") / f"{index}-{stage.name}"


# the first stage of "best": these settings, with --dataset/--model/--prior, write exactly the
# config.json of the run that gave the VAE + VampPrior -84.13 (docs/results/paper-table.md)
_BEST_ELBO = {
    "preset": "fast",
    "dropout": 0.1,
    "val_bound": "iwae",
    "val_num_samples": 20,
    "val_points": 2000,
    "lr_decay": 0.5,
    "seed": 0,
}

#: The recipes by name (``pyrovamp reproduce table1 --recipe NAME``).
RECIPES = {
    "paper": Recipe(
        "paper",
        1,
        "the VampPrior paper's protocol (Tomczak & Welling 2018, sec. 4; --preset paper), with "
        "the test log-likelihood on 1000 test images every 25 epochs",
        (Stage("paper", {"preset": "paper", "test_every": TEST_EVERY}),),
        in_cell_folder=True,
    ),
    "best": Recipe(
        "best",
        1,
        "the fast preset with decoder dropout 0.1 and early stopping and learning-rate halving "
        "on the validation IWAE-20 bound, then fine-tuning on the IWAE-20 bound (Burda et al. "
        "2016) from its parameters; see docs/results/paper-table.md",
        (
            Stage("elbo", dict(_BEST_ELBO)),
            Stage(
                "iwae",
                {
                    **_BEST_ELBO,
                    "loss": "iwae",
                    "num_particles": 20,
                    "lr": 2.5e-4,
                    "warmup_epochs": 0,
                    "patience": 10,
                    "val_bound": "iwae",
                    "val_num_samples": 100,
                    "val_points": 1000,
                    "lr_decay": 0.5,
                    "lr_patience": 3,
                },
                init_from_previous=True,
            ),
        ),
        models=("vae", "hvae"),
    ),
}


def read_recipe_file(folder) -> dict | None:
    """The ``recipe.json`` of a stage folder; ``None`` when there is none (a folder of the table
    from before recipes, or a stage whose first piece was killed before writing it).

    Raises:
        ValueError: a ``recipe.json`` that is not a JSON object with ``recipe`` and ``version``
            (one line naming the file).
    """
    path = Path(folder) / RECIPE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not readable JSON ({type(e).__name__})") from None
    if not isinstance(data, dict) or "recipe" not in data or "version" not in data:
        raise ValueError(f"{path} is not a recipe file (no recipe and version)")
    return data


def write_recipe_file(folder, recipe: Recipe, index: int, command: str) -> Path:
    """Write ``folder/recipe.json`` (atomically): ``{recipe, version, stage, index, command}``,
    ``command`` being the ``pyrovamp train`` command that started the stage."""
    data = {
        "recipe": recipe.name,
        "version": recipe.version,
        "stage": recipe.stages[index - 1].name,
        "index": index,
        "command": command,
    }
    path = Path(folder) / RECIPE_FILE
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path


def check_stage_folder(folder, recipe: Recipe, index: int) -> dict | None:
    """The ``recipe.json`` of stage ``index`` of ``recipe`` in ``folder`` (``None``: none yet),
    after checking that it names this recipe, version and stage.

    Raises:
        ValueError: ``recipe.json`` names another recipe, version or stage, or is damaged (one
            line naming the folder).
    """
    data = read_recipe_file(folder)
    if data is None:
        return None
    stage = recipe.stages[index - 1].name
    have = (data.get("recipe"), data.get("version"), data.get("stage", stage))
    if have != (recipe.name, recipe.version, stage):
        raise ValueError(
            f"{folder} was trained by recipe {have[0]} v{have[1]} (stage {have[2]}; "
            f"{RECIPE_FILE}), not {recipe.name} v{recipe.version} (stage {stage}): "
            "use another --out or remove the folder"
        )
    return data
