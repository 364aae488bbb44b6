"""TU graph-classification datasets (Morris et al., 2020) read from their original text files.

The result matches PyTorch Geometric's ``TUDataset`` on the same files — same graphs, same edge
order, same label remapping — so numbers stay comparable with published results. By default
categorical labels stay integer columns (our models embed them instead of reading one-hots), and
when duplicate edges carry labels the first label is kept (PyG sums the one-hots, which is
meaningless for a category). For a model that reads PyG's float one-hots (one trained on PyG's
``TUDataset`` and imported with ``from_pyg``), ``model_features`` asks for PyG's layout exactly,
one-hots and their sums included (:func:`pyg_layout`).

Layout of ``root/NAME/`` (node and graph ids are 1-based; each file may also be ``*.txt.gz``):

- ``NAME_A.txt``: one directed edge ``i, j`` per line (undirected graphs list both directions);
- ``NAME_graph_indicator.txt``: the graph id of node ``i`` on line ``i``;
- ``NAME_graph_labels.txt``: the class of graph ``g`` on line ``g``;
- optional ``NAME_node_labels.txt``, ``NAME_edge_labels.txt`` (one line per ``A`` line) and
  ``NAME_node_attributes.txt`` (comma-separated floats).

Parsing goes through numpy's C tokenizer and graphs are cut out with vectorised offsets, so DD
(335k nodes, 1.7M edge lines) loads in about a second.
"""

from __future__ import annotations

import gzip
import io
import math
import re
import warnings
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import numpy as np
import torch

from gtcompress.data.base import DatasetInfo, FeatureSpec, GraphDataset, check_seed
from gtcompress.errors import DataFormatError, DataMismatchError
from gtcompress.graph import GraphBatch

__all__ = ["MAX_DEGREE", "line_of", "load_tu", "open_text", "pyg_layout", "random_split_indices", "read_table"]

# Node feature of datasets without node labels or attributes (IMDB-*): the node degree as a
# category, clipped so rare hubs share one embedding. A common choice for these datasets (PyG's
# ``OneHotDegree`` uses the dataset's maximum degree, 135 for IMDB-BINARY; clipping keeps the
# embedding table small and the same for every dataset).
MAX_DEGREE = 64

SPLIT_NAMES = ("train", "val", "test")


# ---------------------------------------------------------------------------------------- parsing
def open_text(path: Path) -> IO[str]:
    """``path`` as text; ``utf-8-sig`` drops the byte-order mark Windows tools write, which numpy
    would read as part of the first value."""
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")


