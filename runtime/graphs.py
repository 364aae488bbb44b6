"""Per-request pre-processing in numpy: validate, TEDDY-sparsify, batch, build the model's inputs.

This is on every request's path, so each step is a handful of vectorised numpy calls (no Python
loop over nodes or edges) and ``gtc profile`` reports its share of the latency.

Validation happens before anything reaches ONNX Runtime or TensorRT, whose own errors are
unspecific (or worse: an out-of-range ``Gather`` index reads garbage on some providers). Each
failure is a specific :mod:`runtime.errors` class whose message names the tensor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from gtcompress.preprocess.batching import PYG_PE_NAMES, NumpyGraph, graph_ptr, split_by_graph, union_graphs
from gtcompress.preprocess.inputs import build_inputs
from gtcompress.preprocess.pe import pe_function
from gtcompress.preprocess.spec import FeatureInput, InputSpec
from runtime.errors import (
    BatchVectorError,
    CategoryError,
    DTypeError,
    EdgeIndexError,
    GraphTooLargeError,
    InputError,
    NonFiniteError,
    ShapeError,
)
from runtime.spec import ModelSpec, TeddyConfig


@dataclass(frozen=True)
class Limits:
    """Hard maxima of one model call (a TensorRT profile, or the server's); ``None`` = unlimited."""

    max_nodes: int | None = None
    max_edges: int | None = None
    max_graphs: int | None = None

    def check(self, nodes: int, edges: int, graphs: int, what: str = "batch") -> None:
        for name, value, limit, tensor in (
            ("nodes", nodes, self.max_nodes, "x"),
            ("edges", edges, self.max_edges, "edge_index"),
            ("graphs", graphs, self.max_graphs, "batch"),
        ):
            if limit is not None and value > limit:
                raise GraphTooLargeError(tensor, f"{what} has {value} {name}, more than the maximum {limit}")


@dataclass
class Prepared:
    """The model's inputs for a disjoint union, and how to split its output back per item."""

    inputs: dict[str, np.ndarray]
    nodes: list[int]  # nodes of each item (request or graph)
    graphs: list[int]  # graphs of each item

    @property
    def num_nodes(self) -> int:
        return int(sum(self.nodes))

    @property
    def num_graphs(self) -> int:
        return int(sum(self.graphs))


#: Key of a graph's PE given as one array rather than a dict of kinds (a PyG ``Data.pe``): the model's
#: one PE kind, once :func:`validate_graph` knows the model.
UNNAMED_PE = "pe"


def as_numpy_graph(obj: Any) -> NumpyGraph:
    """A :class:`NumpyGraph` from itself, a mapping, or any object with ``x``/``edge_index`` attributes
    (a PyTorch Geometric ``Data``: tensors are converted with ``.numpy()``, torch is never imported).

    Positional encodings come from a ``pe`` dict, or else from PyG's attribute names
    (:data:`~gtcompress.preprocess.batching.PYG_PE_NAMES`, as ``GraphBatch.from_pyg`` reads them). A
    ``pe`` that is one array (PyG's GraphGPS example stores ``AddRandomWalkPE(attr_name="pe")`` there)
    is kept under :data:`UNNAMED_PE` until :func:`named_pe` knows the model's kind for it."""
    if isinstance(obj, NumpyGraph):
        return obj

    def get(name: str) -> Any:
        v = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
        if v is not None and not isinstance(v, np.ndarray) and hasattr(v, "numpy"):
            v = v.detach().cpu().numpy() if hasattr(v, "detach") else v.numpy()
        return v

    x, ei = get("x"), get("edge_index")
    if x is None or ei is None:
        raise InputError("x" if x is None else "edge_index", f"missing on the graph object {type(obj).__name__}")
    pe_raw = obj.get("pe") if isinstance(obj, dict) else getattr(obj, "pe", None)
    pe = {}
    if isinstance(pe_raw, dict):
        pe = {k: (v.numpy() if hasattr(v, "numpy") and not isinstance(v, np.ndarray) else v) for k, v in pe_raw.items()}
    elif pe_raw is not None:  # one array: dropped, the runtime computed its own and answered otherwise
        pe[UNNAMED_PE] = get("pe")
    if not isinstance(pe_raw, dict) and not isinstance(obj, dict):
        # A PyG object keeps its encodings under its transforms' names (``random_walk_pe``, ...), which
        # GraphBatch.from_pyg reads: ignored here, the runtime computed its own, and the same Data got
        # another answer from GraphSession than from the torch model it was evaluated with.
        for name, ours in PYG_PE_NAMES.items():
            if (v := get(name)) is not None:
                pe[ours] = v
    batch = get("batch")
    # A batch object's count of graphs (GraphBatch, PyG Batch: num_graphs) is kept where its batch vector
    # names fewer, so that validate_graph refuses the graphs without nodes at its end, not loses them.
    count = None if isinstance(obj, dict) or batch is None else getattr(obj, "num_graphs", None)
    named = int(np.asarray(batch)[-1]) + 1 if count is not None and np.size(batch) else 1
    graphs = int(count) if isinstance(count, int | np.integer) and count > named else None
    return NumpyGraph(x=x, edge_index=ei, edge_attr=get("edge_attr"), batch=batch, pe=pe, graphs=graphs)


def _array(value: Any, name: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        try:
            value = np.asarray(value)
        except Exception as e:  # arbitrary objects
            raise DTypeError(name, f"cannot be read as an array ({e})") from None
    return value


def _check_features(a: np.ndarray, fspec: FeatureInput, name: str, rows: int, rows_name: str) -> np.ndarray:
    """dtype, shape ``[rows, dim]``, finiteness or categorical range; returns the array in the spec dtype."""
    dim = fspec.dim
    if rows == 0 and a.size == 0 and a.shape in ((0,), (0, dim)):
        # No rows, e.g. the edge features of a graph without edges written as a list ([]): numpy reads
        # an empty list as float64, which says nothing of the dtype meant.
        return np.zeros((0, dim), dtype=np.dtype(fspec.dtype))
    if a.ndim == 1 and dim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ShapeError(name, f"expected a 2-D array [{rows_name}, {dim}], got shape {list(a.shape)}")
    if a.shape[0] != rows:
        raise ShapeError(name, f"has {a.shape[0]} rows but the graph has {rows} {rows_name}")
    if a.shape[1] != dim:
        raise ShapeError(name, f"expected {dim} feature columns, got {a.shape[1]}")
    if fspec.kind == "categorical":
        if a.dtype.kind not in "iu":
            raise DTypeError(name, f"categorical features must be integers (int64), got {a.dtype}")
        if a.size:
            cards = _cardinalities(fspec.cardinalities)
            if a.min() < 0 or (a >= cards).any():
                bad = (a < 0) | (a >= cards[None, :])
                r, c = (int(v[0]) for v in np.nonzero(bad))
                raise CategoryError(
                    name, f"value {int(a[r, c])} at row {r}, column {c} is outside [0, {int(cards[c])}) of that column"
                )
        return np.ascontiguousarray(a, dtype=np.int64)
    if a.dtype.kind != "f":
        raise DTypeError(name, f"expected floating-point features (float32), got {a.dtype}")
    wide = a
    with np.errstate(over="ignore"):  # a float64 past float32's range: refused by name just below
        a = np.ascontiguousarray(a, dtype=np.float32)
    if a.size and not np.isfinite(a).all():
        r, c = (int(v[0]) for v in np.nonzero(~np.isfinite(a)))
        if np.isfinite(wide[r, c]):  # float64 past float32's range: the cast made it infinite, not the client
            raise NonFiniteError(
                name,
                f"value {float(wide[r, c]):g} at row {r}, column {c} is beyond float32's range "
                f"(±{float(np.finfo(np.float32).max):.4g}), in which the model computes",
            )
        raise NonFiniteError(name, f"non-finite value {a[r, c]} at row {r}, column {c}")
    return a


_CARDS: dict[tuple[int, ...], np.ndarray] = {}


def _cardinalities(cards: Sequence[int]) -> np.ndarray:
    """The spec's cardinalities as an int64 array, made once per spec (this runs per request)."""
    key = tuple(int(c) for c in cards)
    arr = _CARDS.get(key)
    if arr is None:
        arr = _CARDS[key] = np.asarray(key, dtype=np.int64)
        arr.flags.writeable = False
    return arr


def check_batch_vector(batch: Any, n: int, name: str = "batch") -> np.ndarray:
    """``batch [N]`` integer, sorted, starting at 0, no empty graph in between; returned as int64."""
    b = _array(batch, name)
    if b.dtype.kind not in "iu":
        raise DTypeError(name, f"expected integer graph ids (int64), got {b.dtype}")
    if b.ndim != 1 or b.shape[0] != n:
        raise ShapeError(name, f"expected shape [{n}] (one graph id per node), got {list(b.shape)}")
    b = np.ascontiguousarray(b, dtype=np.int64)
    if n:
        if b[0] != 0:
            raise BatchVectorError(name, f"graph ids must start at 0, got {int(b[0])}")
        if b[n - 1] == 0 and not b.any():  # the common request: one graph
            return b
        step = np.diff(b)
        if step.size and ((step < 0) | (step > 1)).any():
            i = int(np.flatnonzero((step < 0) | (step > 1))[0])
            raise BatchVectorError(
                name, f"graph ids must be sorted and consecutive (no empty graph); {int(b[i])} then {int(b[i + 1])}"
            )
    return b


def check_edges_within_graphs(edge_index: np.ndarray, batch: np.ndarray, where: str = "") -> None:
    """Every edge of a disjoint union must join two nodes of the same graph.

    ``edge_index`` holds in-range int64 ids and ``batch`` passed :func:`check_batch_vector`. An edge
    between graphs would make messages cross between unrelated graphs of one request (silently, or a
    crash in the per-graph PE), so it is refused here, where the session and the server both pass."""
    n = batch.shape[0]
    if not edge_index.shape[1] or not n or batch[n - 1] == 0:  # one graph: nothing can cross
        return
    src, dst = batch[edge_index[0]], batch[edge_index[1]]
    cross = src != dst
    if cross.any():
        i = int(np.flatnonzero(cross)[0])
        u, v = int(edge_index[0, i]), int(edge_index[1, i])
        raise EdgeIndexError(
            "edge_index", f"{where}edge {i} ({u} -> {v}) joins graph {int(src[i])} and graph {int(dst[i])}"
        )


def named_pe(pe: Mapping[str, Any], spec: InputSpec, where: str = "") -> dict[str, Any]:
    """``pe`` with a value kept under :data:`UNNAMED_PE` (one array, PyG's ``Data.pe``) named as the
    model's one PE kind, as ``from_pyg`` reads ``batch.pe``; a model with two kinds asks for a dict.

    Both :func:`validate_graph` and :func:`prepare` without validation call it: with only the former
    doing so, ``GraphSession(validate=False)`` dropped such a PE and answered with its own encoding."""
    given = {k: v for k, v in pe.items() if k != UNNAMED_PE}
    unnamed = pe.get(UNNAMED_PE)
    if unnamed is not None and spec.pe and not all(given.get(kind) is not None for kind in spec.pe):
        if len(spec.pe) > 1:
            raise ShapeError(
                "pe",
                f"{where}the graph's pe is one array and the model takes {' and '.join(spec.pe)}: give pe as a "
                f"dict of kind to array, e.g. pe={{{next(iter(spec.pe))!r}: ...}}",
            )
        given[next(iter(spec.pe))] = unnamed  # the model's one kind, as from_pyg reads batch.pe
    return given


def validate_graph(g: NumpyGraph, spec: InputSpec, where: str = "", *, batch_checked: bool = False) -> NumpyGraph:
    """Check one graph (or a disjoint union with ``batch``) against the model's input spec.

    Edges of a union (``batch`` given) must stay inside one graph (:func:`check_edges_within_graphs`).
    Returns the graph in the model's dtypes (int64 indices, float32 or int64 features); PE kinds
    the model does not use and ``edge_attr`` of a model without edge features are dropped.
    ``batch_checked``: ``g.batch`` already went through :func:`check_batch_vector` (the server)."""
    g = as_numpy_graph(g)
    x = _array(g.x, "x")
    if x.ndim == 0:
        raise ShapeError("x", f"{where}expected [num_nodes, {spec.x.dim}], got a scalar")
    n = int(x.shape[0])
    if n == 0:
        raise ShapeError("x", f"{where}a graph needs at least one node")
    x = _check_features(x, spec.x, "x", n, "nodes")
    ei = _array(g.edge_index, "edge_index")
    if ei.size == 0 and ei.dtype.kind in "fiu":
        # A graph without edges written as lists ([[], []] or []): numpy reads an empty list as float64,
        # which carries no dtype; refusing it as "not integer node ids" blamed the user for numpy's default.
        ei = np.zeros((2, 0), dtype=np.int64) if ei.shape == (0,) else ei.astype(np.int64)
    if ei.dtype.kind not in "iu":
        raise DTypeError("edge_index", f"{where}expected integer node ids (int64), got {ei.dtype}")
    if ei.ndim != 2 or ei.shape[0] != 2:
        raise ShapeError("edge_index", f"{where}expected shape [2, num_edges], got {list(ei.shape)}")
    if ei.dtype.kind == "u" and ei.size and int(ei.max()) >= n:  # before int64, where >= 2**63 wraps negative
        col = int(np.flatnonzero((ei >= n).any(axis=0))[0])
        raise EdgeIndexError("edge_index", f"{where}node id {int(ei.max())} out of range for {n} nodes (edge {col})")
    ei = np.ascontiguousarray(ei, dtype=np.int64)
    e = int(ei.shape[1])
    if e:
        lo, hi = int(ei.min()), int(ei.max())
        if lo < 0:
            col = int(np.flatnonzero((ei < 0).any(axis=0))[0])
            raise EdgeIndexError("edge_index", f"{where}negative node id {lo} (edge {col})")
        if hi >= n:
            col = int(np.flatnonzero((ei >= n).any(axis=0))[0])
            raise EdgeIndexError("edge_index", f"{where}node id {hi} out of range for {n} nodes (edge {col})")
    ea = None
    if spec.edge_attr is not None:
        if g.edge_attr is None:
            raise ShapeError("edge_attr", f"{where}the model needs edge features; the graph has none")
        ea = _check_features(_array(g.edge_attr, "edge_attr"), spec.edge_attr, "edge_attr", e, "edges")
    batch = g.batch if g.batch is None or batch_checked else check_batch_vector(g.batch, n)
    if batch is not None:
        check_edges_within_graphs(ei, batch, where)
    named = int(batch[n - 1]) + 1 if batch is not None else 1
    if g.graphs is not None and g.graphs > named:
        # A union counting graphs past its batch vector's last id ends in graphs without nodes
        # (union_graphs, GraphBatch.to_numpy keep them). The returned graph cannot carry them on, so a
        # graph-level answer had fewer rows than graphs sent; refused like an empty graph in a list.
        raise ShapeError(
            "x",
            f"{where}graph {named} of the union has no nodes (it counts {g.graphs} graphs, its batch vector "
            f"names {named}); a graph needs at least one node",
        )
    given = named_pe(g.pe, spec, where)
    pe = {}
    for kind, k in spec.pe.items():
        if kind not in given or given[kind] is None:
            continue
        name = f"pe_{kind}"
        p = _array(given[kind], name)
        if p.dtype.kind != "f":
            raise DTypeError(name, f"{where}expected float32, got {p.dtype}")
        if p.shape != (n, int(k)):
            raise ShapeError(name, f"{where}expected shape [{n}, {k}], got {list(p.shape)}")
        p = np.ascontiguousarray(p, dtype=np.float32)
        if not np.isfinite(p).all():
            raise NonFiniteError(name, f"{where}contains NaN or infinite values")
        pe[kind] = p
    return NumpyGraph(x=x, edge_index=ei, edge_attr=ea, batch=batch, pe=pe)


def apply_teddy(g: NumpyGraph, cfg: TeddyConfig, spec: InputSpec) -> NumpyGraph:
    """TEDDY on one graph (or union): drop its lowest-scoring non-loop edges, forget stale PE.

    A PE kind the record does not recompute (``recompute_pe``) was the original graph's in training
    (the dataset's PE, which ``TeddyEdges`` leaves alone), so one the graph lacks is computed here,
    before the edges go: computed later, with the other inputs, it would be the sparsified graph's."""
    from gtcompress.preprocess.batching import graph_ptr
    from gtcompress.preprocess.pe import pe_function
    from gtcompress.preprocess.teddy import teddy_mask

    if g.num_edges == 0:
        return g
    keep = teddy_mask(g.edge_index, g.num_nodes, cfg.ratio, g.batch, cfg.per_graph, cfg.threshold)
    stale = set(spec.pe) if cfg.recompute_pe is None else set(cfg.recompute_pe)
    pe = {k: v for k, v in g.pe.items() if k not in stale}
    unsparsified = [k for k in spec.pe if k not in stale and k not in pe]
    if unsparsified:
        ptr = graph_ptr(g.batch, g.num_nodes, g.num_graphs)
        pe.update({k: pe_function(k)(g.edge_index, ptr, spec.pe[k]) for k in unsparsified})
    return NumpyGraph(
        x=g.x,
        edge_index=np.ascontiguousarray(g.edge_index[:, keep]),
        edge_attr=None if g.edge_attr is None else np.ascontiguousarray(g.edge_attr[keep]),
        batch=g.batch,
        pe=pe,
    )


def merge_graphs(graphs: Sequence[NumpyGraph]) -> NumpyGraph:
    """Disjoint union of validated items (each may be a union itself); PE kinds some item lacks are
    dropped, since :func:`~gtcompress.preprocess.inputs.build_inputs` then computes them for all."""
    has_attr = [g.edge_attr is not None for g in graphs]
    if any(has_attr) and not all(has_attr):
        raise ShapeError("edge_attr", "either every graph has edge features or none does")
    return union_graphs(graphs, common_pe=True)


def prepare(
    graphs: Sequence[Any],
    model: ModelSpec,
    *,
    validate: bool = True,
    teddy: bool = True,
    limits: Limits | None = None,
) -> Prepared:
    """Validate → TEDDY → disjoint union → every model input (layout, PE). One item per graph given."""
    if len(graphs) == 0:
        raise ShapeError("x", "no graphs given")
    items: list[NumpyGraph] = []
    for i, g in enumerate(graphs):
        where = f"graph {i}: " if len(graphs) > 1 else ""
        if validate:
            g = validate_graph(g, model.spec, where)
        else:  # unchecked, but a PE given as one array is still the model's kind, not dropped
            g = as_numpy_graph(g)
            if UNNAMED_PE in g.pe:
                g = replace(g, pe=named_pe(g.pe, model.spec, where))
        if teddy and model.teddy is not None:
            g = apply_teddy(g, model.teddy, model.spec)
        items.append(g)
    return prepare_validated(items, model, limits)


def fill_partial_pe(items: Sequence[NumpyGraph], spec: InputSpec) -> list[NumpyGraph]:
    """``items`` with each PE kind that some carry and others lack computed for the others.

    The union keeps only the kinds every item carries (:func:`merge_graphs`) and computes the rest for
    all of it, so without this an item's own encoding (a PyG ``Data``'s ``random_walk_pe``, or one
    that :func:`apply_teddy` took from the graph before its edges went) was dropped and replaced
    whenever it shared a call with an item lacking that kind: the same graph got another answer alone
    than batched. Per kind: two items carrying one kind each keep theirs. Kinds no item carries are
    left to the union (one call for all, cheaper than one per item)."""
    out = list(items)
    for kind, k in spec.pe.items():
        carried = [kind in g.pe for g in out]
        if not any(carried) or all(carried):
            continue
        for i, g in enumerate(out):
            if not carried[i]:
                ptr = graph_ptr(g.batch, g.num_nodes, g.num_graphs)
                pe = {**g.pe, kind: pe_function(kind)(g.edge_index, ptr, k)}
                out[i] = NumpyGraph(g.x, g.edge_index, g.edge_attr, g.batch, pe, g.graphs)
    return out


def prepare_validated(items: Sequence[NumpyGraph], model: ModelSpec, limits: Limits | None = None) -> Prepared:
    """:func:`prepare` for items already validated (and sparsified): merge and build inputs. A PE kind
    some items carry is computed for the others first (:func:`fill_partial_pe`)."""
    nodes = [g.num_nodes for g in items]
    graphs = [g.num_graphs for g in items]
    merged = merge_graphs(fill_partial_pe(items, model.spec) if len(items) > 1 else items)
    if limits is not None:
        limits.check(merged.num_nodes, merged.num_edges, sum(graphs))
    return Prepared(build_inputs(merged, model.spec), nodes, graphs)


def split_output(output: np.ndarray, prepared: Prepared, node_level: bool) -> list[np.ndarray]:
    """One array per item: node-level ``[n_i, out]``; graph-level ``[g_i, out]``."""
    return split_by_graph(output, prepared.nodes if node_level else prepared.graphs)


def nonfinite_parts(outs: Sequence[np.ndarray]) -> list[int]:
    """Indices of the per-item outputs of one merged model call that hold NaN or inf.

    Merged graphs are meant to be independent, but they are not numerically isolated: GT's ``dense``
    lowering packs small graphs into shared padded rows, where a graph that overflows the model (valid,
    finite features of 1e30) has NaN keys and values, and ``0 * NaN`` (the zero attention weight across
    graphs) is NaN, so its neighbours in the row come back NaN too. Callers run each index listed here
    again on its own, so an item's answer is what it would be alone; items with finite outputs are kept
    (what leaks across rows is NaN, which stays NaN), so one bad request costs one extra call per item it
    poisoned, not a split of the whole batch."""
    return [k for k, o in enumerate(outs) if not finite_output(o)]


def finite_output(out: np.ndarray) -> bool:
    """Whether a model output holds no NaN or infinity (a non-float output always does)."""
    return out.dtype.kind != "f" or bool(np.isfinite(out).all())
