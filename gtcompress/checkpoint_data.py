"""What a checkpoint records about its data, and what follows from it: the ``dataset`` and
``teddy`` sections of ``config.json`` checked key by key, the data spec a command reads for a
checkpoint (its own dataset and split, or another dataset that the model's inputs must fit), and
the TEDDY sparsification a checkpoint was fine-tuned on, re-applied wherever its data is read.

Apart from :mod:`gtcompress.checkpoint` (the file format: save, read, load), which calls the section
checks when it reads ``config.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gtcompress.errors import CheckpointError, ConfigError, DataMismatchError
from gtcompress.models.config import ModelConfig
from gtcompress.preprocess.teddy import recompute_kinds


def json_kind(v: object) -> str:
    """The JSON name of a parsed value's type, for messages about a hand-edited config.json."""
    if v is None:
        return "null"
    kinds = {bool: "a boolean", dict: "an object", list: "an array", str: "a string", int: "a number"}
    return kinds.get(type(v), "a number")


#: The keys of a checkpoint's ``dataset`` section: :class:`~gtcompress.train.recipe.DataSpec`'s
#: fields, plus ``info`` (the loaded dataset's :class:`~gtcompress.data.base.DatasetInfo`, a record).
DATASET_KEYS = ("name", "root", "size", "seed", "info")
_GENERATED = ("pattern", "cluster", "csl", "molhiv")


def _object_section(
    section: Any, cfg_path: Path, name: str, example: str, allowed: tuple[str, ...], shown: tuple[str, ...] = ()
) -> str:
    """Refuse a section that is not a JSON object or holds a key outside ``allowed`` (the message
    lists ``shown``, default ``allowed``); the prefix its other messages name it by."""
    if not isinstance(section, dict):
        raise CheckpointError(
            f"{cfg_path}: the '{name}' section must be a JSON object like {example}, got {json_kind(section)}"
        )
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise CheckpointError(f"{cfg_path}: {name}.{unknown[0]}: unknown key; expected {', '.join(shown or allowed)}")
    return f"{cfg_path}: {name}"


def check_dataset_section(section: Any, cfg_path: Path) -> None:
    """Refuse a ``dataset`` section a ``DataSpec`` cannot be built from, naming the file and key.

    Every command that reads data for a checkpoint builds ``DataSpec(**section)``: an unknown key
    was a ``TypeError`` traceback, ``"size": 5`` an ``AttributeError`` from deep in the loader, and
    a section that is not an object an ``AttributeError`` too. Absent (or null) is allowed: the
    commands then ask for ``--data``."""
    if section is None:
        return
    where = _object_section(
        section, cfg_path, "dataset", '{"name": "cluster", "size": "small", "seed": 0}', DATASET_KEYS
    )
    name = section.get("name")
    if name is not None:
        if not isinstance(name, str) or not name.strip():
            raise CheckpointError(f"{where}.name must be a dataset name (a non-empty string), got {name!r:.80}")
        lower = name.strip().lower()
        if lower not in _GENERATED and not (lower.startswith(("tu:", "ogb:")) and lower.partition(":")[2]):
            raise CheckpointError(
                f"{where}.name {name!r:.80} is not a dataset; "
                f"expected one of {', '.join(_GENERATED)}, tu:NAME, ogb:NAME"
            )
    root = section.get("root")
    if root is not None and not isinstance(root, str):
        raise CheckpointError(f"{where}.root must be a directory (a string) or null, got {json_kind(root)}")
    if "size" in section:
        from gtcompress.data import parse_size
        from gtcompress.errors import GTCompressError

        size = section["size"]
        if not isinstance(size, str):
            raise CheckpointError(
                f"{where}.size must be a string ('small', 'full' or 'TRAIN,VAL,TEST'), got {json_kind(size)}"
            )
        try:
            parse_size(size)
        except GTCompressError as e:
            raise CheckpointError(f"{where}.size: {e}") from None
        if isinstance(name, str):
            from gtcompress.data import check_size

            try:  # else load_dataset refused the pair later, naming neither config.json nor dataset.size
                check_size(name, size)
            except GTCompressError as e:
                raise CheckpointError(f"{where}.size {size!r}: {e}") from None
    if "seed" in section:
        seed = section["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise CheckpointError(
                f"{where}.seed must be an integer >= 0 (the generator and split seed), got {seed!r:.80}"
            )
    info = section.get("info")
    if info is not None and not isinstance(info, dict):
        raise CheckpointError(f"{where}.info must be a JSON object, got {json_kind(info)}")


