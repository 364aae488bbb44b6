"""The fused sparse-attention op as one torch operator, ``gtcompress::sparse_graph_attention``.

On CPU it runs the reference (:func:`~gtcompress.nn.attention.sparse_attention`) on the CSR layout;
on CUDA it runs the Triton kernels of :mod:`trt_plugins.kernels` (the ones TensorRT runs as a
plugin), registered as the op's CUDA kernel. Exported, it becomes a single ONNX node that TensorRT
maps to the plugin while ONNX Runtime runs the model-local function fallback (``exporters.onnx``).
It is inference-only: no autograd formula is registered.

The op is a ``custom_op`` with a fake implementation, not a ``triton_op``: ``torch.compile`` and
``torch.export`` keep it as one opaque node (the exporter maps that node to the plugin), and
inductor calls our launcher, which reads no device value, so the op also replays in CUDA graphs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gtcompress.nn.attention import sparse_attention


@torch.library.custom_op("gtcompress::sparse_graph_attention", mutates_args=())
def sparse_graph_attention(
    q: Tensor, k: Tensor, v: Tensor, rowptr: Tensor, col: Tensor, bias: Tensor | None, scale: float
) -> Tensor:
    """``q,k,v [N,H,D]``; edges sorted by destination: ``rowptr [N+1]``, ``col [E]`` sources;
    ``bias [E,H]`` in the same (CSR) order or None."""
    deg = rowptr[1:] - rowptr[:-1]
    dst = torch.repeat_interleave(torch.arange(q.shape[0], device=q.device), deg)
    return sparse_attention(q, k, v, torch.stack([col.long(), dst]), bias, scale=scale).contiguous()


@sparse_graph_attention.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, rowptr: Tensor, col: Tensor, bias: Tensor | None, scale: float) -> Tensor:
    return torch.empty_like(q, memory_format=torch.contiguous_format)


@sparse_graph_attention.register_kernel("cuda")
def _cuda(q: Tensor, k: Tensor, v: Tensor, rowptr: Tensor, col: Tensor, bias: Tensor | None, scale: float) -> Tensor:
    from trt_plugins.kernels import sparse_graph_attention as triton_attention

    with torch.cuda.device(q.device):  # Triton launches on the current device, not the tensors' (cuda:1)
        return triton_attention(q, k, v, rowptr, col, bias, scale)


def csr_from_edge_index(edge_index: Tensor, num_nodes: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(rowptr [N+1], col [E], perm [E])``: edges stably sorted by destination, on their device.

    Reads no device value (no ``bincount`` or ``.item()``), so on a GPU it neither synchronises
    nor stops a CUDA-graph capture. ``perm`` reorders per-edge tensors (biases) into CSR order.
    """
    src, dst = edge_index[0], edge_index[1]
    perm = torch.sort(dst, stable=True).indices
    counts = torch.zeros(num_nodes + 1, dtype=torch.long, device=dst.device)
    counts = counts.scatter_add(0, dst + 1, torch.ones_like(dst))
    return torch.cumsum(counts, 0), src.index_select(0, perm), perm
