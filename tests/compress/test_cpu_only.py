"""Training and compression run on the CPU: a model moved off it by hand is refused in one sentence.

A user who called ``model.cuda()`` before ``prune_model`` met the loaders' CPU graphs in the first layer, and
torch's "Expected all tensors to be on the same device" named neither the model nor the fix. The ``meta``
device stands in for a GPU here: off the CPU, and on every machine."""

from __future__ import annotations

import dataclasses
import re

import pytest

from gtcompress.compress.prune import PruneConfig, prune_model
from gtcompress.compress.teddy import SparsifyConfig, sparsify_model
from gtcompress.errors import ConfigError
from gtcompress.train.loop import TrainConfig, evaluate, train
from tests.compress.conftest import tiny_dataset, tiny_model

OFF = (
    ": the model is on meta; gtcompress's training and compression run on the CPU, with the dataset's graphs: pass "
    "model.cpu() (the result serves on a GPU: gtc serve --device cuda)"
)


def test_a_model_off_the_cpu_is_refused_before_any_step() -> None:
    data = tiny_dataset("graph")
    model = tiny_model("gt", data.info).to("meta")
    calls = {
        "train": lambda: train(model, data, TrainConfig(epochs=1), show_progress=False),
        "gtsp pruning": lambda: prune_model(model, data, PruneConfig(epochs=1, finetune_epochs=0), show_progress=False),
        "sparsify": lambda: sparsify_model(model, data, SparsifyConfig(edges=0.3, epochs=1), show_progress=False),
    }
    for what, call in calls.items():
        with pytest.raises(ConfigError, match=f"^{re.escape(what + OFF)}$"):
            call()
    with pytest.raises(
        ConfigError, match=r"^evaluate: the model is on meta and the graphs on cpu; move one to the other$"
    ):
        evaluate(model, data["val"], data.info)


def test_graphs_off_the_cpu_are_refused_too() -> None:
    data = tiny_dataset("graph")
    model = tiny_model("gt", data.info)
    moved = dataclasses.replace(data, splits={**data.splits, "train": [g.to("meta") for g in data["train"]]})
    with pytest.raises(ConfigError) as e:
        train(model, moved, TrainConfig(epochs=1), show_progress=False)
    assert str(e.value) == (
        "train: the dataset's graphs are on meta; gtcompress's training and compression run on the CPU: give the "
        "graphs as its loaders do, on the CPU"
    )
