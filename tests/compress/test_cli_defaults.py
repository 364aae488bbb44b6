"""Each default is written once: the CLI's options and the pipeline's config take the library's.

Every option of ``gtc sparsify``, ``gtc prune`` and ``gtc train`` is either a library config field
(its default must be the field's), an option the library has no field for, or a declared
departure; a new option that is none of these fails here until someone decides which it is.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import typer

from cli.library_values import library_defaults
from cli.main import TRAIN_EPOCHS, app
from gtcompress.compress.prune_config import PruneConfig
from gtcompress.compress.teddy import SparsifyConfig
from gtcompress.models.config import ModelConfig
from gtcompress.pipeline import PipelineConfig
from gtcompress.pipeline.config import RECIPE
from gtcompress.train.loop import TrainConfig
from gtcompress.train.recipe import DataSpec

CLASSES = {
    "gtcompress.compress.teddy": SparsifyConfig,
    "gtcompress.compress.prune_config": PruneConfig,
    "gtcompress.train.loop": TrainConfig,
    "gtcompress.models.config": ModelConfig,
    "gtcompress.train.recipe": DataSpec,
}


def _field_defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def _options(command: str) -> dict[str, Any]:
    """``{python parameter name: default}`` of a ``gtc`` command, as click sees it."""
    group = typer.main.get_command(app)
    return {p.name: p.default for p in group.commands[command].params}  # type: ignore[attr-defined]


@pytest.mark.parametrize("module", sorted(CLASSES))
def test_source_read_defaults_are_the_classes(module: str) -> None:
    """The CLI reads defaults from the source (no torch at start-up); they must be the imported class's."""
    cls = CLASSES[module]
    assert library_defaults(module, cls.__name__) == _field_defaults(cls)


# option -> (class, field, how the option maps the field); options without a field; declared departures
SOURCES: dict[str, dict[str, tuple[type, str, Any]]] = {
    "sparsify": {
        **{n: (SparsifyConfig, n, None) for n in _field_defaults(SparsifyConfig)},
        "global_": (SparsifyConfig, "per_graph", lambda per_graph: not per_graph),
        "time_budget": (SparsifyConfig, "time_budget_s", None),
    },
    "prune": {
        **{n: (PruneConfig, n, None) for n in _field_defaults(PruneConfig)},
        "time_budget": (PruneConfig, "time_budget_s", None),
        "finetune_time_budget": (PruneConfig, "finetune_time_budget_s", None),
    },
    "train": {
        "hidden": (ModelConfig, "hidden", None),
        "layers": (ModelConfig, "num_layers", None),
        "heads": (ModelConfig, "heads", None),
        "dropout": (ModelConfig, "dropout", None),
        "readout": (ModelConfig, "readout", None),
        "batch_size": (TrainConfig, "batch_size", None),
        "lr": (TrainConfig, "lr", None),
        "seed": (TrainConfig, "seed", None),
        "time_budget": (TrainConfig, "time_budget_s", None),
        "size": (DataSpec, "size", None),
    },
}
CLI_ONLY = {
    "sparsify": {"checkpoint", "data", "data_root", "out"},  # data: for a checkpoint that records none
    "prune": {"checkpoint", "data", "data_root", "out", "random", "keep"},  # keep: None, i.e. PruneConfig's {}
    "train": {"data", "out", "data_root", "arch", "pe"},
}
DEPARTURES = {
    # target_flops: --keep ratios are the budget without it: they exclude a FLOP target. weight_sparsity:
    # the checkpoint's own (its share of exactly-zero weights), else PruneConfig's 0.0
    "prune": {"target_flops": None, "weight_sparsity": None},
    "train": {"epochs": TRAIN_EPOCHS},  # TrainConfig.epochs is 50; gtc train keeps its 30
}


@pytest.mark.parametrize("command", sorted(SOURCES))
def test_cli_defaults_are_the_library_defaults(command: str) -> None:
    options = _options(command)
    unclassified = set(options) - set(SOURCES[command]) - CLI_ONLY[command] - set(DEPARTURES.get(command, {}))
    assert not unclassified, f"gtc {command}: options neither from a config class nor declared: {unclassified}"
    for name, default in options.items():
        if name in DEPARTURES.get(command, {}):
            assert default == DEPARTURES[command][name], name
        elif name in SOURCES[command]:
            cls, field, mapping = SOURCES[command][name]
            expected = _field_defaults(cls)[field]
            assert default == (mapping(expected) if mapping else expected), f"gtc {command} --{name}"


def test_pipeline_defaults_are_the_library_defaults_except_its_recipe() -> None:
    cfg = PipelineConfig.default()
    mirrored = {
        ("data", "root"): DataSpec.root,
        ("data", "size"): DataSpec.size,
        ("data", "seed"): DataSpec.seed,
        ("train", "hidden"): ModelConfig.hidden,
        ("train", "layers"): ModelConfig.num_layers,
        ("train", "heads"): ModelConfig.heads,
        ("train", "batch_size"): TrainConfig.batch_size,
        ("train", "lr"): TrainConfig.lr,
        ("train", "seed"): TrainConfig.seed,
        ("prune", "axes"): PruneConfig.axes,
    }
    for (section, key), value in mirrored.items():
        assert cfg[section][key] == value, f"{section}.{key}"
    # null: PruneConfig's own token_keep where the axes hold tokens (a number would add the tokens axis)
    assert cfg["prune"]["token_keep"] is None
    # the recipe is where the pipeline departs from the library on purpose: each entry must depart
    library = {
        ("train", "epochs"): TrainConfig.epochs,
        ("sparsify", "edges"): SparsifyConfig.edges,
        ("sparsify", "epochs"): SparsifyConfig.epochs,
        ("prune", "epochs"): PruneConfig.epochs,
        ("prune", "finetune_epochs"): PruneConfig.finetune_epochs,
        ("prune", "lr"): PruneConfig.lr,
    }
    recipe = {(s, k): v for s, values in RECIPE.items() for k, v in values.items()}
    assert set(recipe) == set(library)
    for where, value in recipe.items():
        assert cfg[where[0]][where[1]] == value != library[where], where


def test_train_offers_the_library_readouts() -> None:
    """``--readout``'s choices are read from the source of ``READOUTS``, as the defaults are."""
    import typing

    from cli.main import Readout
    from gtcompress.models.config import READOUTS

    assert typing.get_args(Readout) == READOUTS
