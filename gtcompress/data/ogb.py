"""OGB graph-property datasets (``ogbg-mol*``) read from the on-disk layout ``ogb`` writes.

``root`` is the dataset folder, e.g. ``.../ogbg_molbace`` holding::

    raw/{edge,edge-feat,node-feat,num-node-list,num-edge-list,graph-label}.csv.gz
    split/scaffold/{train,valid,test}.csv.gz        (0-based graph ids)
    mapping/mol.csv.gz                              (SMILES; not needed here)

Graphs come out exactly as OGB's ``read_graph_pyg(add_inverse_edge=True)`` builds them: each
stored bond ``(i, j)`` becomes the directed pair ``(i, j), (j, i)`` with the same features, which
is also the order :func:`gtcompress.data.molecules.smiles_to_graph` produces. Parsing is numpy
over gzip, no pandas.
"""

from __future__ import annotations

import math
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch

from gtcompress.data.base import DatasetInfo, GraphDataset, Metric, TaskType
from gtcompress.data.molecules import (
    ATOM_FEATURE_DIMS,
    BOND_FEATURE_DIMS,
    atom_feature_spec,
    bond_feature_spec,
)
from gtcompress.data.split_files import read_split_ids, split_paths
from gtcompress.data.tu import folder_hint, line_of, open_text, read_table
from gtcompress.errors import DataFormatError
from gtcompress.graph import GraphBatch

__all__ = ["OGB_MOL_TASKS", "load_ogb"]

# Task type per dataset, from OGB's master.csv.
OGB_MOL_TASKS: dict[str, TaskType] = {
    "ogbg-molbace": "binary",
    "ogbg-molbbbp": "binary",
    "ogbg-molclintox": "binary",
    "ogbg-molhiv": "binary",
    "ogbg-molmuv": "binary",
    "ogbg-molpcba": "binary",
    "ogbg-molsider": "binary",
    "ogbg-moltox21": "binary",
    "ogbg-moltoxcast": "binary",
    "ogbg-molesol": "regression",
    "ogbg-molfreesolv": "regression",
    "ogbg-mollipo": "regression",
}
#: OGB's evaluation metric per task type (its evaluator: ROC-AUC, RMSE, accuracy), and the datasets
#: it scores otherwise: so that a run reports the number OGB's leaderboards compare.
_METRIC: dict[TaskType, Metric] = {"binary": "rocauc", "regression": "rmse", "multiclass": "accuracy"}
_DATASET_METRIC: dict[str, Metric] = {"ogbg-molmuv": "ap", "ogbg-molpcba": "ap"}


def _read_labels(path: Path) -> np.ndarray:
    """``graph-label.csv.gz`` as float64 ``[G, T]``; pandas writes a missing label as an empty field."""
    try:
        return read_table(path, np.float64)
    except DataFormatError as exc:
        if not path.is_file():
            raise
        first_error = exc  # retry with empty fields read as NaN (slower, only for multi-task files)

    def field(s: str) -> float:
        return float(s) if s.strip() else math.nan

    try:
        with open_text(path) as fh:
            return np.loadtxt(fh, delimiter=",", dtype=np.float64, ndmin=2, converters=field)
    except (ValueError, OSError, EOFError, zlib.error):
        raise first_error from None  # names the file and line


def _task_of(name: str, labels: np.ndarray, label_path: Path) -> TaskType:
    """OGB's declared task type when the dataset is known, else binary iff every label is 0/1.

    A known binary dataset whose labels are not all 0/1 is refused: those are another dataset's
    (regression) targets, and training on them would run BCE on log-solubilities and report a
    ROC-AUC of targets thresholded at 0.5, without a word."""
    seen = labels[~np.isnan(labels)]
    binary = bool(np.isin(seen, (0.0, 1.0)).all())
    if name not in OGB_MOL_TASKS:
        return "binary" if binary else "regression"
    task = OGB_MOL_TASKS[name]
    if task == "binary" and not binary:
        other = seen[~np.isin(seen, (0.0, 1.0))][0]
        raise DataFormatError(
            f"{label_path}: label {other:g} is not 0 or 1, but {name} is a binary classification dataset; "
            "is the data root the folder of another (regression) dataset?"
        )
    return task


