"""Fused sparse graph attention on CSR, launched from torch: CUDA via Triton, CPU via Triton's interpreter.

The same two kernels TensorRT runs (:mod:`trt_plugins._kernel`, compiled ahead of time in
:mod:`trt_plugins.aot`). The launcher reads no value from the device: grids and buffer sizes
come from shapes alone, so a call can be captured in a CUDA graph and costs no synchronisation.
Checks that need the values (``rowptr`` runs from 0 to E and never decreases, ``col`` in range)
are :func:`check_csr`, a separate step for callers that do not build the CSR themselves.

Interpreter vs compiler: Triton 3.9 reads ``TRITON_INTERPRET`` when ``@triton.jit`` *decorates*
(``triton.knobs.runtime.interpret``), neither at import nor at launch, and its own ``tl.max``,
``tl.sum``... are decorated when triton is first imported. The kernel source is therefore kept
undecorated and free of those helpers, and wrapped here on demand: CPU tensors always go through
an ``InterpretedFunction``, CUDA tensors through a ``JITFunction`` unless ``TRITON_INTERPRET=1``
asks for the interpreter. Both work in one process whatever the variable said when triton was
imported, so tests need no environment set-up or subprocess.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import torch
import triton
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

from trt_plugins import _kernel, spec

_TORCH_DTYPE_NAME = {
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.int32: "int32",
    torch.int64: "int64",
}
_SOURCES = {"partials": _kernel.sga_partials, "combine": _kernel.sga_combine}


@functools.cache
def jit_kernel(name: str) -> JITFunction:
    """Kernel ``name`` (``"partials"`` or ``"combine"``) as a Triton ``JITFunction`` (GPU, AOT)."""
    return JITFunction(_SOURCES[name])


@functools.cache
def interpreted_kernel(name: str) -> InterpretedFunction:
    """Kernel ``name`` as a Triton ``InterpretedFunction`` (runs on CPU torch tensors)."""
    return InterpretedFunction(_SOURCES[name])


def _use_interpreter(device: torch.device) -> bool:
    return device.type == "cpu" or bool(triton.knobs.runtime.interpret)


def _dtype_name(t: torch.Tensor, what: str) -> str:
    try:
        return _TORCH_DTYPE_NAME[t.dtype]
    except KeyError:
        raise spec.PluginSpecError(f"input '{what}' has unsupported dtype {t.dtype}") from None


def check_csr(rowptr: torch.Tensor, col: torch.Tensor, num_nodes: int) -> None:
    """Raise :class:`~trt_plugins.spec.PluginSpecError` unless ``(rowptr, col)`` is a CSR of
    ``num_nodes`` rows: ``rowptr [N+1]`` from 0 to ``E = len(col)``, never decreasing, and every
    ``col`` in ``[0, N)``. Reads the values (a device-to-host copy on a GPU): call it where the CSR
    comes from outside, not per launch."""
    if rowptr.dim() != 1 or rowptr.numel() != num_nodes + 1:
        raise spec.PluginSpecError(
            f"input 'rowptr' must have n_nodes + 1 = {num_nodes + 1} entries, got {tuple(rowptr.shape)}"
        )
    e = col.numel()
    first, last = int(rowptr[0]), int(rowptr[-1])
    if first != 0 or last != e:
        raise spec.PluginSpecError(
            f"input 'rowptr' must run from 0 to E = {e} (the length of 'col'), got {first} .. {last}"
        )
    if num_nodes and bool((rowptr[1:] < rowptr[:-1]).any()):
        i = int(torch.nonzero(rowptr[1:] < rowptr[:-1])[0])
        raise spec.PluginSpecError(f"input 'rowptr' decreases at row {i}: {int(rowptr[i])} -> {int(rowptr[i + 1])}")
    if e:
        lo, hi = int(col.min()), int(col.max())
        if lo < 0 or hi >= num_nodes:
            raise spec.PluginSpecError(f"input 'col' has node ids in [{lo}, {hi}], outside [0, {num_nodes - 1}]")


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
    ``q, k, v, bias`` are float32, float16 or bfloat16 (one dtype); the output has that dtype and
    is accumulated in float32. ``scale`` defaults to ``1/sqrt(D)``. Forward only (no autograd).
    Shapes, dtypes and devices are checked; values are not (see :func:`check_csr`).
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

    config = spec.select_config(h, d, dtypes[0]) if config is None else spec.check_config(h, d, config)
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    if n == 0:
        return out
    e = col.numel()
    part = torch.empty(spec.part_shape(e, h, d, config), dtype=torch.float32, device=q.device)
    interpret = _use_interpreter(q.device)
    q, k, v, rowptr, col, bias_arg = (t.contiguous() for t in tensors.values())
    by_name = {"q": q, "k": k, "v": v, "rowptr": rowptr, "col": col, "bias": bias_arg}
    by_name.update({"n_nodes": n, "n_edges": e, "out": out, "out_in": out, "part": part})
    # Triton launches on the current device, not the tensors': cuda:1 tensors with cuda:0 current
    # would hand cuda:1 pointers to a kernel running on cuda:0.
    with contextlib.nullcontext() if interpret or q.device.type == "cpu" else torch.cuda.device(q.device):
        for kernel in spec.KERNELS:  # partials, then combine, on the same stream
            fn = interpreted_kernel(kernel) if interpret else jit_kernel(kernel)
            _launch(kernel, fn, by_name, attrs, config, warmup=False)
    return out


def _launch(
    kernel: str, fn: Any, by_name: dict[str, Any], attrs: spec.Attributes, config: spec.KernelConfig, warmup: bool
) -> None:
    """Launch ``kernel`` (or, with ``warmup``, only compile it) with its arguments in the plugin's
    order: the launcher and :func:`warm_up` share this, so both ask Triton for the same binary, and
    with :data:`~trt_plugins.spec.FP_FUSION` as the AOT compile has it. (The interpreter drops the
    compile options it has no use for.)"""
    n, e = by_name["n_nodes"], by_name["n_edges"]
    grid = spec.grid(kernel, n, e, attrs.heads, config)
    args = [by_name[name] for name in spec.KERNEL_ARGS[kernel]]
    options = {
        **spec.constexprs(kernel, attrs, config),
        "num_warps": spec.kernel_warps(kernel, config),
        "num_stages": config.num_stages,
        "enable_fp_fusion": spec.FP_FUSION,
    }
    if warmup:
        fn.warmup(*args, grid=grid, **options)
    else:
        fn[grid](*args, **options)


def warm_up(
    dtype: torch.dtype,
    index_dtype: torch.dtype,
    heads: int,
    head_dim: int,
    n_nodes: int,
    n_edges: int,
    config: spec.KernelConfig,
    has_bias: bool = False,
    scale: float | None = None,
) -> None:
    """Compile both kernels for a later :func:`sparse_graph_attention` call on a GPU, without
    launching them and without tensors: Triton keeps the binaries in its on-disk cache, so a process
    that launches them later loads instead of compiling (a benchmark compiles its variants in
    parallel this way). Triton specializes on the dtypes, on pointer alignment (dtypes stand for
    aligned tensors) and on whether ``n_nodes``/``n_edges`` are 1 or multiples of 16, so pass the
    sizes of the graph that will run."""
    attrs = spec.validate_attributes(
        heads, head_dim, spec.default_scale(head_dim) if scale is None else scale, has_bias
    )
    spec.check_config(heads, head_dim, config)
    by_name: dict[str, Any] = dict.fromkeys(("q", "k", "v", "bias", "out", "out_in"), dtype)
    by_name.update({"rowptr": index_dtype, "col": index_dtype, "part": torch.float32})
    by_name.update({"n_nodes": n_nodes, "n_edges": n_edges})
    for kernel in spec.KERNELS:
        _launch(kernel, jit_kernel(kernel), by_name, attrs, config, warmup=True)


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
    bias_csr = None if bias is None else bias.index_select(0, perm.to(bias.device))  # edge_index may be on CPU
    return sparse_graph_attention(q, k, v, rowptr.to(q.device), col.to(q.device), bias_csr, scale)
