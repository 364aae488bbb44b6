"""Fused sparse graph attention on CSR, launched from torch: CUDA via Triton, CPU via Triton's interpreter.

This is the same kernel TensorRT runs (compiled ahead of time in :mod:`trt_plugins.aot`); the
launcher here exists so that the kernel can be checked against the reference on any machine and
used from torch on a GPU without TensorRT.

Interpreter vs compiler: Triton 3.9 reads ``TRITON_INTERPRET`` when ``@triton.jit`` *decorates*
(``triton.knobs.runtime.interpret``), neither at import nor at launch -- and its own ``tl.max``,
``tl.sum``... are decorated when triton is first imported. The kernel source is therefore kept
undecorated and free of those helpers (:mod:`trt_plugins._kernel`) and wrapped here on demand:
CPU tensors always go through an ``InterpretedFunction``, CUDA tensors through a ``JITFunction``
unless ``TRITON_INTERPRET=1`` asks for the interpreter. Both work in one process whatever the
variable said when triton was imported, so tests need no environment set-up or subprocess.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import triton
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

from trt_plugins import spec
from trt_plugins._kernel import sparse_graph_attention_fwd

_TORCH_DTYPE_NAME = {torch.float32: "float32", torch.float16: "float16", torch.int32: "int32", torch.int64: "int64"}


@functools.cache
def jit_kernel() -> JITFunction:
    """The kernel as a Triton ``JITFunction`` (compiler path; also what the AOT compiler takes)."""
    return JITFunction(sparse_graph_attention_fwd)


@functools.cache
def interpreted_kernel() -> InterpretedFunction:
    """The kernel as a Triton ``InterpretedFunction`` (runs on CPU torch tensors)."""
    return InterpretedFunction(sparse_graph_attention_fwd)


def _use_interpreter(device: torch.device) -> bool:
    return device.type == "cpu" or bool(triton.knobs.runtime.interpret)


def _dtype_name(t: torch.Tensor, what: str) -> str:
    try:
        return _TORCH_DTYPE_NAME[t.dtype]
    except KeyError:
        raise spec.PluginSpecError(f"input '{what}' has unsupported dtype {t.dtype}") from None


def sparse_graph_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rowptr: torch.Tensor,
    col: torch.Tensor,
    bias: torch.Tensor | None = None,
    scale: float | None = None,
    config: spec.KernelConfig | None = None,
) -> torch.Tensor:
    """Attention over the CSR graph ``(rowptr, col)``: ``q, k, v [N, H, D]`` -> ``[N, H, D]``.

    ``rowptr [N+1]`` and ``col [E]`` (source of each edge, edges sorted by destination; see
    :func:`trt_plugins.csr.edge_index_to_csr`) are int32 or int64; ``bias [E, H]`` is in CSR order.
    ``scale`` defaults to ``1/sqrt(D)``. Forward only (no autograd).
    """
    if q.dim() != 3:
        raise spec.PluginSpecError(f"input 'q' must have shape [N, H, D], got {tuple(q.shape)}")
    n, h, d = q.shape
    attrs = spec.validate_attributes(h, d, spec.default_scale(d) if scale is None else scale, bias is not None)
    index_dtype = _dtype_name(rowptr, "rowptr")
    if _dtype_name(col, "col") != index_dtype:
        raise spec.PluginSpecError(f"input 'col' must have the dtype of 'rowptr' ({rowptr.dtype}), got {col.dtype}")
    placeholder = q.new_empty((0, h))
    tensors = {"q": q, "k": k, "v": v, "rowptr": rowptr, "col": col, "bias": placeholder if bias is None else bias}
    dtypes = [_dtype_name(t, name) for name, t in tensors.items()]
    # validate_inputs checks the plugin's int32 contract; the torch launcher also takes int64.
    dtypes[3] = dtypes[4] = spec.INDEX_DTYPE
    spec.validate_inputs([tuple(t.shape) for t in tensors.values()], dtypes, attrs)
    for name, t in tensors.items():
        if t.device != q.device:
            raise spec.PluginSpecError(f"input '{name}' is on {t.device}, 'q' on {q.device}")
    if int(rowptr[0]) != 0 or int(rowptr[-1]) != col.numel():
        raise spec.PluginSpecError(
            f"input 'rowptr' must run from 0 to E = {col.numel()} (the length of 'col'), "
            f"got {int(rowptr[0])} .. {int(rowptr[-1])}"
        )

    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    if n == 0:
        return out
    config = config or spec.select_config(d, dtypes[0])
    kernel: Any = interpreted_kernel() if _use_interpreter(q.device) else jit_kernel()
    args = [t.contiguous() for t in tensors.values()]
    kernel[spec.grid(n, h, config.block_m)](
        *args,
        n,
        h,
        out,
        **spec.constexprs(attrs, config),
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )
    return out


def sparse_graph_attention_coo(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    edge_index: torch.Tensor,
    bias: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Same as :func:`sparse_graph_attention` for an ``edge_index [2, E]`` (src, dst) in any order and
    a bias in edge order: builds the CSR and reorders the bias on the fly."""
    from trt_plugins.csr import edge_index_to_csr

    rowptr, col, perm = edge_index_to_csr(edge_index, q.shape[0])
    bias_csr = None if bias is None else bias.index_select(0, perm)
    return sparse_graph_attention(q, k, v, rowptr.to(q.device), col.to(q.device), bias_csr, scale)
