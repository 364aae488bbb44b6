"""Datasets: the :class:`GraphDataset` contract, generated benchmarks, and one loader by name.

``load_dataset(name)`` is the single entry point the CLI and training code use:

- ``pattern``: SBM-PATTERN, node-level, 2 classes; generated (:mod:`.sbm`), cached.
- ``cluster``: SBM-CLUSTER, node-level, 6 classes; generated (:mod:`.sbm`), cached.
- ``csl``: Circular Skip Link, graph-level, 10 classes; generated (:mod:`.csl`), cached.
- ``molhiv``: ogbg-molhiv (binary, ROC-AUC); files under ``root`` (:mod:`.molecules`).
- ``tu:NAME``: a TUDataset, e.g. ``tu:PROTEINS``; files under ``root`` (:mod:`.tu`).
- ``ogb:NAME``: an OGB graph dataset, e.g. ``ogb:ogbg-molpcba``; files under ``root`` (:mod:`.ogb`).
"""

from __future__ import annotations

import os
from pathlib import Path

from gtcompress.data import csl, sbm
from gtcompress.data.base import (
    DatasetInfo,
    FeatureSpec,
    GraphDataset,
    Metric,
    TaskLevel,
    TaskType,
    add_pe,
    check_seed,
    iterate_batches,
)
from gtcompress.data.cache import cache_path, cached, default_cache_dir
from gtcompress.data.csl import generate_csl
from gtcompress.data.sbm import SBM_PRESETS, generate_cluster, generate_pattern
from gtcompress.errors import ConfigError, GTCompressError

__all__ = [
    "DATASET_NAMES",
    "GENERATED",
    "MOLHIV_SMALL_LIMIT",
    "SBM_PRESETS",
    "DatasetInfo",
    "FeatureSpec",
    "GraphDataset",
    "Metric",
    "TaskLevel",
    "TaskType",
    "add_pe",
    "cache_path",
    "cached",
    "check_data_root",
    "check_dataset_name",
    "check_size",
    "default_cache_dir",
    "default_data_root",
    "generate_cluster",
    "generate_csl",
    "generate_pattern",
    "iterate_batches",
    "load_dataset",
    "parse_size",
]

DATASET_NAMES = ("pattern", "cluster", "csl", "molhiv", "tu:<NAME>", "ogb:<NAME>")
#: The datasets built from a seed and a size: they read no files, so a data root means nothing to them.
GENERATED = ("pattern", "cluster", "csl")
# size="small" for molhiv: molecules read per split (train, val, test); the full set has 41,127.
MOLHIV_SMALL_LIMIT = (4000, 1000, 1000)


def default_data_root() -> Path:
    """Where file-based datasets live when no ``root`` is given: ``$GTCOMPRESS_DATA`` or
    ``<cache dir>/datasets``."""
    env = os.environ.get("GTCOMPRESS_DATA")
    return Path(env).expanduser() if env else default_cache_dir() / "datasets"


def parse_size(size: str) -> tuple[str, tuple[int, int, int] | None]:
    """``"small"`` / ``"full"`` → (preset, None); ``"TRAIN,VAL,TEST"`` → ("custom", counts)."""
    text = size.strip().lower()
    if text in ("small", "full"):
        return text, None
    parts = [p.strip() for p in text.split(",")]
    # ASCII digits only: str.isdigit() also takes '²' or '①', which int() then refused with a traceback
    if len(parts) == 3 and all(p.isascii() and p.isdigit() for p in parts):
        a, b, c = (int(p) for p in parts)
        if min(a, b, c) < 1:  # an empty split trains, validates or tests nothing: say so here, not later
            raise GTCompressError(f"size {size!r}: every split needs at least one graph (TRAIN,VAL,TEST >= 1)")
        return "custom", (a, b, c)
    raise GTCompressError(f"size must be 'small', 'full' or 'TRAIN,VAL,TEST' graph counts, got {size!r}")


def check_dataset_name(name: str) -> str:
    """``name`` if it names a dataset :func:`load_dataset` knows (a ``tu:``/``ogb:`` name is only
    looked up when loaded), else the error it would raise: for checking a config before any work."""
    lower = name.strip().lower()
    if lower in ("pattern", "cluster", "csl", "molhiv"):
        return name
    prefix, sep, dataset = name.strip().partition(":")
    if sep and prefix.lower() in ("tu", "ogb"):
        if not dataset:
            raise GTCompressError(f"dataset name {name!r} needs a name after '{prefix}:'")
        return name
    raise GTCompressError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")


