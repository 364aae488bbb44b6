"""Feed-forward, normalisation, input encoders and readout shared by every model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from gtcompress.nn.scatter import scatter_max_or_zero, scatter_mean, scatter_sum


class FeedForward(nn.Module):
    """``lin2(drop(act(lin1(h))))`` then dropout — the layout of PyG's ``GPSConv.mlp``.

    ``lin1.out_features`` is the hidden width that structured pruning shrinks.
    """

    def __init__(self, dim: int, hidden: int, activation: str = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.act = nn.GELU() if activation == "gelu" else nn.ReLU()
        self.drop = nn.Dropout(dropout)
        self.lin2 = nn.Linear(hidden, dim)

    def forward(self, h: Tensor) -> Tensor:
        return self.drop(self.lin2(self.drop(self.act(self.lin1(h)))))


class NodeBatchNorm(nn.BatchNorm1d):
    """``BatchNorm1d`` over node rows that also takes a training batch of a single row.

    A batch of one graph of one node is ordinary data (ogbg-molfreesolv's train split holds three
    one-atom molecules and 513 graphs, so with ``--batch-size 32`` the last batch of an epoch is one
    graph, now and then one of those): ``BatchNorm1d`` in training mode refuses it ("Expected more
    than 1 value per channel when training"), and ``gtc train`` died with that traceback mid-run.
    Such a batch is normalised with the running statistics, as in eval mode, and leaves them
    unchanged (PyG's ``BatchNorm(allow_single_element=True)``). Same parameters and buffers as
    ``BatchNorm1d``, so checkpoints and exports are unchanged; every other batch is ``BatchNorm1d``'s.
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] == 1:
            assert self.running_mean is not None and self.running_var is not None
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


#: rows whose largest magnitude stays below this are normalised as they are (divided by exactly 1.0); a
#: row above it is scaled down to it first. 2**48 squared, times any realistic width (up to 2**30), is
#: far inside float32's range, and a power of two makes the clamp and its quotient exact.
_LN_SAFE = float(2**48)


class ScaleSafeLayerNorm(nn.LayerNorm):
    """``LayerNorm`` that computes the same answer for rows too large to square in float32.

    LayerNorm is invariant to the scale of its row (up to ``eps``), but it computes a variance, and
    squares overflow float32 past 1.8e19: Graphormer, whose every block and final norm is a
    LayerNorm, answered finite features of 1e20 and more with a *finite wrong* answer on ONNX Runtime
    (its LayerNormalization turns an infinite variance into a zero row, leaving only the bias) and
    NaN in eager torch. The serving path refuses NaN answers, but nothing could tell the finite one
    from the model's own. Such a row is divided by its largest magnitude (over ``2**48``) first; every
    other row is divided by exactly 1, so ordinary inputs give bit-identical results and the same
    parameters, state dict and checkpoints. float16 is left alone: its values cannot reach the range,
    and the normalisation computes in float32.
    """

    def forward(self, h: Tensor) -> Tensor:
        if h.dtype == torch.float16:
            return super().forward(h)
        scale = h.detach().abs().amax(-1, keepdim=True).clamp(min=_LN_SAFE) / _LN_SAFE
        return super().forward(h / scale)


def make_norm(kind: str, dim: int) -> nn.Module:
    """``batch`` (:class:`NodeBatchNorm` over nodes, as GT/GraphGPS), ``layer``
    (:class:`ScaleSafeLayerNorm`) or ``none``."""
    if kind == "batch":
        return NodeBatchNorm(dim)
    if kind == "layer":
        return ScaleSafeLayerNorm(dim)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; expected 'batch', 'layer' or 'none'")


class FeatureEncoder(nn.Module):
    """Categorical columns → sum of embeddings (OGB AtomEncoder style); float columns → Linear."""

    def __init__(self, kind: str, in_dim: int, out_dim: int, cardinalities: list[int] | None = None) -> None:
        super().__init__()
        self.kind = kind
        if kind == "categorical":
            self.embeddings = nn.ModuleList(nn.Embedding(c, out_dim) for c in cardinalities or [])
            self.linear = None
        else:
            self.embeddings = nn.ModuleList()
            self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        if self.linear is not None:
            w = self.linear.weight
            if x.is_floating_point() and x.dtype != w.dtype:
                # Float features in the model's precision, as PE is (GraphModel.encode_nodes): a model.half()
                # fed its float32 dataset (or float16 features to a float32 model) failed in this Linear with
                # "mat1 and mat2 must have the same dtype". A Python check: float32 models trace no Cast.
                x = x.to(w.dtype)
            return self.linear(x if x.dim() == 2 else x.unsqueeze(-1))
        if x.dim() == 1:
            x = x.unsqueeze(-1)
        out = self.embeddings[0](x[:, 0])
        for i in range(1, len(self.embeddings)):
            out = out + self.embeddings[i](x[:, i])
        return out


def readout(h: Tensor, batch: Tensor, num_graphs: int, kind: str) -> Tensor:
    """Graph embedding by ``mean``, ``sum`` or ``max`` over each graph's nodes (PyG's
    ``global_mean_pool``, ``global_add_pool``, ``global_max_pool``; a graph without nodes gives 0)."""
    if kind == "sum":
        return scatter_sum(h, batch, num_graphs)
    if kind == "mean":
        return scatter_mean(h, batch, num_graphs)
    if kind == "max":
        return scatter_max_or_zero(h, batch, num_graphs)
    raise ValueError(f"unknown readout {kind!r}; expected 'mean', 'sum' or 'max'")


def head_widths(dim: int, layers: int) -> list[int]:
    """The hidden widths of a head that halves per layer: dim/2, dim/4, … (at least 1)."""
    out, width = [], dim
    for _ in range(layers - 1):
        width = max(width // 2, 1)
        out.append(width)
    return out


def mlp_head(dim: int, out_dim: int, layers: int, widths: Sequence[int] = ()) -> nn.Sequential:
    """Prediction MLP ``Linear, ReLU, …, Linear`` through the hidden ``widths`` (``layers - 1`` of
    them), by default halving per layer (dim → dim/2 → … → out_dim)."""
    mods: list[nn.Module] = []
    width = dim
    for nxt in widths or head_widths(dim, layers):
        mods += [nn.Linear(width, nxt), nn.ReLU()]
        width = nxt
    mods.append(nn.Linear(width, out_dim))
    return nn.Sequential(*mods)