def _check_folder_name(root: Path, name: str) -> None:
    """Refuse a dataset folder named after another known OGB dataset than the one asked for
    (``--data ogb:ogbg_molbace --data-root .../ogbg_molbbbp``): both are binary with one task, so
    nothing else in the files tells them apart, and the run would train and report on the wrong
    molecules under the asked-for name."""
    held = root.name.lower().replace("_", "-")
    if held in OGB_MOL_TASKS and held != name.lower():
        raise DataFormatError(
            f"{root} holds {held}, not the requested {name}; point the data root at the {name} folder"
        )


def _resolve(root: Path, name: str | None) -> Path:
    """The dataset folder: ``root`` itself, or ``root[/ogb]/<name>`` (``-`` or ``_``) when
    ``root`` is a data root holding several datasets."""
    if (root / "raw").is_dir() or name is None:
        if not root.is_dir():
            raise DataFormatError(f"OGB dataset folder not found: {root}")
        return root
    tried = [root / sub / n for sub in ("", "ogb") for n in dict.fromkeys((name, name.replace("-", "_")))]
    for folder in tried:
        if (folder / "raw").is_dir():
            return folder
    hint = folder_hint(
        [root, root / "ogb"], name, "ogb:", lambda n: n.lower().replace("-", "_"), lambda p: (p / "raw").is_dir()
    )
    raise DataFormatError(
        f"OGB dataset {name!r} not found: no raw/ folder in {root} or {', '.join(map(str, tried))}{hint}"
    )


