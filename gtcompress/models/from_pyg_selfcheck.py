"""A check of an import made without ``example=`` (part of :func:`~gtcompress.models.from_pyg.from_pyg`):
a batch of small graphs made up here, run through the PyG model's own ``forward`` when its signature is
the one of PyG's ``examples/graph_gps.py``, ``forward(x, pe, edge_index, edge_attr, batch)`` (``pe`` and
``edge_attr`` optional, any order: it is called by keyword), which models adapted from that example keep,
or takes the batch itself, ``forward(data)`` (its encoding under ``pe`` and under the name PyG's transform
gives it, ``random_walk_pe`` or ``laplacian_eigenvector_pe``).

The import reads modules, not the forward, so a forward in another order than encoders -> layers ->
pooling -> head (the encoding concatenated before the node embedding, the head before the pooling)
imported without a word, its outputs off by 2.4 to 2.6 on the audit's models. Its arguments are known
from the modules (an Embedding takes category ids, a Linear floats of its width, the PE encoder the
kind ``pe_kind`` names, computed as the runtime computes it), but not their layout: a single
categorical column is tried as ``[N, 1]`` then ``[N]``. A forward that takes none of these, or raises on
them, is not checked here (``example=`` is the check that always applies).
"""

from __future__ import annotations

import inspect
import itertools
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gtcompress.data.base import FeatureSpec
from gtcompress.preprocess.batching import PYG_PE_NAMES

__all__ = ["made_up_example"]

#: The parameters of PyG's example forward (taken in any order); ``x``, ``edge_index`` and ``batch`` are required.
_EXAMPLE_PARAMS = ("x", "pe", "edge_index", "edge_attr", "batch")

#: Graph sizes of the made-up batch: a lone node and a graph of no edge among them.
_SIZES = (5, 1, 7, 3, 6)


def _graphs(gen: torch.Generator) -> list[Tensor]:
    """Each graph's ``edge_index``: undirected random trees with a ring closure, the third graph edgeless."""
    out = []
    for i, n in enumerate(_SIZES):
        if n == 1 or i == 2:
            out.append(torch.zeros((2, 0), dtype=torch.long))
            continue
        pairs = [(int(torch.randint(0, k, (1,), generator=gen)), k) for k in range(1, n)] + [(0, n - 1)]
        e = torch.tensor(pairs).T
        out.append(torch.cat([e, e.flip(0)], 1))
    return out


def _features(spec: FeatureSpec, rows: int, gen: torch.Generator, dtype: torch.dtype) -> Tensor:
    """Inputs an encoder of ``spec`` takes: floats of its width, or category ids ``[rows, columns]``."""
    if spec.kind == "float":
        return torch.randn(rows, spec.dim, generator=gen).to(dtype)
    return torch.stack([torch.randint(0, c, (rows,), generator=gen) for c in spec.cardinalities], 1)


def _layouts(t: Tensor, flat_first: bool) -> list[Tensor]:
    """``t`` as the forward may take it: a single column of category ids as ``[rows, 1]`` and as ``[rows]``
    (PyG's example squeezes ``x`` itself but hands ZINC's ``edge_attr`` to an Embedding as ``[E]``: that
    layout first, ``flat_first``)."""
    if t.is_floating_point() or t.dim() != 2 or t.shape[1] != 1:
        return [t]
    return [t.squeeze(1), t] if flat_first else [t, t.squeeze(1)]


def _pe(kind: str, edge_index: Tensor, ptr: Tensor, k: int, dtype: torch.dtype) -> Tensor:
    from gtcompress.preprocess.pe import laplacian_pe, rwse

    ei, p = edge_index.numpy().astype(np.int64), ptr.numpy()
    return torch.from_numpy(rwse(ei, p, k) if kind == "rwse" else laplacian_pe(ei, p, k)).to(dtype)


def _as_object(data: Any, args: dict[str, Any], pe: tuple[str, int] | None) -> Any:
    """The made-up batch as one object for a ``forward(data)``: ``args``' layouts of ``x`` and ``edge_attr``,
    the encoding under ``pe`` (PyG's GPS example) and under the name PyG's transform of its kind gives it."""
    obj = data.clone()
    obj.x = args["x"]
    if args["edge_attr"] is not None:
        obj.edge_attr = args["edge_attr"]
    if pe is not None:
        obj[next(name for name, kind in PYG_PE_NAMES.items() if kind == pe[0])] = obj.pe
    return obj


def made_up_example(
    model: nn.Module,
    node: FeatureSpec,
    edge: FeatureSpec | None,
    pe: tuple[str, int] | None,
    out_rows: str,
    out_dim: int,
) -> tuple[Any, Tensor] | None:
    """``(batch, output)``: a PyG ``Batch`` of made-up graphs and ``model``'s own output on it in eval
    mode, for :func:`~gtcompress.models.from_pyg.from_pyg` to compare its import with; ``None`` where the
    forward's signature is neither the example's nor one batch object, or the forward does not run on such
    inputs. ``pe`` is the
    ``(kind, columns)`` of the PE encoder; ``out_rows`` ``"graph"`` or ``"node"`` and ``out_dim``: the
    output's shape, which an output must have to be taken (a layout the forward misreads without an
    error gives another)."""
    from torch_geometric.data import Batch, Data

    try:
        params = list(inspect.signature(type(model).forward).parameters)[1:]
    except (TypeError, ValueError):
        return None
    whole = len(params) == 1 and params[0] not in _EXAMPLE_PARAMS  # forward(data): the batch object itself
    if not whole and (not set(params) <= set(_EXAMPLE_PARAMS) or not {"x", "edge_index", "batch"} <= set(params)):
        return None
    if not whole and ("pe" in params) != (pe is not None):  # (called by keyword: any order of these names)
        return None
    ref = next((t for t in model.parameters() if t.is_floating_point()), None)
    dtype = ref.dtype if ref is not None else torch.float32
    device = ref.device if ref is not None else torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    graphs = []
    for n, ei in zip(_SIZES, _graphs(gen), strict=True):
        g = Data(x=_features(node, n, gen, dtype), edge_index=ei, num_nodes=n)
        if edge is not None:
            g.edge_attr = _features(edge, int(ei.shape[1]), gen, dtype)
        if pe is not None:
            g.pe = _pe(pe[0], ei, torch.tensor([0, n]), pe[1], dtype)
        graphs.append(g)
    data = Batch.from_data_list(graphs)  # the canonical layout: what the import is run on
    rows = len(_SIZES) if out_rows == "graph" else data.num_nodes
    shapes = {(rows, out_dim)} | ({(rows,)} if out_dim == 1 else set())  # a forward ending in .view(-1)
    xs = _layouts(data.x, flat_first=False)
    eas = _layouts(data.edge_attr, flat_first=True) if edge is not None else [None]
    was_training = model.training
    model.eval()
    try:
        for x, ea in itertools.product(xs, eas):
            args = {"x": x, "pe": data.get("pe"), "edge_index": data.edge_index, "edge_attr": ea, "batch": data.batch}
            on = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in args.items()}
            try:
                with torch.no_grad():
                    out = model(_as_object(data, on, pe).to(device)) if whole else model(**{k: on[k] for k in params})
            except Exception:  # a layout the forward does not take: the next one, else no check
                continue
            if isinstance(out, Tensor) and tuple(out.shape) in shapes:  # garbage from a wrong layout: never
                return data.to(device), out.detach()
    finally:
        model.train(was_training)
    return None
