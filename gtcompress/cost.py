r"""Cost accounting, *measured* on a forward pass: parameters, weight bytes and FLOPs.

FLOPs are what the model really executes on a given batch:

* dense ops (``mm``/``addmm``/``bmm``/``matmul`` …, including the padded per-graph attention and
  its padding) are counted by :class:`torch.utils.flop_counter.FlopCounterMode`, the counter
  PyTorch ships (a multiply-add is 2 FLOPs; bias additions, norms, activations and softmax are
  not counted, as usual);
* gather/scatter attention (:func:`gtcompress.nn.attention.sparse_attention`, and the other edge
  layouts: neighbour lists ``padded_attention`` — every slot, padding included — and the fused
  op), which ``FlopCounterMode`` cannot see, is counted explicitly: per edge and head ``2·Dh`` for
  the score :math:`q_i^\top k_j` and ``2·Dh`` for the aggregation :math:`\alpha_e v_j`;
* GINE/GIN message passing (``GPS`` local conv) is counted explicitly: ``E·d`` additions for the
  aggregation, plus ``E·d`` for adding the edge embedding (GINE).

The same function runs on the dense and on the compressed model, so ratios compare like with
like; a pruned head, channel, layer or token is cheaper only if it is really gone from the
computation. Unstructured sparsity (zeros inside dense weight matrices) does **not** reduce these
FLOPs — dense GEMMs multiply the zeros too; it shows up as ``nonzero_params`` only.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from gtcompress.graph import GraphBatch, collate

__all__ = ["Cost", "count_flops", "measure_cost", "param_stats", "reference_batch"]


@dataclass
class Cost:
    params: int
    nonzero_params: int
    weight_bytes: int
    flops: int
    flops_by_kind: dict[str, int] = field(default_factory=dict)
    batch: dict[str, int] = field(default_factory=dict)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzero_params / max(self.params, 1)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sparsity": self.sparsity}


def param_stats(model: nn.Module) -> tuple[int, int, int]:
    """(parameters, non-zero parameters, bytes of parameters and buffers)."""
    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    nbytes += sum(b.numel() * b.element_size() for b in model.buffers())
    return params, nonzero, nbytes


#: the ``flops_by_kind`` keys of attention whose FLOPs grow with the edges (scatter, padded, plugin); a
#: cost without any ran the dense lowering, which computes every pair whatever the edges
EDGE_ATTENTION_KINDS = frozenset({"sparse_attention", "padded_attention", "sparse_graph_attention"})


@contextmanager
def _explicit_counts(model: nn.Module, counts: dict[str, int]) -> Iterator[None]:
    """Count gather/scatter attention and GINE aggregation while the block runs."""
    import gtcompress.nn.attention  # noqa: F401  (so the functions below are in sys.modules)
    from gtcompress.nn.mpnn import GINEConv

    def add(kind: str, n: int) -> None:
        counts[kind] = counts.get(kind, 0) + n

    def edge_count(name: str, args: tuple[Any, ...]) -> int:
        q = args[0]
        h, d = int(q.shape[1]), int(q.shape[2])
        if name == "sparse_attention":  # (q, k, v, edge_index, …)
            return 4 * int(args[3].shape[1]) * h * d
        if name == "padded_attention":  # (q, k, v, nbr_src [N,K], …): every slot is computed
            return 4 * int(args[3].numel()) * h * d
        return 4 * int(args[4].numel()) * h * d  # sparse_graph_attention(q, k, v, rowptr, col, …)

    # Patch the gather/scatter attention functions in every gtcompress module that bound them by
    # name (``from … import``), so whichever layout a layer runs is counted.
    originals: dict[str, Any] = {}
    for mod_name, fn_name in (
        ("gtcompress.nn.attention", "sparse_attention"),
        ("gtcompress.nn.attention", "padded_attention"),
        ("gtcompress.nn.fused", "sparse_graph_attention"),
    ):
        fn = getattr(sys.modules.get(mod_name), fn_name, None)
        if fn is not None:
            originals[fn_name] = fn

    depth = [0]  # the fused op runs the reference inside: count the outermost call only

    def make(fn_name: str, fn: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            if depth[0] == 0:
                add(fn_name, edge_count(fn_name, args))
            depth[0] += 1
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1

        return counted

    patched: list[tuple[Any, str, Any]] = []
    for name, mod in list(sys.modules.items()):
        if not name.startswith("gtcompress") or mod is None:
            continue
        for fn_name, fn in originals.items():
            if getattr(mod, fn_name, None) is fn:
                patched.append((mod, fn_name, fn))
                setattr(mod, fn_name, make(fn_name, fn))

    def gine_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Tensor) -> None:
        x, edge_index = args[0], args[1]
        dense = args[3] if len(args) > 3 else kwargs.get("dense")
        if dense is not None and not getattr(module, "use_edges", False):
            return  # GIN's sum ran as counts @ x, a matmul the FLOP counter already counted
        e, d = int(edge_index.shape[1]), int(x.shape[-1])
        extra = 2 * e * d if getattr(module, "use_edges", False) else e * d
        counts["message_passing"] = counts.get("message_passing", 0) + extra

    handles = [m.register_forward_hook(gine_hook, with_kwargs=True) for m in model.modules() if isinstance(m, GINEConv)]
    try:
        yield
    finally:
        for mod, fn_name, fn in patched:
            setattr(mod, fn_name, fn)
        for hd in handles:
            hd.remove()


@torch.no_grad()
def count_flops(model: nn.Module, batch: GraphBatch, lowering: str | None = None) -> tuple[int, dict[str, int]]:
    """FLOPs of one eval-mode forward on ``batch``: (total, per kind); ``lowering`` pins the attention's
    (a GraphModel's forward takes it), else the model chooses for the batch."""
    was_training = model.training
    model.eval()
    counts: dict[str, int] = {}
    try:
        with _explicit_counts(model, counts), FlopCounterMode(display=False) as fc:
            model(batch) if lowering is None else model(batch, lowering=lowering)
    finally:
        model.train(was_training)
    for op, n in fc.get_flop_counts().get("Global", {}).items():
        key = str(op).replace("aten.", "")
        counts[key] = counts.get(key, 0) + int(n)
    return sum(counts.values()), counts


def measure_cost(model: nn.Module, batch: GraphBatch, lowering: str | None = None) -> Cost:
    """Parameters, weight bytes and measured FLOPs of ``model`` on ``batch`` (on ``lowering``: see
    :func:`count_flops`)."""
    params, nonzero, nbytes = param_stats(model)
    flops, by_kind = count_flops(model, batch, lowering)
    return Cost(
        params=params,
        nonzero_params=nonzero,
        weight_bytes=nbytes,
        flops=flops,
        flops_by_kind=by_kind,
        batch={"graphs": batch.num_graphs, "nodes": batch.num_nodes, "edges": batch.num_edges},
    )


def reference_batch(graphs: list[GraphBatch], count: int = 32) -> GraphBatch:
    """The first ``count`` graphs of a split as one batch: the fixed batch costs are measured on."""
    if not graphs:
        raise ValueError("reference_batch: no graphs given")
    return collate(graphs[: max(1, count)])