def load_ogb(root: Path, name: str | None = None, split: str = "scaffold") -> GraphDataset:
    """Load an ``ogbg-mol*`` dataset from its OGB folder ``root`` (see module docstring).

    ``root`` may also be a data root: with ``name`` given, ``root/<name>`` and
    ``root/ogb/<name>`` are tried, ``-`` and ``_`` alike. ``name`` defaults to the folder name
    with ``_`` turned into ``-`` (``ogbg_molbace`` -> ``ogbg-molbace``). ``y`` is float32
    ``[1, T]`` per graph; it may hold NaN where a multi-task dataset lacks a label (the loss must
    mask those). Splits ``train/valid/test`` from ``split/<split>/`` become ``train/val/test``.
    A folder named after another known OGB dataset, or a known binary dataset whose labels are not
    0/1, is refused (the data root points at the wrong dataset).
    """
    root = _resolve(Path(root), name)
    name = (name or root.name).replace("_", "-")
    _check_folder_name(root, name)
    raw = root / "raw"

    edges = read_table(raw / "edge.csv.gz", np.int64, ncols=2)
    edge_feat = read_table(raw / "edge-feat.csv.gz", np.int64, ncols=len(BOND_FEATURE_DIMS))
    node_feat = read_table(raw / "node-feat.csv.gz", np.int64, ncols=len(ATOM_FEATURE_DIMS))
    num_nodes = read_table(raw / "num-node-list.csv.gz", np.int64, ncols=1)[:, 0]
    num_edges = read_table(raw / "num-edge-list.csv.gz", np.int64, ncols=1)[:, 0]
    labels = _read_labels(raw / "graph-label.csv.gz")
    num_graphs = len(num_nodes)
    bad = np.flatnonzero(np.isinf(labels).any(axis=1))  # NaN is a missing label; infinity is no label
    if bad.size:
        path = raw / "graph-label.csv.gz"
        raise DataFormatError(f"{path}, line {line_of(path, bad[0])}: label {labels[bad[0]].tolist()} is infinite")
    empty = np.flatnonzero(num_nodes == 0)
    if empty.size:  # as TU files and SMILES without atoms: a graph without nodes is refused at serving
        path = raw / "num-node-list.csv.gz"
        raise DataFormatError(
            f"{path}, line {line_of(path, empty[0])}: graph {empty[0]} has no nodes; every graph needs at least one"
        )

    if len(num_edges) != num_graphs:
        raise DataFormatError(f"{raw / 'num-edge-list.csv.gz'}: {len(num_edges)} lines, expected {num_graphs}")
    if len(labels) != num_graphs:
        raise DataFormatError(f"{raw / 'graph-label.csv.gz'}: {len(labels)} lines, expected {num_graphs}")
    if (num_nodes < 0).any() or int(num_nodes.sum()) != len(node_feat):
        raise DataFormatError(
            f"{raw / 'node-feat.csv.gz'}: {len(node_feat)} rows, num-node-list sums to {int(num_nodes.sum())}"
        )
    if (num_edges < 0).any() or not int(num_edges.sum()) == len(edges) == len(edge_feat):
        raise DataFormatError(
            f"{raw}: edge.csv.gz has {len(edges)} rows, edge-feat.csv.gz {len(edge_feat)}, "
            f"num-edge-list sums to {int(num_edges.sum())}"
        )
    for feat, dims, fname in (
        (node_feat, ATOM_FEATURE_DIMS, "node-feat"),
        (edge_feat, BOND_FEATURE_DIMS, "edge-feat"),
    ):
        bad = np.flatnonzero(((feat < 0) | (feat >= np.asarray(dims))).any(axis=1))
        if bad.size:
            path = raw / f"{fname}.csv.gz"
            raise DataFormatError(
                f"{path}, line {line_of(path, bad[0])}: {feat[bad[0]].tolist()} outside the OGB feature "
                f"cardinalities {dims}"
            )

    node_ptr = np.concatenate([[0], np.cumsum(num_nodes)])
    edge_ptr = np.concatenate([[0], np.cumsum(num_edges)])
    edge_graph = np.repeat(np.arange(num_graphs), num_edges)
    bad = np.flatnonzero(((edges < 0) | (edges >= num_nodes[edge_graph, None])).any(axis=1))
    if bad.size:
        g = edge_graph[bad[0]]
        raise DataFormatError(
            f"{raw / 'edge.csv.gz'}, line {line_of(raw / 'edge.csv.gz', bad[0])}: edge {edges[bad[0]].tolist()} of "
            f"graph {g} outside its {num_nodes[g]} nodes (ids are local to each graph, 0-based)"
        )

    # add_inverse_edge: bond k -> directed edges 2k (i, j) and 2k+1 (j, i), same features.
    both = np.repeat(edges, 2, axis=0)
    both[1::2] = both[1::2, ::-1]
    edge_index = torch.from_numpy(np.ascontiguousarray(both.T))
    edge_attr = torch.from_numpy(np.repeat(edge_feat, 2, axis=0))
    cuts = (2 * edge_ptr[1:-1]).tolist()
    eis = torch.tensor_split(edge_index, cuts, dim=1)
    eas = torch.tensor_split(edge_attr, cuts)
    xs = torch.tensor_split(torch.from_numpy(node_feat), node_ptr[1:-1].tolist())
    ys = torch.from_numpy(labels.astype(np.float32))
    graphs = [
        GraphBatch(x=xs[g].clone(), edge_index=eis[g].clone(), edge_attr=eas[g].clone(), y=ys[g : g + 1].clone())
        for g in range(num_graphs)
    ]

    split_dir = root / "split" / split
    ids = read_split_ids(split_paths(split_dir), num_graphs, "graph id")
    splits = {ours: [graphs[i] for i in idx.tolist()] for ours, idx in ids.items()}
    unassigned = num_graphs - sum(len(idx) for idx in ids.values())  # the ids are distinct, in range
    if unassigned:
        warnings.warn(f"{split_dir}: {unassigned} graphs are in no split", stacklevel=2)

    task = _task_of(name, labels, raw / "graph-label.csv.gz")
    info = DatasetInfo(
        name=name,
        task_level="graph",
        task=task,
        out_dim=labels.shape[1],
        metric=_DATASET_METRIC.get(name, _METRIC[task]),
        node_features=atom_feature_spec(),
        edge_features=bond_feature_spec(),
    )
    return GraphDataset(info=info, splits=splits)
