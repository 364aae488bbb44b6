"""COO ``edge_index`` -> CSR by destination, in torch and in numpy.

The plugin walks the incoming edges of each destination as one contiguous range, so edges must be
sorted by destination. The sort is stable (edges to the same destination keep their order, so
duplicates and self-loops survive untouched) and the permutation is returned, because a per-edge
bias ``[E, H]`` has to be reordered the same way: ``bias_csr = bias[perm]``.

Both versions return ``(rowptr [N+1], col [E], perm [E])`` with
``col = edge_index[0][perm]`` and ``edge_index[1][perm]`` sorted; ``rowptr``/``col`` default to
int32 (the plugin's index type), ``perm`` is int64.
"""

from __future__ import annotations

import numpy as np
import torch

from trt_plugins.spec import PluginSpecError


def _check_sizes(shape: tuple[int, ...], num_nodes: int, index_max: int) -> None:
    if len(shape) != 2 or shape[0] != 2:
        raise PluginSpecError(f"edge_index must have shape [2, E], got {list(shape)}")
    if num_nodes < 0:
        raise PluginSpecError(f"num_nodes must be >= 0, got {num_nodes}")
    if max(num_nodes, shape[1]) > index_max:
        raise PluginSpecError(
            f"graph with {num_nodes} nodes and {shape[1]} edges does not fit the index dtype (max {index_max})"
        )


def _check_range(lo: int, hi: int, num_nodes: int) -> None:
    if lo < 0 or hi >= num_nodes:
        raise PluginSpecError(f"edge_index has node ids in [{lo}, {hi}], outside [0, {num_nodes - 1}]")


def edge_index_to_csr(
    edge_index: torch.Tensor, num_nodes: int, dtype: torch.dtype = torch.int32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CSR by destination from ``edge_index [2, E]`` (src, dst) as torch tensors on its device."""
    if edge_index.dtype.is_floating_point or edge_index.dtype == torch.bool:
        raise PluginSpecError(f"edge_index must be an integer tensor, got {edge_index.dtype}")
    if dtype not in (torch.int32, torch.int64):
        raise PluginSpecError(f"CSR index dtype must be torch.int32 or torch.int64, got {dtype}")
    _check_sizes(tuple(edge_index.shape), num_nodes, torch.iinfo(dtype).max)
    src, dst = edge_index[0].long(), edge_index[1].long()
    if src.numel():
        _check_range(int(torch.minimum(src.min(), dst.min())), int(torch.maximum(src.max(), dst.max())), num_nodes)
    perm = torch.sort(dst, stable=True).indices
    counts = torch.bincount(dst, minlength=num_nodes)
    rowptr = torch.zeros(num_nodes + 1, dtype=torch.int64, device=edge_index.device)
    rowptr[1:] = torch.cumsum(counts, 0)
    return rowptr.to(dtype), src[perm].to(dtype), perm


def edge_index_to_csr_numpy(
    edge_index: np.ndarray, num_nodes: int, dtype: type[np.integer] | np.dtype = np.int32
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR by destination from ``edge_index [2, E]`` (src, dst) as numpy arrays (no torch needed)."""
    edge_index = np.asarray(edge_index)
    if not np.issubdtype(edge_index.dtype, np.integer):
        raise PluginSpecError(f"edge_index must be an integer array, got {edge_index.dtype}")
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.int32), np.dtype(np.int64)):
        raise PluginSpecError(f"CSR index dtype must be int32 or int64, got {dtype}")
    _check_sizes(edge_index.shape, num_nodes, int(np.iinfo(dtype).max))
    src, dst = edge_index[0].astype(np.int64), edge_index[1].astype(np.int64)
    if src.size:
        _check_range(int(min(src.min(), dst.min())), int(max(src.max(), dst.max())), num_nodes)
    perm = np.argsort(dst, kind="stable").astype(np.int64)
    rowptr = np.zeros(num_nodes + 1, dtype=np.int64)
    np.cumsum(np.bincount(dst, minlength=num_nodes), out=rowptr[1:])
    return rowptr.astype(dtype), src[perm].astype(dtype), perm
