"""The fused sparse-attention op as one torch operator, ``gtcompress::sparse_graph_attention``.

Eager it runs the reference (:func:`~gtcompress.nn.attention.sparse_attention`) on the CSR
layout; exported it becomes a single ONNX node that TensorRT maps to our plugin
(``trt_plugins``) while ONNX Runtime runs the model-local function fallback
(``exporters.onnx``). It is inference-only: no autograd formula is registered.
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
    return sparse_attention(q, k, v, torch.stack([col, dst]), bias, scale=scale).contiguous()


@sparse_graph_attention.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, rowptr: Tensor, col: Tensor, bias: Tensor | None, scale: float) -> Tensor:
    return torch.empty_like(q)