def check_teddy_section(section: Any, cfg_path: Path) -> None:
    """Refuse a ``teddy`` section that cannot be honoured, naming the file and key.

    It says how every input of the model must be sparsified; read as absent (or with a misspelt
    ``edges``), the model would be evaluated, pruned or served on graphs it was not trained for, a
    silently wrong answer. Accepted: what ``gtc sparsify`` (``TeddyEdges.to_dict``), the pipeline
    and the runtime (``TeddyConfig.to_dict``, ``ratio`` for ``edges``) write."""
    if section is None:
        return
    keys = ("edges", "per_graph", "threshold", "pe")  # and "ratio" for "edges" (the runtime's name)
    where = _object_section(section, cfg_path, "teddy", '{"edges": 0.3, "per_graph": true}', (*keys, "ratio"), keys)
    key = "edges" if "edges" in section else "ratio"
    ratio = section.get(key)
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0.0 <= ratio < 1.0:
        raise CheckpointError(
            f"{where}.{key} must be the fraction of edges removed, a number in [0, 1), got {ratio!r:.80}"
        )
    per_graph = section.get("per_graph", True)
    if not isinstance(per_graph, bool):
        raise CheckpointError(f"{where}.per_graph must be true or false, got {per_graph!r:.80}")
    threshold = section.get("threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float)):
        raise CheckpointError(f"{where}.threshold must be a number or null, got {threshold!r:.80}")
    if not per_graph and ratio > 0 and threshold is None:
        raise CheckpointError(f"{where}.threshold is missing: global TEDDY (per_graph false) removes edges below it")
    pe = section.get("pe")
    try:
        recompute_kinds(pe)
    except ValueError:
        raise CheckpointError(
            f"{where}.pe must list the PE kinds recomputed on the sparsified graph, got {pe!r:.80}"
        ) from None


def checkpoint_data_spec(meta: Mapping[str, Any], data: str | None = None, root: str | None = None) -> Any:
    """The :class:`~gtcompress.train.recipe.DataSpec` to evaluate (prune, ...) a checkpoint on.

    Default: the dataset the checkpoint records, split as it was (``size``, ``seed``); ``root``
    (``--data-root``) only says where its files are now. ``data`` (``--data``) naming another
    dataset starts from that dataset's defaults: the recorded ``size`` and ``seed`` belong to the
    recorded dataset (a ``size`` of ``"40,12,12"`` is refused by TU datasets). ``None`` when
    nothing names a dataset. ``meta`` is :func:`read_checkpoint_meta`'s (validated)."""
    from gtcompress.train.recipe import DataSpec

    recorded = {k: v for k, v in (meta.get("dataset") or {}).items() if k != "info"}
    if data is not None and not (recorded.get("name") and same_dataset(recorded["name"], data)):
        # another dataset: its own defaults; the recorded root still holds it if it is of the same
        # file-based family (one TU directory holds every TU dataset)
        family = str(recorded.get("name") or "").strip().lower().partition(":")
        same_family = family[1] and data.strip().lower().partition(":")[0] == family[0]
        recorded = {"name": data, **({"root": recorded["root"]} if same_family and recorded.get("root") else {})}
    if root is not None:
        recorded["root"] = root
    if not recorded.get("name"):
        return None
    return DataSpec(**recorded)


def same_dataset(a: str, b: str) -> bool:
    """Whether two dataset names name the same dataset: generated names and the ``tu:``/``ogb:``
    prefix are case-insensitive, as ``load_dataset`` reads them; the name after it is a directory."""
    (pa, sa, na), (pb, sb, nb) = (x.strip().partition(":") for x in (a, b))
    return pa.lower() == pb.lower() and sa == sb and (na == nb if sa else True)


def data_spec_conflicts(meta: Mapping[str, Any], spec: Any) -> list[tuple[str, Any, Any]]:
    """``(key, recorded, given)`` for each of ``name``, ``size``, ``seed`` where ``spec`` (a
    ``DataSpec``) differs from the dataset the checkpoint records; empty when it records none.

    ``root`` is left out: it says where the files are, not which graphs. A different ``seed`` or
    ``size`` is a different split, whose test graphs may be the model's training graphs, except where
    the dataset does not read it (a size preset of TU/OGB/CSL, the seed of OGB and molhiv): a
    checkpoint trained with ``--size full`` on ``tu:NCI1`` was refused for the pipeline's default
    ``small``, which reads the very same split."""
    from gtcompress.data import parse_size

    recorded = meta.get("dataset") or {}
    if not recorded.get("name"):
        return []
    out: list[tuple[str, Any, Any]] = []
    if not same_dataset(recorded["name"], spec.name):
        return [("name", recorded["name"], spec.name)]
    lower = str(spec.name).strip().lower()
    size = recorded.get("size", "small")
    # TU, OGB and CSL read the same graphs at every size preset (explicit counts are refused for them)
    if not lower.startswith(("tu:", "ogb:")) and lower != "csl" and parse_size(size) != parse_size(spec.size):
        out.append(("size", size, spec.size))
    # OGB and molhiv ship their split: the seed picks nothing
    if not lower.startswith("ogb:") and lower != "molhiv" and recorded.get("seed", 0) != spec.seed:
        out.append(("seed", recorded.get("seed", 0), spec.seed))
    return out


def _describe_features(f: Any) -> str:
    if f is None:
        return "none"
    if f.kind == "categorical":
        return f"categorical, cardinalities {list(f.cardinalities)}"
    return f"float, {f.dim} columns"


def load_for_model(spec: Any, config: ModelConfig, what: str, checkpoint: Path | str) -> Any:
    """``spec.load_for(config)`` (a :class:`~gtcompress.train.recipe.DataSpec`), a dataset the model
    fits no layout of refused as ``input_mismatch`` is: ``what`` (``--data tu:MUTAG``) does not fit the
    model of ``checkpoint``. The loader names the widths, only the caller knows the checkpoint."""
    try:
        return spec.load_for(config)
    except DataMismatchError as e:
        raise ConfigError(f"{what} does not fit the model of {checkpoint}: {e}") from None


def input_mismatch(config: ModelConfig, info: Any, task: str | None = None) -> str | None:
    """What of a dataset's inputs and targets (its ``DatasetInfo``) a model built by ``config``
    cannot take, as one phrase naming both sides; ``None`` when it fits.

    A model reads categorical features through embeddings sized by its cardinalities, so a dataset
    whose values may exceed them (or has other columns) is an IndexError mid-evaluation; other
    output sizes or task levels give shape errors or, worse, a metric of mismatched outputs. Edge
    features the model does not take are allowed: it never reads them.

    ``task`` is the task the checkpoint records (``dataset.info.task``), which its config does not
    hold: a binary classifier and a one-target regressor have the same outputs, so without it the
    logits of one were scored as the other's predictions (an MAE of logits, a ROC-AUC of
    regression values) and printed as a valid metric."""
    checks = [
        ("task level", config.task_level, info.task_level, config.task_level == info.task_level),
        *([("task", task, info.task, task == info.task)] if task is not None else []),
        ("outputs (out_dim)", config.out_dim, info.out_dim, config.out_dim == info.out_dim),
        (
            "node features",
            _describe_features(config.node_features),
            _describe_features(info.node_features),
            _features_fit(config.node_features, info.node_features),
        ),
    ]
    if config.edge_features is not None:
        checks.append(
            (
                "edge features",
                _describe_features(config.edge_features),
                _describe_features(info.edge_features),
                info.edge_features is not None and _features_fit(config.edge_features, info.edge_features),
            )
        )
    for what, model_side, data_side, ok in checks:
        if not ok:
            return f"{what}: the model takes {model_side}, {info.name} has {data_side}"
    return None


def recorded_task(meta: Mapping[str, Any]) -> str | None:
    """The task (``multiclass``, ``binary``, ``regression``) of the dataset a checkpoint records in
    ``dataset.info``; ``None`` when it records none (a model imported from PyG)."""
    info = (meta.get("dataset") or {}).get("info")
    task = info.get("task") if isinstance(info, dict) else None
    return task if isinstance(task, str) else None


def _features_fit(model: Any, data: Any) -> bool:
    """Same kind and columns; for categorical columns no value the model has no embedding for."""
    if model.kind != data.kind or model.dim != data.dim:
        return False
    return model.kind != "categorical" or all(
        d <= m for m, d in zip(model.cardinalities, data.cardinalities, strict=True)
    )


def teddy_ratio(meta: Mapping[str, Any]) -> float:
    """The fraction of edges the checkpoint's inputs lose to TEDDY (0 for a dense checkpoint):
    ``edges`` as ``gtc sparsify`` writes it, ``ratio`` as the runtime does."""
    t = meta.get("teddy") or {}
    return float(t.get("edges", t.get("ratio", 0.0)))


def teddy_transform(meta: Mapping[str, Any], config: ModelConfig) -> Any:
    """The :class:`~gtcompress.compress.teddy.TeddyEdges` a TEDDY checkpoint's inputs need (its
    recorded ``teddy`` section), or ``None`` when it removes no edges.

    Its positional encodings are recomputed on the sparsified graph, as they were when it was
    trained: the kinds the section lists under ``pe``, each with the model's own setting; every
    kind of the model when ``pe`` is absent (``SparsifyConfig.recompute_pe`` defaults to true, and
    the runtime reads an absent ``pe`` the same way)."""
    from gtcompress.compress.teddy import TeddyEdges

    ratio = teddy_ratio(meta)
    if ratio <= 0.0:
        return None
    t = meta["teddy"]
    listed = recompute_kinds(t.get("pe"))  # checked when the checkpoint was read
    pe = {k: v for k, v in config.pe.items() if listed is None or k in listed}
    return TeddyEdges(ratio, bool(t.get("per_graph", True)), t.get("threshold"), pe)


def sparsified(dataset: Any, transform: Any) -> Any:
    """``dataset`` with every graph of every split passed through ``transform`` (``None``: as is)."""
    if transform is None:
        return dataset
    from gtcompress.data.base import GraphDataset

    return GraphDataset(dataset.info, {k: [transform(g) for g in gs] for k, gs in dataset.splits.items()})