def check_data_root(name: str, root: object, option: str) -> None:
    """Refuse a data root (``option``: ``--data-root``, ``data.root``) given for a generated dataset.

    :func:`load_dataset` never reads it for one, so it was ignored without a word: a user who pointed
    ``--data-root`` at their own copy of the data believed that copy was read (and a checkpoint recorded
    a root that had played no part)."""
    if root is not None and name.strip().lower() in GENERATED:
        raise ConfigError(
            f"{option} {root}: {name} is a generated dataset and reads no files; leave {option} out "
            "(it says where the files of tu:NAME, ogb:NAME and molhiv are)"
        )


def check_size(name: str, size: str) -> None:
    """Refuse explicit split counts for a dataset that keeps its own size or split (csl, tu:NAME,
    ogb:NAME): :func:`load_dataset` raises the same, and a config is checked by this before any work."""
    _, counts = parse_size(size)
    if counts is None:
        return
    lower = name.strip().lower()
    if lower == "csl":
        raise GTCompressError("csl has a fixed size (150 graphs); use size 'small' or 'full'")
    prefix, sep, _ = name.strip().partition(":")
    if sep and prefix.lower() in ("tu", "ogb"):
        # the --size help names molhiv too: an error naming generated datasets only read as if
        # molhiv's counts were refused as well
        raise GTCompressError(
            f"{name}: explicit split sizes are only supported for generated datasets and molhiv; "
            f"{prefix.upper()} datasets keep their own split (leave the size out)"
        )


def load_dataset(
    name: str,
    root: Path | None = None,
    size: str = "small",
    seed: int = 0,
    cache_dir: Path | None = None,
    model_features: tuple[FeatureSpec | None, FeatureSpec | None] | None = None,
) -> GraphDataset:
    """Load a dataset by name (see the module table).

    ``model_features``, the node and edge feature specs of the model the data is for, lays a TU
    dataset's labels out as PyG's ``TUDataset`` does (float one-hots) where that model reads them so
    (:func:`gtcompress.data.tu.pyg_layout`); the other datasets read as PyG's loaders read them already.

    Generated datasets are built from ``seed`` and ``size`` and cached in ``cache_dir`` (default
    :func:`default_cache_dir`). File-based ones read from ``root`` (default
    :func:`default_data_root`); for them ``size`` only matters for ``molhiv`` ("small" reads
    :data:`MOLHIV_SMALL_LIMIT` molecules per split, explicit counts cap each split).
    """
    key = check_dataset_name(name).strip()
    lower = key.lower()
    preset, counts = parse_size(size)
    check_size(name, size)
    seed = check_seed(seed)  # before a cache lookup, a generator or a file is touched

    if lower in ("pattern", "cluster"):
        sizes = counts if counts is not None else SBM_PRESETS[preset][lower]
        params = {"dataset": lower, "sizes": list(sizes), "seed": int(seed), "version": sbm.GENERATOR_VERSION}
        if lower == "pattern":
            return cached(lower, params, lambda: sbm.generate_pattern(sizes, seed), cache_dir)
        return cached(lower, params, lambda: sbm.generate_cluster(sizes, seed), cache_dir)

    if lower == "csl":
        params = {"dataset": "csl", "seed": int(seed), "version": csl.GENERATOR_VERSION}
        return cached("csl", params, lambda: csl.generate_csl(seed), cache_dir)

    # File-based datasets: their loaders are imported lazily (they live in their own modules and
    # may pull optional dependencies such as rdkit or ogb).
    data_root = Path(root).expanduser() if root is not None else default_data_root()
    if lower == "molhiv":
        from gtcompress.data.molecules import load_molhiv

        limit = None if preset == "full" else (counts if counts is not None else MOLHIV_SMALL_LIMIT)
        return load_molhiv(data_root, limit, cache_dir=cache_dir)
    if lower.startswith(("tu:", "ogb:")):
        prefix, _, dataset = key.partition(":")
        if prefix.lower() == "tu":
            from gtcompress.data.tu import load_tu

            return load_tu(data_root, dataset, seed, model_features=model_features)
        from gtcompress.data.ogb import load_ogb

        return load_ogb(data_root, dataset)

    raise GTCompressError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