def read_table(path: Path, dtype: type[np.generic] = np.int64, ncols: int | None = None) -> np.ndarray:
    """Read a comma-separated numeric text file (optionally gzipped) as a 2-D array ``[rows, cols]``.

    Blank lines are skipped. A malformed file raises :class:`DataFormatError` naming the file
    and the 1-based line number: numpy's own messages count rows, not lines, so on failure the
    file is scanned again in Python (only then) to find the offending line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"missing file: {path}")
    try:
        with open_text(path) as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            # An integer column is parsed through a float, with only a DeprecationWarning: "1.9" was
            # read as 1 and "nan" as -2**63. As an error, numpy raises its ValueError instead.
            warnings.filterwarnings("error", ".*Parsing an integer via a float", DeprecationWarning)
            arr = np.loadtxt(fh, delimiter=",", dtype=dtype, ndmin=2, comments=None)
    except (ValueError, UnicodeDecodeError, EOFError, OSError, zlib.error) as exc:
        # zlib.error (a damaged deflate stream in a .gz) is not an OSError: without it here the
        # user got gzip's traceback, naming no file
        raise _locate_error(path, dtype, ncols, exc) from exc
    if arr.size == 0:
        return np.empty((0, ncols or 1), dtype=dtype)
    if ncols is not None and arr.shape[1] != ncols:
        raise DataFormatError(
            f"{path}, line {line_of(path, 0)}: expected {ncols} comma-separated value(s) per line, got {arr.shape[1]}"
        )
    return arr


def line_of(path: Path, row: int) -> int:
    """The 1-based line number of data row ``row`` (0-based) of a file :func:`read_table` read.

    The parser skips empty lines, so a row index is a line number only in a file without them: an
    error naming "line row + 1" pointed above the bad line. The file is scanned again, for error
    messages only."""
    try:
        with open_text(Path(path)) as fh:
            seen = -1
            for lineno, line in enumerate(fh, start=1):
                if line.rstrip("\r\n"):
                    seen += 1
                    if seen == row:
                        return lineno
    except (UnicodeDecodeError, EOFError, OSError, zlib.error):
        pass  # it was read a moment ago: the row index is the best answer left
    return row + 1


# What numpy's loadtxt takes in an integer column (surrounding spaces aside): Python's ``int`` also
# takes "1_000" and non-ASCII digits, which numpy refuses, so ``int`` cannot stand for it here.
_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_INT64 = np.iinfo(np.int64)


def _integer_problem(field: str) -> str | None:
    """Why numpy refused ``field`` in an int64 column, or None where it is one.

    An integral float ("2.0", "1e3") is refused as PyG's ``TUDataset`` refuses it (it reads these
    columns with Python's ``int``), but the message says what to write instead."""
    text = field.strip()
    if _INTEGER.fullmatch(text):
        if _INT64.min <= int(text) <= _INT64.max:
            return None
        return f"{text!r} is outside the int64 range [{_INT64.min}, {_INT64.max}]"
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isfinite(value) and value.is_integer() and _INT64.min <= value <= _INT64.max:
        return f"{text!r} is not an integer (write it as {int(value)}: integer columns take digits only)"
    return f"{text!r} is not an integer"


def _number_problem(field: str) -> str | None:
    """Why numpy refused ``field`` in a float column, or None where it is one (Python's ``float``
    also takes "1_000" and non-ASCII digits, which numpy refuses). Whitespace around the number, a
    no-break space included, is numpy's to strip as it is Python's: only the number itself is checked."""
    text = field.strip()
    try:
        float(text)
    except ValueError:
        return f"{text!r} is not a number"
    if "_" in text or not text.isascii():
        return f"{text!r} is not a number"
    return None


def _locate_error(path: Path, dtype: type[np.generic], ncols: int | None, exc: Exception) -> DataFormatError:
    """Find the first bad line of a file the fast parser rejected (the slow path, errors only)."""
    problem = _integer_problem if np.issubdtype(dtype, np.integer) else _number_problem
    try:
        with open_text(path) as fh:
            expected = ncols
            for lineno, line in enumerate(fh, start=1):
                if not line.rstrip("\r\n"):  # numpy skips empty lines, not lines of spaces
                    continue
                fields = line.rstrip("\r\n").split(",")
                if expected is None:
                    expected = len(fields)
                if len(fields) != expected:
                    return DataFormatError(
                        f"{path}, line {lineno}: expected {expected} comma-separated value(s), "
                        f"got {len(fields)}: {line.strip()!r}"
                    )
                for f in fields:
                    if (why := problem(f)) is not None:
                        return DataFormatError(f"{path}, line {lineno}: {why}")
    except (UnicodeDecodeError, EOFError, OSError, zlib.error) as read_exc:
        return DataFormatError(f"{path}: unreadable ({read_exc})")
    return DataFormatError(f"{path}: malformed ({exc})")


def _find(folder: Path, name: str, part: str, required: bool) -> Path | None:
    """``NAME_part.txt`` or its gzipped twin; a missing required file names the expected path."""
    plain = folder / f"{name}_{part}.txt"
    for candidate in (plain, plain.with_name(plain.name + ".gz")):
        if candidate.is_file():
            return candidate
    if required:
        raise DataFormatError(f"missing TU file: {plain} (or {plain.name}.gz)")
    return None


