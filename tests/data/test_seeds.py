"""Seeds: a negative one is a one-line ConfigError naming the option, not numpy's traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gtcompress.data import load_dataset
from gtcompress.data.csl import generate_csl
from gtcompress.data.sbm import generate_cluster, generate_pattern
from gtcompress.data.tu import random_split_indices
from gtcompress.errors import ConfigError
from gtcompress.train.recipe import DataSpec

MESSAGE = "must be an integer >= 0 (it seeds the data generator and split), got -1"


@pytest.mark.parametrize("name", ["cluster", "pattern", "csl", "tu:NCI1", "molhiv"])
def test_load_dataset_refuses_a_negative_seed_before_any_work(name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_dataset(name, tmp_path / "no-data", size="small", seed=-1, cache_dir=tmp_path / "cache")
    assert str(err.value) == f"seed {MESSAGE}"
    assert not (tmp_path / "cache").exists()  # refused before the cache is touched


def test_generators_and_split_refuse_a_negative_seed() -> None:
    for build in (
        lambda: generate_cluster((1, 1, 1), seed=-1),
        lambda: generate_pattern((1, 1, 1), seed=-1),
        lambda: generate_csl(seed=-1),
        lambda: random_split_indices(10, seed=-1),
    ):
        with pytest.raises(ConfigError, match=f"^{re.escape(f'seed {MESSAGE}')}$"):
            build()


def test_data_spec_refuses_a_negative_seed_on_construction() -> None:
    with pytest.raises(ConfigError) as err:
        DataSpec("cluster", seed=-1)
    assert str(err.value) == f"--seed {MESSAGE}"
    assert DataSpec("cluster", seed=0).seed == 0
