"""The fused sparse-attention op as one torch operator, ``gtcompress::sparse_graph_attention``.

On CPU it runs the reference (:func:`~gtcompress.nn.attention.sparse_attention`) on the CSR layout;
on CUDA it runs the Triton kernels of :mod:`trt_plugins.kernels` (the ones TensorRT runs as a
plugin), registered as the op's CUDA kernel, and the same reference for inputs those kernels do not
take (float64, ``head_dim`` above 256: see :func:`_cuda`). Exported, it becomes a single ONNX node that TensorRT
maps to the plugin while ONNX Runtime runs the model-local function fallback (``exporters.onnx``).

Its gradient is the reference's, recomputed in the backward pass (:func:`_backward`): a GT picks
this op on every CUDA device (``choose_lowering``), so a model trained or fine-tuned there, in a loop of the
user's own (gtcompress's training loops run on the CPU), differentiates through it.
The kernels stay forward-only; the backward costs what the scatter lowering's would.

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
    return _reference(q, k, v, rowptr, col, bias, scale)


def _reference(
    q: Tensor, k: Tensor, v: Tensor, rowptr: Tensor, col: Tensor, bias: Tensor | None, scale: float
) -> Tensor:
    """The op as the reference attention on the CSR's edges (differentiable torch ops).

    Half-precision inputs are computed in float32 and the output cast back, as the CUDA kernel
    accumulates: in float16 a softmax denominator over 65,505 or more incoming edges overflows to
    inf, and such a hub's output (and, in the backward recompute, its gradients) came out zero."""
    deg = rowptr[1:] - rowptr[:-1]
    # output_size: the edge count is col's length, a shape. Without it repeat_interleave reads its output
    # size from device data: a host sync on a GPU, and a backward (which recomputes this) that AOTAutograd
    # cannot trace with dynamic sizes, so torch.compile broke the graph around each attention layer.
    dst = torch.repeat_interleave(torch.arange(q.shape[0], device=q.device), deg, output_size=col.shape[0])
    edges = torch.stack([col.long(), dst])
    if q.dtype in (torch.float16, torch.bfloat16):
        wide = sparse_attention(
            q.float(), k.float(), v.float(), edges, None if bias is None else bias.float(), scale=scale
        )
        return wide.to(q.dtype).contiguous()
    return sparse_attention(q, k, v, edges, bias, scale=scale).contiguous()


@sparse_graph_attention.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, rowptr: Tensor, col: Tensor, bias: Tensor | None, scale: float) -> Tensor:
    return torch.empty_like(q, memory_format=torch.contiguous_format)


#: Floating dtypes the Triton kernel takes (one for q, k, v and bias).
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@sparse_graph_attention.register_kernel("cuda")
def _cuda(q: Tensor, k: Tensor, v: Tensor, rowptr: Tensor, col: Tensor, bias: Tensor | None, scale: float) -> Tensor:
    """The Triton kernel where it takes the inputs, else the reference on the same device.

    A GT picks this op on every CUDA device whatever its head size and precision, but the kernel
    takes ``head_dim`` up to :data:`trt_plugins.spec.MAX_HEAD_DIM` and float32/float16/bfloat16 in
    one dtype: a float64 model (``from_pyg`` keeps a PyG model's dtype) or one with wider heads ran
    on CPU and raised ``PluginSpecError`` in its first forward on a GPU. Those run the reference
    (torch ops, same function); the decision reads shapes and dtypes only, no device value."""
    from trt_plugins import spec
    from trt_plugins.kernels import sparse_graph_attention as triton_attention

    dtypes = {t.dtype for t in (q, k, v, bias) if t is not None}
    indices = rowptr.dtype == col.dtype and rowptr.dtype in (torch.int32, torch.int64)
    if len(dtypes) == 1 and q.dtype in _KERNEL_DTYPES and indices and 1 <= q.shape[-1] <= spec.MAX_HEAD_DIM:
        return triton_attention(q, k, v, rowptr, col, bias, scale)  # on q's device (the launcher sees to it)
    return _reference(q, k, v, rowptr, col, bias, scale)


def _setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple, output: Tensor) -> None:
    """Keep the inputs, not the output: the backward recomputes the reference from them."""
    q, k, v, rowptr, col, bias, scale = inputs
    ctx.save_for_backward(q, k, v, rowptr, col, bias)
    ctx.scale = scale  # type: ignore[attr-defined]


def _backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:
    """Gradients of ``q, k, v, bias``: the vector-Jacobian product of :func:`_reference`, recomputed
    from the saved inputs (the output is the same function, so this is its exact gradient)."""
    q, k, v, rowptr, col, bias = ctx.saved_tensors  # type: ignore[attr-defined]
    needs = ctx.needs_input_grad  # type: ignore[attr-defined]
    with torch.enable_grad():
        leaves = [
            None if t is None else t.detach().requires_grad_(bool(need))
            for t, need in ((q, needs[0]), (k, needs[1]), (v, needs[2]), (bias, needs[5]))
        ]
        out = _reference(leaves[0], leaves[1], leaves[2], rowptr, col, leaves[3], ctx.scale)  # type: ignore[arg-type,attr-defined]
        wanted = [t for t in leaves if t is not None and t.requires_grad]
        got: list[Tensor | None] = [None] * len(wanted)
        if wanted and out.requires_grad:  # without edges the output (zeros) depends on no input
            got = list(torch.autograd.grad(out, wanted, grad, allow_unused=True))
    grads = iter(torch.zeros_like(t) if g is None else g for t, g in zip(wanted, got, strict=True))
    gq, gk, gv, gbias = (next(grads) if t is not None and t.requires_grad else None for t in leaves)
    return gq, gk, gv, None, None, gbias, None


sparse_graph_attention.register_autograd(_backward, setup_context=_setup_context)


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
