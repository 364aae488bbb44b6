"""Scatter primitives written with ``scatter_add``/``scatter_reduce`` only.

``index_add`` is avoided on purpose: it exports to ONNX as ScatterND with a reduction, which
TensorRT's parser rejects, whereas these become ScatterElements (docs/architecture.md, Conventions).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _expand_index(index: Tensor, src: Tensor) -> Tensor:
    shape = [index.shape[0]] + [1] * (src.dim() - 1)
    return index.view(shape).expand_as(src)


def scatter_sum(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """``out[index[e]] += src[e]`` along dim 0."""
    out = src.new_zeros((dim_size, *src.shape[1:]))
    return out.scatter_add(0, _expand_index(index, src), src)


def scatter_max(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Per-index maximum along dim 0; slots no index points at hold ``-inf``."""
    out = src.new_full((dim_size, *src.shape[1:]), float("-inf"))
    return out.scatter_reduce(0, _expand_index(index, src), src, reduce="amax", include_self=True)


def scatter_max_or_zero(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Per-index maximum along dim 0; slots no index points at hold 0.

    PyG's ``scatter(reduce="max")`` (``global_max_pool``, ``MaxAggregation``) exactly: a graph
    without nodes pools to 0, not to :func:`scatter_max`'s ``-inf``, and a gradient reaches the
    rows that hold the maximum. ``include_self=False`` exports as ScatterElements (reduction
    ``none`` to seed the slots, then ``max``), which ONNX Runtime runs at opset 18 and TensorRT
    imports through its ScatterElements plugin.

    A slot with a NaN row is NaN, as torch's ``amax`` gives it, in every backend: ONNX Runtime's
    ScatterElements ``max`` keeps or drops a NaN by the order it meets the rows in, so a node the
    model overflows on would pool to the other nodes' finite maximum, which the runtime's refusal of
    non-finite answers cannot see. The count of NaN rows per slot carries it past that reduction."""
    out = src.new_zeros((dim_size, *src.shape[1:]))
    out = out.scatter_reduce(0, _expand_index(index, src), src, reduce="amax", include_self=False)
    nans = scatter_sum(src.isnan().to(src.dtype), index, dim_size)
    return torch.where(nans > 0, float("nan"), out)


def scatter_mean(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Per-index mean along dim 0 (empty slots give 0)."""
    total = scatter_sum(src, index, dim_size)
    count = scatter_sum(torch.ones_like(index, dtype=src.dtype), index, dim_size).clamp_min(1)
    return total / count.view([-1] + [1] * (src.dim() - 1))
