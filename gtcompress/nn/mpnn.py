r"""Local message passing for GPS: GINE (Hu et al. 2020) and GIN (Xu et al. 2019).

.. math::
    h_i' = \mathrm{MLP}\Big((1+\epsilon)\, h_i + \sum_{j \to i} \mathrm{ReLU}(h_j + W e_{ji})\Big)

Parameter names (``nn``, ``eps``, ``lin``) match PyG's ``GINEConv``/``GINConv`` so that trained
PyG weights load one to one (:func:`gtcompress.models.from_pyg.from_pyg`). Aggregation uses
``scatter_add`` (exportable, TensorRT-friendly), not PyG's message-passing machinery.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from gtcompress.nn.scatter import scatter_sum


class GINEConv(nn.Module):
    """GINE when ``use_edges`` (edge embedding added to messages), else GIN."""

    def __init__(self, mlp: nn.Module, use_edges: bool = True, edge_dim: int | None = None, eps: float = 0.0) -> None:
        super().__init__()
        self.nn = mlp
        self.use_edges = use_edges
        self.register_buffer("eps", torch.tensor([eps]))
        self.lin = nn.Linear(edge_dim, _in_features(mlp)) if (use_edges and edge_dim) else None

    def forward(
        self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None, dense: tuple[Any, Tensor] | None = None
    ) -> Tensor:
        """``dense = (DenseLayout, counts [B,L,L])`` computes GIN's sum as ``counts @ x`` per graph
        (same result; GINE's per-edge messages always use the scatter)."""
        if dense is not None and not self.use_edges:
            layout, counts = dense
            agg = layout.unpad(torch.matmul(counts.to(x.dtype), layout.pad(x)))
            return self.nn((1 + self.eps) * x + agg)
        src, dst = edge_index[0], edge_index[1]
        msg = x.index_select(0, src)
        if self.use_edges:
            if edge_attr is None:
                raise ValueError("GINEConv needs edge_attr")
            e = self.lin(edge_attr) if self.lin is not None else edge_attr
            msg = F.relu(msg + e)
        agg = scatter_sum(msg, dst, x.shape[0])
        return self.nn((1 + self.eps) * x + agg)


def _in_features(mlp: nn.Module) -> int:
    for m in mlp.modules():
        if isinstance(m, nn.Linear):
            return m.in_features
    raise ValueError("GINEConv's nn must start with a Linear layer")


def gin_mlp(dim: int) -> nn.Sequential:
    """GraphGPS's GINE MLP: Linear → ReLU → Linear."""
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
