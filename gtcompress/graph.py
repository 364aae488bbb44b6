"""The graph batch every gtcompress model, transform and exporter speaks.

Conventions (docs/architecture.md): ``x [N, F]``; ``edge_index [2, E]`` int64 as (src, dst), messages flow
src → dst and attention is a softmax over the *incoming* edges of each dst; optional
``edge_attr [E, Fe]``; ``batch [N]`` sorted graph ids; ``y`` node- or graph-level targets;
``pe`` named positional encodings (``"lap"``, ``"rwse"``), each ``[N, k]``.
PyTorch Geometric ``Data``/``Batch`` objects convert both ways without copies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gtcompress.errors import GraphValidationError
from gtcompress.preprocess.batching import PYG_PE_NAMES, NumpyGraph


@dataclass
class GraphBatch:
    """A disjoint union of one or more graphs (a single graph has ``batch=None``)."""

    x: Tensor
    edge_index: Tensor
    edge_attr: Tensor | None = None
    batch: Tensor | None = None
    y: Tensor | None = None
    pe: dict[str, Tensor] = field(default_factory=dict)
    num_graphs: int = 1

    # ------------------------------------------------------------------ basic properties
    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    @property
    def batch_vector(self) -> Tensor:
        """``batch`` or, for a single graph, all zeros."""
        if self.batch is not None:
            return self.batch
        return torch.zeros(self.num_nodes, dtype=torch.long, device=self.x.device)

    @property
    def ptr(self) -> Tensor:
        """Node offsets ``[B+1]`` of each graph."""
        counts = torch.bincount(self.batch_vector, minlength=self.num_graphs)
        return torch.cat([counts.new_zeros(1), counts.cumsum(0)])

    def to(self, device: torch.device | str) -> GraphBatch:
        def mv(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return replace(
            self,
            x=self.x.to(device),
            edge_index=self.edge_index.to(device),
            edge_attr=mv(self.edge_attr),
            batch=mv(self.batch),
            y=mv(self.y),
            pe={k: v.to(device) for k, v in self.pe.items()},
        )

    # ------------------------------------------------------------------ validation
    def validate(self, name: str = "graph") -> GraphBatch:
        """Raise :class:`GraphValidationError` naming the tensor and the expectation; return self."""
        x, ei = self.x, self.edge_index
        if not isinstance(x, Tensor) or x.dim() != 2:
            raise GraphValidationError(f"{name}.x: expected a 2-D tensor [num_nodes, F], got {_describe(x)}")
        if x.is_floating_point() and not torch.isfinite(x).all():
            bad = int((~torch.isfinite(x)).any(dim=1).nonzero()[0, 0])
            raise GraphValidationError(f"{name}.x: contains NaN or Inf (first at node {bad})")
        if not x.is_floating_point() and x.dtype not in (torch.int64, torch.int32):
            raise GraphValidationError(f"{name}.x: expected float or integer (categorical) dtype, got {x.dtype}")
        if not isinstance(ei, Tensor) or ei.dim() != 2 or ei.shape[0] != 2:
            raise GraphValidationError(f"{name}.edge_index: expected shape [2, num_edges], got {_describe(ei)}")
        if ei.dtype != torch.int64:
            raise GraphValidationError(f"{name}.edge_index: expected dtype int64, got {ei.dtype}")
        n = self.num_nodes
        if ei.numel():
            lo, hi = int(ei.min()), int(ei.max())
            if lo < 0:
                raise GraphValidationError(f"{name}.edge_index: negative node index {lo}")
            if hi >= n:
                raise GraphValidationError(
                    f"{name}.edge_index: node index {hi} out of range for {n} nodes (x has {n} rows)"
                )
        if self.edge_attr is not None:
            ea = self.edge_attr
            if ea.dim() not in (1, 2) or ea.shape[0] != ei.shape[1]:
                raise GraphValidationError(
                    f"{name}.edge_attr: expected [{ei.shape[1]}, Fe] (one row per edge), got {_describe(ea)}"
                )
            if ea.is_floating_point() and not torch.isfinite(ea).all():
                raise GraphValidationError(f"{name}.edge_attr: contains NaN or Inf")
        if self.batch is not None:
            b = self.batch
            if b.dim() != 1 or b.shape[0] != n:
                raise GraphValidationError(f"{name}.batch: expected shape [{n}], got {_describe(b)}")
            if b.dtype != torch.int64:
                raise GraphValidationError(f"{name}.batch: expected dtype int64, got {b.dtype}")
            if n and (int(b.min()) < 0 or int(b.max()) >= self.num_graphs):
                raise GraphValidationError(
                    f"{name}.batch: graph ids must lie in [0, {self.num_graphs}), got [{int(b.min())}, {int(b.max())}]"
                )
            if n > 1 and bool((b[1:] < b[:-1]).any()):
                raise GraphValidationError(f"{name}.batch: must be sorted (nodes of each graph contiguous)")
            if ei.numel() and bool((b[ei[0]] != b[ei[1]]).any()):
                raise GraphValidationError(f"{name}.edge_index: an edge connects two different graphs")
        for key, v in self.pe.items():
            if v.dim() != 2 or v.shape[0] != n:
                raise GraphValidationError(f"{name}.pe[{key!r}]: expected [{n}, k], got {_describe(v)}")
            if not torch.isfinite(v).all():
                raise GraphValidationError(f"{name}.pe[{key!r}]: contains NaN or Inf")
        return self

    # ------------------------------------------------------------------ conversions
    def to_numpy(self) -> NumpyGraph:
        """The torch-free form used by ``runtime/`` (y is dropped: deployments have no labels)."""
        return NumpyGraph(
            x=self.x.detach().cpu().numpy(),
            edge_index=self.edge_index.detach().cpu().numpy(),
            edge_attr=None if self.edge_attr is None else self.edge_attr.detach().cpu().numpy(),
            batch=None if self.batch is None else self.batch.detach().cpu().numpy(),
            pe={k: v.detach().cpu().numpy() for k, v in self.pe.items()},
            graphs=self.num_graphs,
        )

    @classmethod
    def from_numpy(cls, g: NumpyGraph) -> GraphBatch:
        batch = None if g.batch is None else torch.from_numpy(np.ascontiguousarray(g.batch))
        return cls(
            x=torch.from_numpy(np.ascontiguousarray(g.x)),
            edge_index=torch.from_numpy(np.ascontiguousarray(g.edge_index)).long(),
            edge_attr=None if g.edge_attr is None else torch.from_numpy(np.ascontiguousarray(g.edge_attr)),
            batch=batch,
            pe={k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in g.pe.items()},
            num_graphs=g.num_graphs,
        )

    @classmethod
    def from_pyg(cls, data: Any) -> GraphBatch:
        """Wrap a PyG ``Data`` or ``Batch`` (tensors are shared, not copied)."""
        x = data.x
        if x is None:
            raise GraphValidationError("PyG data has no node features `x`")
        if x.dim() == 1:
            x = x.unsqueeze(-1)
        batch = getattr(data, "batch", None)
        num_graphs = int(getattr(data, "num_graphs", 1) or 1) if batch is not None else 1
        pe = {ours: data[name] for name, ours in PYG_PE_NAMES.items() if name in data}
        return cls(
            x=x,
            edge_index=data.edge_index,
            edge_attr=getattr(data, "edge_attr", None),
            batch=batch,
            y=getattr(data, "y", None),
            pe=pe,
            num_graphs=num_graphs,
        )

    def to_pyg(self) -> Any:
        """A PyG ``Data`` (single graph) or ``Batch`` (several graphs) holding the same tensors."""
        from torch_geometric.data import Batch, Data

        kwargs: dict[str, Any] = {"x": self.x, "edge_index": self.edge_index}
        if self.edge_attr is not None:
            kwargs["edge_attr"] = self.edge_attr
        if self.y is not None:
            kwargs["y"] = self.y
        names = {"lap": "laplacian_eigenvector_pe", "rwse": "random_walk_pe"}
        for k, v in self.pe.items():
            kwargs[names.get(k, k)] = v
        if self.batch is None:
            return Data(**kwargs)
        return Batch.from_data_list(split(self, as_pyg=True))

    def graph_sizes(self) -> tuple[list[int], list[int]]:
        """(nodes per graph, edges per graph)."""
        b = self.batch_vector
        nodes = torch.bincount(b, minlength=self.num_graphs)
        edges = torch.bincount(b[self.edge_index[0]], minlength=self.num_graphs)
        return nodes.tolist(), edges.tolist()


def _describe(t: Any) -> str:
    if isinstance(t, Tensor):
        return f"tensor of shape {list(t.shape)} and dtype {t.dtype}"
    return f"{type(t).__name__}"


def collate(graphs: Sequence[GraphBatch]) -> GraphBatch:
    """Disjoint union of single graphs (or batches) with offset edge indices and a batch vector."""
    if not graphs:
        raise GraphValidationError("collate: got an empty list of graphs")
    device = graphs[0].x.device
    n = torch.tensor([g.num_nodes for g in graphs], dtype=torch.long)
    offsets = torch.cat([n.new_zeros(1), n.cumsum(0)[:-1]])
    e = torch.tensor([g.num_edges for g in graphs], dtype=torch.long)
    edge_index = torch.cat([g.edge_index for g in graphs], dim=1) + torch.repeat_interleave(offsets, e).to(device)
    gcount = [g.num_graphs for g in graphs]
    goffsets = np.concatenate([[0], np.cumsum(gcount)[:-1]])
    batch = torch.cat([g.batch_vector + int(o) for g, o in zip(graphs, goffsets, strict=True)])
    attrs = [g.edge_attr for g in graphs]
    if any(a is None for a in attrs) and not all(a is None for a in attrs):
        raise GraphValidationError("collate: some graphs have edge_attr and some do not")
    y = None
    if any(g.y is not None for g in graphs):  # not graphs[0] alone: [unlabelled, labelled] dropped the labels
        if any(g.y is None for g in graphs):
            raise GraphValidationError("collate: some graphs have y and some do not")
        ys = [g.y.reshape(1) if g.y.dim() == 0 else g.y for g in graphs]  # type: ignore[union-attr]
        y = torch.cat(ys)
    keys = set(graphs[0].pe)
    for i, g in enumerate(graphs):
        if set(g.pe) != keys:
            raise GraphValidationError(f"collate: graph {i} has pe {sorted(g.pe)}, expected {sorted(keys)}")
    return GraphBatch(
        x=torch.cat([g.x for g in graphs]),
        edge_index=edge_index,
        edge_attr=None if attrs[0] is None else torch.cat(attrs),  # type: ignore[arg-type]
        batch=batch,
        y=y,
        pe={k: torch.cat([g.pe[k] for g in graphs]) for k in sorted(keys)},
        num_graphs=int(sum(gcount)),
    )


def split(batch: GraphBatch, as_pyg: bool = False, y_per: str | None = None) -> list[Any]:
    """Inverse of :func:`collate` for a batch of single graphs.

    ``y_per``: ``"graph"`` or ``"node"`` labels; ``None`` tells them by ``y``'s length, which fails
    (GraphValidationError) only when it cannot: one row per graph and per node, and not every graph
    has exactly one node (then both readings agree)."""
    ptr = batch.ptr.tolist()
    b = batch.batch_vector
    edge_graph = b[batch.edge_index[0]] if batch.num_edges else b.new_zeros(0)
    order = torch.argsort(edge_graph, stable=True)
    ecounts = torch.bincount(edge_graph, minlength=batch.num_graphs).tolist()
    eptr = np.concatenate([[0], np.cumsum(ecounts)]).tolist()
    y_graph_level = y_per == "graph"
    if y_per not in ("graph", "node") and batch.y is not None:
        if y_per is not None:
            raise ValueError(f"split: y_per must be 'graph', 'node' or None, got {y_per!r}")
        rows, one_node_each = batch.y.shape[0], all(ptr[g + 1] - ptr[g] == 1 for g in range(batch.num_graphs))
        if rows == batch.num_graphs == batch.num_nodes and not one_node_each:
            raise GraphValidationError(
                f"split: y has {rows} rows, one per graph and one per node; pass y_per='graph' or 'node'"
            )
        y_graph_level = rows == batch.num_graphs and (rows != batch.num_nodes or one_node_each)
    out = []
    for g in range(batch.num_graphs):
        ns, ne = slice(ptr[g], ptr[g + 1]), order[eptr[g] : eptr[g + 1]]
        y = None
        if batch.y is not None:
            y = batch.y[g : g + 1] if y_graph_level else batch.y[ns]
        single = GraphBatch(
            x=batch.x[ns],
            edge_index=batch.edge_index[:, ne] - ptr[g],
            edge_attr=None if batch.edge_attr is None else batch.edge_attr[ne],
            y=y,
            pe={k: v[ns] for k, v in batch.pe.items()},
        )
        out.append(single.to_pyg() if as_pyg else single)
    return out


def random_sign_flip(pe: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Flip the sign of each LapPE eigenvector at random (training-time augmentation)."""
    signs = torch.randint(0, 2, (1, pe.shape[1]), generator=generator, device=pe.device) * 2 - 1
    return pe * signs.to(pe.dtype)