# ---------------------------------------------------------------------------------------- splits
def random_split_indices(
    num_graphs: int, seed: int = 0, split: Sequence[float] = (0.8, 0.1, 0.1)
) -> dict[str, np.ndarray]:
    """Seeded random train/val/test indices (each sorted); the same seed gives the same split.

    Sizes come from rounding the cumulative fractions, so they always add up to ``num_graphs``
    (188 graphs at 80/10/10 give 150/19/19).
    """
    if len(split) != 3 or any(f < 0 for f in split) or abs(sum(split) - 1.0) > 1e-6:
        raise ValueError(f"split must be three non-negative fractions summing to 1, got {tuple(split)}")
    perm = np.random.default_rng(check_seed(seed)).permutation(num_graphs)
    bounds = [0, *(round(float(c) * num_graphs) for c in np.cumsum(split)[:2]), num_graphs]
    return {k: np.sort(perm[bounds[i] : bounds[i + 1]]) for i, k in enumerate(SPLIT_NAMES)}


# ---------------------------------------------------------------------------------------- loader
def _zero_based(labels: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Shift each label column to start at 0 (PyG's ``x - x.min(0)``); cardinality = max + 1."""
    if labels.shape[0] == 0:
        return labels, [1] * labels.shape[1]
    shifted = labels - labels.min(axis=0, keepdims=True)
    return shifted, [int(c) + 1 for c in shifted.max(axis=0)]


def _one_hot(shifted: np.ndarray, cards: list[int]) -> np.ndarray:
    """PyG's ``one_hot`` of each zero-based label column, the columns' blocks side by side."""
    return np.concatenate([np.eye(c, dtype=np.float32)[shifted[:, j]] for j, c in enumerate(cards)], axis=1)


def pyg_layout(wanted: FeatureSpec | None, cards: list[int]) -> str:
    """How to lay out a TU file's labels (``cards``: the zero-based label columns' cardinalities) for a
    model that takes ``wanted``: ``"one-hot"``, PyG's ``TUDataset``
    default (``use_node_attr=False``: one-hot labels only), where the model takes float columns as
    many as the one-hots; else ``"native"``, our own (categorical labels, or the attributes followed
    by the one-hots, which is PyG's ``use_node_attr=True`` where a file has attributes).

    The model says which it was trained on: its width tells the layouts apart, as node attributes
    add columns to the other. A model of float features that fits neither is refused by
    :func:`load_tu`, naming both widths (:func:`_check_fits_a_layout`); any other misfit is left to
    the caller's check."""
    if wanted is None or wanted.kind != "float" or not cards:
        return "native"
    return "one-hot" if wanted.dim == sum(cards) else "native"


def _describe(spec: FeatureSpec) -> str:
    if spec.kind == "categorical":
        return f"categorical, cardinalities {list(spec.cardinalities)}"
    return f"float, {spec.dim} columns"


def _check_fits_a_layout(what: str, name: str, wanted: FeatureSpec | None, ours: FeatureSpec, cards: list[int]) -> None:
    """Refuse a model taking float ``what`` features (``"node"``/``"edge"``) of a width that is neither
    our layout's (``ours``) nor PyG's one-hots' (``sum(cards)``). Here, not in the caller's generic check
    (``checkpoint_data.input_mismatch``): that one sees the layout loaded only, while the label
    cardinalities that give PyG's width are known here, and a PyG model's user needs that width."""
    if wanted is None or wanted.kind != "float" or not cards:
        return
    if wanted.dim in (sum(cards), ours.dim if ours.kind == "float" else None):
        return
    ours_is = "our layout" + (
        ": attributes, then one-hot labels, PyG's use_node_attr=True" if ours.kind == "float" else ""
    )
    raise DataMismatchError(
        f"tu:{name} {what} features: the model takes float, {wanted.dim} columns; {name} gives "
        f"{_describe(ours)} ({ours_is}) or float, {sum(cards)} columns (PyG's TUDataset: one-hot labels, "
        f"cardinalities {cards})"
    )


def tu_folder(root: Path, name: str) -> Path:
    """The folder of TU dataset ``name``: ``root/name/``, or ``root/TU/name/`` when ``root`` is the
    data root holding ``TU/``."""
    folder = Path(root) / name
    if not folder.is_dir() and (Path(root) / "TU" / name).is_dir():
        folder = Path(root) / "TU" / name
    if not folder.is_dir():
        raise DataFormatError(
            f"TU dataset folder not found: {folder} (nor {Path(root) / 'TU' / name})"
            + folder_hint([Path(root), Path(root) / "TU"], name, "tu:")
        )
    return folder


def folder_hint(
    parents: Sequence[Path],
    name: str,
    prefix: str,
    key: Callable[[str], str] = str.lower,
    usable: Callable[[Path], bool] = Path.is_dir,
) -> str:
    """``"; … did you mean tu:MUTAG (…/MUTAG)?"`` for a ``usable`` dataset folder in ``parents`` whose
    name is ``name`` but for case (and whatever else ``key`` folds), or ``""``.

    Dataset names are folder names, so they are case-sensitive on Linux: without the hint,
    ``--data tu:mutag`` next to ``MUTAG/`` reads as a dataset that is not there."""
    for parent in parents:
        try:
            held = sorted(p for p in parent.iterdir() if p.is_dir())
        except OSError:
            continue
        match = next((p for p in held if p.name != name and key(p.name) == key(name) and usable(p)), None)
        if match is not None:
            return f"; dataset names are case-sensitive: did you mean {prefix}{match.name} ({match})?"
    return ""


def load_tu(
    root: Path,
    name: str,
    seed: int = 0,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    model_features: tuple[FeatureSpec | None, FeatureSpec | None] | None = None,
) -> GraphDataset:
    """Load TU dataset ``name`` from ``root/name/`` (or ``root/TU/name/``) with a seeded random
    80/10/10 split, its features laid out for ``model_features`` (node and edge :class:`FeatureSpec`
    of the model that reads them; :func:`pyg_layout`), by default as below.

    The random split (not the 10-fold CV of the TU literature) is the setting of the GTSP paper
    we reproduce. Graph labels are remapped to ``0..C-1`` in sorted order. Node features:

    - node labels only: categorical int64 ``[N, k]``, each column shifted to start at 0;
    - node attributes present: float32 ``[N, d + sum(cards)]``, the attributes followed by the
      one-hot node labels — PyG's ``TUDataset(use_node_attr=True)`` column order;
    - neither (IMDB-*): the node degree clipped at :data:`MAX_DEGREE`, categorical ``[N, 1]``.

    Edge labels become categorical ``edge_attr [E, k]``. Self loops and duplicate edges are
    removed and edges sorted by (src, dst), like PyG's ``remove_self_loops`` + ``coalesce``.

    Laid out for a model of PyG's one-hots, node labels become float32 one-hots only (attributes
    dropped) and edge labels float32 one-hots, summed over duplicate edges as PyG's ``coalesce`` sums
    them.
    """
    node_want, edge_want = model_features or (None, None)
    folder = tu_folder(root, name)
    path_a = _find(folder, name, "A", required=True)
    path_gi = _find(folder, name, "graph_indicator", required=True)
    path_gl = _find(folder, name, "graph_labels", required=True)
    assert path_a is not None and path_gi is not None and path_gl is not None
    path_nl = _find(folder, name, "node_labels", required=False)
    path_na = _find(folder, name, "node_attributes", required=False)
    path_el = _find(folder, name, "edge_labels", required=False)

    graph_labels = read_table(path_gl, np.int64, ncols=1)[:, 0]
    indicator = read_table(path_gi, np.int64, ncols=1)[:, 0]
    num_graphs, num_nodes = len(graph_labels), len(indicator)
    if num_graphs == 0:
        raise DataFormatError(f"{path_gl}: no graph labels")
    bad = np.flatnonzero((indicator < 1) | (indicator > num_graphs))
    if bad.size:
        raise DataFormatError(
            f"{path_gi}, line {line_of(path_gi, bad[0])}: graph id {indicator[bad[0]]} outside 1..{num_graphs} "
            f"({path_gl.name} has {num_graphs} lines)"
        )
    batch = indicator - 1
    counts = np.bincount(batch, minlength=num_graphs)
    if (counts == 0).any():
        empty = np.flatnonzero(counts == 0)[:5] + 1
        raise DataFormatError(f"{path_gi}: graph(s) {empty.tolist()} have no nodes")

    def node_table(path: Path, dtype: type[np.generic]) -> np.ndarray:
        arr = read_table(path, dtype)
        if arr.shape[0] != num_nodes:
            raise DataFormatError(
                f"{path}: {arr.shape[0]} lines, expected one per node ({num_nodes}, as {path_gi.name})"
            )
        return arr

    node_labels = node_table(path_nl, np.int64) if path_nl is not None else None
    node_attrs = node_table(path_na, np.float64) if path_na is not None else None
    if node_attrs is not None and path_na is not None:
        # numpy reads "nan" and "inf" as numbers: a model fed one trains to a NaN loss, naming no file
        bad = np.flatnonzero(~np.isfinite(node_attrs).all(axis=1))
        if bad.size:
            raise DataFormatError(
                f"{path_na}, line {line_of(path_na, bad[0])}: node attributes must be finite numbers, "
                f"got {node_attrs[bad[0]].tolist()}"
            )

    edges = read_table(path_a, np.int64, ncols=2) - 1
    edge_labels = None
    if path_el is not None:
        edge_labels = read_table(path_el, np.int64)
        if edge_labels.shape[0] != edges.shape[0]:
            raise DataFormatError(
                f"{path_el}: {edge_labels.shape[0]} lines, expected one per edge ({edges.shape[0]}, as {path_a.name})"
            )
    bad = np.flatnonzero(((edges < 0) | (edges >= num_nodes)).any(axis=1))
    if bad.size:
        raise DataFormatError(
            f"{path_a}, line {line_of(path_a, bad[0])}: node id {(edges[bad[0]] + 1).tolist()} outside 1..{num_nodes} "
            f"({path_gi.name} has {num_nodes} lines)"
        )
    src, dst = edges[:, 0], edges[:, 1]
    bad = np.flatnonzero(batch[src] != batch[dst])
    if bad.size:
        edge = (edges[bad[0]] + 1).tolist()
        raise DataFormatError(f"{path_a}, line {line_of(path_a, bad[0])}: edge {edge} joins two different graphs")

    # Nodes of one graph must be contiguous; TU files already are, but reorder if not.
    if num_nodes > 1 and (batch[1:] < batch[:-1]).any():
        order = np.argsort(batch, kind="stable")
        new_id = np.empty_like(order)
        new_id[order] = np.arange(num_nodes)
        batch, src, dst = batch[order], new_id[src], new_id[dst]
        node_labels = None if node_labels is None else node_labels[order]
        node_attrs = None if node_attrs is None else node_attrs[order]

    # remove_self_loops + coalesce: unique (src, dst) pairs sorted by src then dst.
    keep = src != dst
    key, first, pair = np.unique(src[keep] * num_nodes + dst[keep], return_index=True, return_inverse=True)
    src, dst = key // num_nodes, key % num_nodes
    edge_cat = None
    edge_spec = None
    if edge_labels is not None:
        edge_cat, edge_cards = _zero_based(edge_labels)
        if pyg_layout(edge_want, edge_cards) == "one-hot":
            # PyG's coalesce sums the attributes of duplicate edges: here, their one-hots
            hot = _one_hot(edge_cat[keep], edge_cards)
            edge_cat = np.zeros((len(key), hot.shape[1]), np.float32)
            np.add.at(edge_cat, pair, hot)
            edge_spec = FeatureSpec("float", edge_cat.shape[1])
        else:
            edge_cat = np.ascontiguousarray(edge_cat[keep][first])
            edge_spec = FeatureSpec("categorical", edge_cat.shape[1], edge_cards)

    labels = _zero_based(node_labels) if node_labels is not None else None
    if labels is not None and pyg_layout(node_want, labels[1]) == "one-hot":
        x = _one_hot(*labels)
        node_spec = FeatureSpec("float", x.shape[1])
    elif node_attrs is not None:
        parts = [node_attrs] if labels is None else [node_attrs, _one_hot(*labels)]
        x = np.concatenate(parts, axis=1).astype(np.float32)
        node_spec = FeatureSpec("float", x.shape[1])
    elif labels is not None:
        x, cards = labels
        node_spec = FeatureSpec("categorical", x.shape[1], cards)
    else:
        degree = np.bincount(dst, minlength=num_nodes)  # incoming = outgoing: TU graphs are symmetric
        x = np.minimum(degree, MAX_DEGREE).astype(np.int64)[:, None]
        node_spec = FeatureSpec("categorical", 1, [MAX_DEGREE + 1])

    # a model of neither layout: named with both widths here, where the label cardinalities are known
    if labels is not None:
        _check_fits_a_layout("node", name, node_want, node_spec, labels[1])
    if edge_labels is not None and edge_spec is not None:
        _check_fits_a_layout("edge", name, edge_want, edge_spec, edge_cards)

    classes, y = np.unique(graph_labels, return_inverse=True)

    # Cut the disjoint union into graphs: nodes are contiguous per graph and edges are sorted by
    # src, so both are ranges given by offsets.
    node_ptr = np.concatenate([[0], np.cumsum(counts)])
    edge_ptr = np.searchsorted(src, node_ptr)
    offset = node_ptr[batch[src]]
    edge_index = torch.from_numpy(np.stack([src - offset, dst - offset]))
    xs = torch.tensor_split(torch.from_numpy(np.ascontiguousarray(x)), node_ptr[1:-1].tolist())
    eis = torch.tensor_split(edge_index, edge_ptr[1:-1].tolist(), dim=1)
    eas: Sequence[torch.Tensor | None] = (
        [None] * num_graphs
        if edge_cat is None
        else torch.tensor_split(torch.from_numpy(edge_cat), edge_ptr[1:-1].tolist())
    )
    ys = torch.from_numpy(y.astype(np.int64))
    graphs = [
        GraphBatch(
            x=xs[g].clone(),  # own storage: a saved or pickled graph must not drag the union along
            edge_index=eis[g].clone(),
            edge_attr=None if eas[g] is None else eas[g].clone(),  # type: ignore[union-attr]
            y=ys[g : g + 1].clone(),
        )
        for g in range(num_graphs)
    ]

    info = DatasetInfo(
        name=name,
        task_level="graph",
        task="multiclass",
        out_dim=len(classes),
        metric="accuracy",
        node_features=node_spec,
        edge_features=edge_spec,
    )
    parts_idx = random_split_indices(num_graphs, seed, split)
    # a split given a share but left empty by rounding (too few graphs): else training fails at its
    # first evaluation, inside torch.cat(), naming nothing. A share of 0 asks for an empty split.
    empty = [k for (k, idx), f in zip(parts_idx.items(), split, strict=True) if idx.size == 0 and f > 0]
    if empty:
        sizes = "/".join(f"{round(100 * f)}" for f in split)
        raise DataFormatError(
            f"{folder}: {num_graphs} graph(s) leave the {' and '.join(empty)} split(s) empty under the "
            f"seeded {sizes} random split; every split needs at least one graph"
        )
    return GraphDataset(info=info, splits={k: [graphs[i] for i in idx] for k, idx in parts_idx.items()})
