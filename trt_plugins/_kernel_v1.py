"""The Triton kernel source, undecorated, using only Triton *builtins*.

Triton 3.9 decides between compiler and interpreter when ``@triton.jit`` decorates
(``knobs.runtime.interpret``, read from ``TRITON_INTERPRET`` at that moment). Two consequences
shape this module:

* the kernel is not decorated here; :mod:`trt_plugins.kernels` wraps it explicitly, as a
  ``JITFunction`` (AOT compilation, CUDA) or an ``InterpretedFunction`` (CPU tensors);
* it calls no ``@jit`` helper of ``triton.language`` (``tl.max``, ``tl.sum``, ``tl.zeros`` are
  decorated once, when triton is first imported, in whichever mode the environment said then).
  Reductions go through the builtin ``tl.reduce`` with the combine functions below, wrapped as
  ``JITFunction``: the compiler inlines them and the interpreter calls their ``.fn``.

So the same process can interpret the kernel on CPU and compile it to PTX, whatever
``TRITON_INTERPRET`` said when triton was imported. The module holds kernel code only, because
Triton's interpreter writes its own names into the kernel's globals.
"""

import triton.language as tl
from triton.runtime.jit import JITFunction


def _maximum(a, b):
    return tl.maximum(a, b)


def _add(a, b):
    return a + b


_max_combine = JITFunction(_maximum)
_sum_combine = JITFunction(_add)


def sparse_graph_attention_fwd(
    q,
    k,
    v,
    rowptr,
    col,
    bias,
    n_nodes,
    n_heads,
    out,
    HEAD_DIM: tl.constexpr,
    SCALE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_E: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """One program per (block of BLOCK_M destinations, head).

    The block's incoming edges are contiguous in CSR order (``rowptr[m0] .. rowptr[m0 + BLOCK_M]``),
    so the program walks them in tiles of BLOCK_E with an online softmax per destination row:
    scores ``S = Q K^T`` for the tile ([BLOCK_M, BLOCK_E], entries outside a row's own edge range
    masked to -inf), running max/sum per row, ``acc += P V``. Work is proportional to the block's
    edge count and no [E, H] score tensor is ever stored. Pointers are to contiguous
    ``[n_nodes, n_heads, HEAD_DIM]`` (q, k, v, out), ``[E, n_heads]`` (bias, CSR order).
    """
    pid_m = tl.program_id(0)
    head = tl.program_id(1)
    row_stride = n_heads * HEAD_DIM

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_nodes
    dims = tl.arange(0, BLOCK_D)
    dim_ok = dims < HEAD_DIM

    row_start = tl.load(rowptr + rows, mask=row_ok, other=0).to(tl.int32)
    row_end = tl.load(rowptr + rows + 1, mask=row_ok, other=0).to(tl.int32)
    first_row = tl.minimum(pid_m * BLOCK_M, n_nodes)
    last_row = tl.minimum(pid_m * BLOCK_M + BLOCK_M, n_nodes)
    edge_begin = tl.load(rowptr + first_row).to(tl.int32)
    edge_end = tl.load(rowptr + last_row).to(tl.int32)

    q_off = rows.to(tl.int64)[:, None] * row_stride + head * HEAD_DIM + dims[None, :]
    q_tile = tl.load(q + q_off, mask=row_ok[:, None] & dim_ok[None, :], other=0.0)

    # Scores live in log2 units so that exp2 can be used: s2 = s * log2(e).
    qk_scale = SCALE * 1.4426950408889634
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.full([BLOCK_M], 0.0, dtype=tl.float32)
    acc = tl.full([BLOCK_M, BLOCK_D], 0.0, dtype=tl.float32)

    for e0 in range(edge_begin, edge_end, BLOCK_E):
        edges = e0 + tl.arange(0, BLOCK_E)
        edge_ok = edges < edge_end
        src = tl.load(col + edges, mask=edge_ok, other=0).to(tl.int64)
        kv_off = src[:, None] * row_stride + head * HEAD_DIM + dims[None, :]
        kv_mask = edge_ok[:, None] & dim_ok[None, :]
        k_tile = tl.load(k + kv_off, mask=kv_mask, other=0.0)
        v_tile = tl.load(v + kv_off, mask=kv_mask, other=0.0)

        s = tl.dot(q_tile, tl.trans(k_tile), input_precision="ieee") * qk_scale
        if HAS_BIAS:
            b = tl.load(bias + edges.to(tl.int64) * n_heads + head, mask=edge_ok, other=0.0)
            s = s + b.to(tl.float32)[None, :] * 1.4426950408889634
        own = (edges[None, :] >= row_start[:, None]) & (edges[None, :] < row_end[:, None])
        s = tl.where(own, s, float("-inf"))

        m_new = tl.maximum(m_i, tl.reduce(s, 1, _max_combine))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with no edge yet stay at 0
        alpha = tl.exp2(m_i - m_ref)
        p = tl.exp2(s - m_ref[:, None])
        l_i = l_i * alpha + tl.reduce(p, 1, _sum_combine)
        acc = acc * alpha[:, None] + tl.dot(p.to(v_tile.dtype), v_tile, input_precision="ieee")
        m_i = m_new

    result = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]  # zero in-degree: acc == 0 -> 0
    tl.store(out + q_off, result.to(out.dtype.element_ty), mask=row_ok[:, None] & dim_ok[None, :])
