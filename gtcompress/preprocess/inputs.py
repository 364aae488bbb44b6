"""The exported model's inputs, built from a graph in numpy: what a deployment runs per request.

An :class:`~gtcompress.preprocess.spec.InputSpec` (stored as JSON in every exported model's
metadata) says which tensors the model takes; :func:`build_inputs` makes them from a
:class:`NumpyGraph`:

* always ``x``, ``edge_index``, ``batch`` and ``node_counts [B]`` (its length carries the number
  of graphs), ``edge_attr`` if the model uses edge features;
* ``pe_<kind>`` for each positional encoding — computed here when the graph does not carry it
  (LapPE needs an eigendecomposition, which has no cheap ONNX form, so PE is pre-processing);
* the attention layout of the chosen lowering (:mod:`gtcompress.preprocess.layouts`).
"""

from __future__ import annotations

import numpy as np

from gtcompress.preprocess.batching import NumpyGraph, graph_ptr
from gtcompress.preprocess.layouts import bucketed_layout, csr_layout, dense_layout, node_counts, padded_layout
from gtcompress.preprocess.pe import pe_function
from gtcompress.preprocess.spec import LAYOUT_INPUTS, FeatureInput, InputSpec


def layout_input_base(name: str) -> str:
    """``nbr_src_2`` -> ``nbr_src``: the kind of a (possibly per-bucket) layout input."""
    head, _, tail = name.rpartition("_")
    return head if head.startswith("nbr_") and tail.isascii() and tail.isdigit() else name


def is_layout_input(name: str) -> bool:
    base = layout_input_base(name)
    return base in ("nbr_node", "nbr_inv") or any(base in names for names in LAYOUT_INPUTS.values())


def _features(values: np.ndarray, fin: FeatureInput, name: str) -> np.ndarray:
    """``x`` or ``edge_attr`` as ``[rows, dim]`` in the spec's dtype.

    Categorical ids given as floats must be whole numbers: the cast to int64 truncates (1.7 became
    id 1, NaN a huge negative id), so a wrong value gave a silently wrong embedding. Integer arrays,
    the usual case, are passed as they are, without looking at their values."""
    a = np.asarray(values)
    if a.ndim == 1:
        a = a[:, None]
    if fin.kind == "categorical" and a.dtype.kind == "f":
        whole = np.isfinite(a) & (a == np.trunc(a))
        if not whole.all():
            first = int(np.flatnonzero(~whole)[0])
            pos = tuple(int(i) for i in np.unravel_index(first, a.shape))
            where = f"row {pos[0]}, column {pos[1]}" if a.ndim == 2 else f"index {pos}"
            raise ValueError(
                f"{name}: categorical features must be whole numbers (ids of int64 embeddings), "
                f"got {float(a.flat[first])!r} at {where}"
            )
    return np.ascontiguousarray(a, dtype=np.dtype(fin.dtype))


def build_inputs(g: NumpyGraph, spec: InputSpec) -> dict[str, np.ndarray]:
    """Every input of the spec for graph (or disjoint union) ``g``, with the dtypes the model expects."""
    n = g.num_nodes
    x = _features(g.x, spec.x, "x")
    batch = np.zeros(n, dtype=np.int64) if g.batch is None else np.ascontiguousarray(g.batch, dtype=np.int64)
    counts = node_counts(batch, n, g.num_graphs)
    edge_index = np.ascontiguousarray(g.edge_index, dtype=np.int64)
    out: dict[str, np.ndarray] = {"x": x, "edge_index": edge_index}
    if spec.edge_attr is not None:
        if g.edge_attr is None:
            raise ValueError("edge_attr: the model needs edge features but the graph has none")
        out["edge_attr"] = _features(g.edge_attr, spec.edge_attr, "edge_attr")
    out["batch"] = batch
    out["node_counts"] = counts
    ptr = None
    for kind, k in spec.pe.items():
        if kind in g.pe:
            out[f"pe_{kind}"] = np.ascontiguousarray(g.pe[kind], dtype=np.float32)
            continue
        ptr = graph_ptr(batch, n, len(counts)) if ptr is None else ptr
        fn = pe_function(kind)
        out[f"pe_{kind}"] = fn(edge_index, ptr, k)
    names = spec.inputs
    if "pad_mask" in names:
        out.update(dense_layout(batch, n, len(counts), pack=spec.packed))
    if "nbr_src" in names:
        out.update(padded_layout(edge_index, n))
    if "nbr_inv" in names:
        out.update(bucketed_layout(edge_index, n, spec.buckets))
    if "rowptr" in names:
        out.update(csr_layout(edge_index, n))
    return {k: out[k] for k in names}
