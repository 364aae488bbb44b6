"""Sparse graph attention, kernel v2: work split by edges, not by destinations. Source only.

Two kernels, run one after the other on the same stream:

``sga_partials`` -- grid ``(n_chunks,)``, ``n_chunks = max(1, cdiv(E, CHUNK))``. Program ``c`` owns
the CSR edges ``[c*CHUNK, (c+1)*CHUNK)``, whatever rows they belong to, so no program's work grows
with the largest in-degree. It walks them in tiles of ``TILE_E`` edges and reads, per edge, the
whole ``[HEADS, HEAD_DIM]`` row of K and V (one contiguous ``H*D`` read; all heads in one program).
Per tile it finds each edge's destination by a binary search over ``rowptr`` and does a segmented
softmax over the destination runs with ``tl.associative_scan``. A row whose edges all lie in the
chunk is written to ``out`` as it ends. At most two rows per chunk are cut by the chunk's borders;
their partial state ``(acc, max, sum)`` goes to ``part`` (record ``2c`` for the row that started
in an earlier chunk, ``2c + 1`` for the row that goes on past the chunk), and a row cut by a tile
border inside the chunk is carried to the next tile in registers.

``sga_combine`` -- grid ``(max(cdiv(N, BLOCK_R), n_chunks, 1), HEADS)``. Program ``(p, h)`` writes
zeros for head ``h`` of the destinations in row block ``p`` that have no incoming edge, and, if
chunk ``p``'s first row started in an earlier chunk and ends in chunk ``p``, merges that row's
partial records (the flash-decoding combine) and writes it. Only that program touches the row, and
each record is read once, however many chunks a hub row spans.

Both grids are functions of ``(N, E, HEADS)`` alone; no host value is read at launch; neither
kernel uses Triton scratch memory, so both can be compiled ahead of time for TensorRT
(:mod:`trt_plugins.aot`) and captured in a CUDA graph.

Scores live in log2 units (``exp2``), accumulation is float32 for every input dtype. A row with no
incoming edge gives 0; duplicate edges count once each (they are separate CSR entries).

The functions are undecorated and call only Triton builtins (``tl.where``, ``tl.reduce``,
``tl.associative_scan``...): :mod:`trt_plugins.kernels` wraps them as ``JITFunction`` (GPU, AOT)
or ``InterpretedFunction`` (CPU), which works in one process whatever ``TRITON_INTERPRET`` said
when triton was imported (Triton's own ``tl.max``/``tl.sum`` are decorated at import time, in
whichever mode). The combine functions are wrapped as ``JITFunction`` here: the compiler inlines
them and the interpreter calls their ``.fn``; the row search both kernels share is a
``_DeviceFunction``, which the interpreter may call directly. Segment combines key on the destination id, which
grows along the CSR, so they are commutative and the scan's operand order cannot matter.
"""

import triton.language as tl
from triton.runtime.jit import JITFunction

LOG2E = tl.constexpr(1.4426950408889634)


def _maximum(a, b):
    return tl.maximum(a, b)


def _add(a, b):
    return a + b


def _seg_max_fwd(ia, va, ib, vb):
    """Max over the elements of the latest segment seen (segment id = destination row)."""
    v = tl.where(ia == ib, tl.maximum(va, vb), tl.where(ia > ib, va, vb))
    return tl.maximum(ia, ib), v


def _seg_max_bwd(ia, va, ib, vb):
    """The same, scanning from the end: the latest segment is the one with the smallest id."""
    v = tl.where(ia == ib, tl.maximum(va, vb), tl.where(ia < ib, va, vb))
    return tl.minimum(ia, ib), v


def _seg_sum_fwd(ia, va, ib, vb):
    """Sum over the elements of the latest segment seen."""
    v = tl.where(ia == ib, va + vb, tl.where(ia > ib, va, vb))
    return tl.maximum(ia, ib), v


def _first_row(rowptr, n_nodes, e):
    """The row of CSR edge ``e``: the largest ``r`` with ``rowptr[r] <= e`` (``e < rowptr[N] = E``)."""
    lo = n_nodes * 0
    hi = n_nodes + 0
    while hi - lo > 1:
        mid = lo + (hi - lo) // 2  # (lo + hi) // 2 wraps past 2**31 on graphs of more than 2**30 nodes
        go = tl.load(rowptr + mid).to(tl.int32) <= e
        lo = tl.where(go, mid, lo)
        hi = tl.where(go, hi, mid)
    return lo


class _DeviceFunction(JITFunction):
    """A helper the kernels call directly, both ways: the compiler inlines a ``JITFunction``, and
    Triton's interpreter calls the object, which a plain ``JITFunction`` refuses ("Cannot call
    @triton.jit'd outside of the scope of a kernel"), so this one runs its function."""

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


_row_of_edge = _DeviceFunction(_first_row)
_max_combine = JITFunction(_maximum)
_sum_combine = JITFunction(_add)
_seg_max_fwd_combine = JITFunction(_seg_max_fwd)
_seg_max_bwd_combine = JITFunction(_seg_max_bwd)
_seg_sum_fwd_combine = JITFunction(_seg_sum_fwd)


def sga_partials(
    q,
    k,
    v,
    rowptr,
    col,
    bias,
    n_nodes,
    n_edges,
    out,
    part,
    HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    SCALE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    TILE_E: tl.constexpr,
    TILES: tl.constexpr,
    HEAD_GROUP: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PREFETCH: tl.constexpr,
    DOT_AGG: tl.constexpr,
    MMA: tl.constexpr,
):
    """Kernel 1. ``q, k, v, out``: contiguous ``[N, HEADS, HEAD_DIM]``; ``rowptr [N+1]``, ``col [E]``;
    ``bias [E, HEADS]`` in CSR order (read only if ``HAS_BIAS``); ``part``: float32
    ``[2 * n_chunks, HEADS, HEAD_DIM + 2]`` (acc, then max and sum in log2 units). Program
    ``(c, g)`` handles heads ``g*HEAD_GROUP ..`` of chunk ``c``: all heads when a row is small, a
    group of at least 256 contiguous bytes when rows are wide (so K/V/Q tiles fit in registers).
    ``PREFETCH``: gather the next tile's K/V rows before working on this one, so that a program keeps
    two tiles of gathers in flight (more registers, fewer programs per SM: the sweep decides).
    ``DOT_AGG``: sum ``p * v`` over each destination's edges with a matrix product (tensor cores)
    instead of a segmented scan over the ``[TILE_E, BLOCK_H, BLOCK_D]`` block. ``MMA``: compute the
    scores and the sums as per-head tensor-core products on K, Q and V as loaded (pays for 16-bit
    inputs with wide heads)."""
    chunk = tl.program_id(0)
    head0 = tl.program_id(1) * HEAD_GROUP
    CHUNK: tl.constexpr = TILE_E * TILES
    ROW: tl.constexpr = HEADS * HEAD_DIM
    PREC: tl.constexpr = HEADS * (HEAD_DIM + 2)
    c_start = chunk * CHUNK
    c_end = tl.minimum(c_start + CHUNK, n_edges)

    heads = head0 + tl.arange(0, BLOCK_H)
    dims = tl.arange(0, BLOCK_D)
    h_ok = (tl.arange(0, BLOCK_H) < HEAD_GROUP) & (heads < HEADS)
    hd_ok = h_ok[:, None] & (dims < HEAD_DIM)[None, :]
    hd_off = heads[:, None] * HEAD_DIM + dims[None, :]
    lanes = tl.arange(0, TILE_E)
    qk_scale = SCALE * LOG2E

    # The sources of the first tile; each iteration prefetches the next tile's, so that its K/V
    # gathers can start before the row search of that tile (they do not depend on it). With
    # PREFETCH, the gathers run one tile ahead and the sources two.
    src = tl.load(col + c_start + lanes, mask=c_start + lanes < c_end, other=0).to(tl.int64)
    if PREFETCH:
        first_ok = (c_start + lanes < c_end)[:, None, None] & hd_ok[None, :, :]
        k_nxt = tl.load(k + src[:, None, None] * ROW + hd_off[None, :, :], mask=first_ok, other=0.0)
        v_nxt = tl.load(v + src[:, None, None] * ROW + hd_off[None, :, :], mask=first_ok, other=0.0)
        nxt = c_start + TILE_E + lanes
        src = tl.load(col + nxt, mask=nxt < c_end, other=0).to(tl.int64)

    lo_row = _row_of_edge(rowptr, n_nodes, c_start)  # the row of the chunk's first edge

    carry_row = lo_row * 0 - 1  # the row cut by the previous tile border (-1: none yet)
    carry_m = tl.full([BLOCK_H], float("-inf"), tl.float32)
    carry_l = tl.full([BLOCK_H], 0.0, tl.float32)
    carry_acc = tl.full([BLOCK_H, BLOCK_D], 0.0, tl.float32)

    for t_start in range(c_start, c_end, TILE_E):
        t_end = tl.minimum(t_start + TILE_E, c_end)
        edges = t_start + lanes
        e_ok = edges < t_end
        m3 = e_ok[:, None, None] & hd_ok[None, :, :]
        kv_off = src[:, None, None] * ROW + hd_off[None, :, :]
        if PREFETCH:  # this tile's rows arrived during the last one; start the next tile's
            k_raw = k_nxt
            v_raw = v_nxt
            m3_nxt = (edges + TILE_E < c_end)[:, None, None] & hd_ok[None, :, :]
            k_nxt = tl.load(k + kv_off, mask=m3_nxt, other=0.0)
            v_nxt = tl.load(v + kv_off, mask=m3_nxt, other=0.0)
            nxt = edges + 2 * TILE_E
        else:
            k_raw = tl.load(k + kv_off, mask=m3, other=0.0)
            v_raw = tl.load(v + kv_off, mask=m3, other=0.0)
            nxt = edges + TILE_E
        k_t = k_raw.to(tl.float32)
        v_t = v_raw.to(tl.float32)
        src = tl.load(col + nxt, mask=nxt < c_end, other=0).to(tl.int64)

        # Upper bound for the tile's rows by galloping from lo_row, then each edge's row by a
        # binary search inside [lo_row, hi_row): rowptr[lo] <= e < rowptr[hi] throughout.
        # The step doubles but never past the rows left (n_nodes - lo_row), so it cannot wrap in
        # int32 after a run of more than 2**30 rows without edges.
        step = lo_row * 0 + 1
        hi_row = tl.minimum(lo_row + step, n_nodes)
        while (hi_row < n_nodes) & (tl.load(rowptr + hi_row).to(tl.int32) <= t_end - 1):
            step = step + tl.minimum(step, n_nodes - lo_row - step)
            hi_row = lo_row + step
        lo = tl.full([TILE_E], 0, tl.int32) + lo_row
        hi = tl.full([TILE_E], 0, tl.int32) + hi_row
        span = hi_row - lo_row
        while span > 1:
            mid = lo + (hi - lo) // 2
            go = tl.load(rowptr + mid).to(tl.int32) <= edges
            lo = tl.where(go, mid, lo)
            hi = tl.where(go, hi, mid)
            span = (span + 1) // 2
        # Lanes past the tile end get distinct ids past every row, so they form segments of their own.
        dst = tl.where(e_ok, lo, n_nodes + lanes)
        row_beg = tl.load(rowptr + lo).to(tl.int32)
        row_end = tl.load(rowptr + lo + 1).to(tl.int32)
        q_off = lo.to(tl.int64)[:, None, None] * ROW + hd_off[None, :, :]
        q_raw = tl.load(q + q_off, mask=m3, other=0.0)
        if MMA:
            # Per head, K [tile, dim] @ Q^T [dim, tile] on tensor cores, as loaded: its diagonal is
            # the scores. The tensor cores idle anyway; what this saves is the per-element convert,
            # multiply and cross-lane sum. fp16 products are exact in the float32 accumulator;
            # bf16 values are exact in TF32 (7-bit mantissa; Triton's interpreter cannot multiply
            # bf16 matrices); float32 takes three TF32 products.
            kh = tl.permute(k_raw, (1, 0, 2))
            qh = tl.permute(q_raw, (1, 2, 0))
            if v.dtype.element_ty == tl.float32:
                sm = tl.dot(kh, qh, input_precision="tf32x3")
            elif v.dtype.element_ty == tl.float16:
                sm = tl.dot(kh, qh)
            else:
                sm = tl.dot(kh.to(tl.float32), qh.to(tl.float32), input_precision="tf32")
            eye = lanes[:, None] == lanes[None, :]
            s = tl.permute(tl.reduce(tl.where(eye[None, :, :], sm, 0.0), 2, _sum_combine), (1, 0)) * qk_scale
        else:
            q_t = q_raw.to(tl.float32)
            s = tl.reduce(q_t * k_t, 2, _sum_combine) * qk_scale  # [TILE_E, BLOCK_H]
        if HAS_BIAS:
            b_off = edges.to(tl.int64)[:, None] * HEADS + heads[None, :]
            b = tl.load(bias + b_off, mask=e_ok[:, None] & h_ok[None, :], other=0.0)
            s = s + b.to(tl.float32) * LOG2E
        # An infinite score is an overflow whose value is lost: NaN (inf - inf) makes its row's output
        # NaN, which a deployment refuses, where the softmax weighed a -inf as 0 and answered finitely.
        s = s + (s - s)
        s = tl.where(e_ok[:, None], s, float("-inf"))

        ids = tl.broadcast_to(dst[:, None], [TILE_E, BLOCK_H])
        _, m_fwd = tl.associative_scan((ids, s), 0, _seg_max_fwd_combine)
        _, m_bwd = tl.associative_scan((ids, s), 0, _seg_max_bwd_combine, reverse=True)
        m_row = tl.maximum(m_fwd, m_bwd)  # the max of each edge's row within the tile
        # The row carried over from the previous tile (only ever the tile's first) takes the larger
        # of its two maxima as reference from the start, so only the carried state is rescaled.
        cont = (dst == carry_row)[:, None]
        m_new = tl.where(cont, tl.maximum(m_row, carry_m[None, :]), m_row)
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(s - m_ref)
        _, l_row = tl.associative_scan((ids, p), 0, _seg_sum_fwd_combine)
        # acc and l_row are read only at a row's last edge in the tile, where a segmented prefix sum
        # and the row's whole sum agree, so either way of summing gives the same result there.
        if MMA:
            # Per head, (same * p) [tile, tile] @ V [tile, dim], with same[i, j] = 1 where edges i
            # and j have one destination: p folds into the 0/1 matrix, so V goes to the tensor cores
            # as loaded. fp16 rounds p to fp16 (11 bits, as fine as the output's own rounding); bf16
            # and float32 as for the scores.
            same = (dst[:, None] == dst[None, :]).to(tl.float32)
            w = same[None, :, :] * tl.permute(p, (1, 0))[:, None, :]
            vh = tl.permute(v_raw, (1, 0, 2))
            if v.dtype.element_ty == tl.float32:
                tot = tl.dot(w, vh, input_precision="tf32x3")
            elif v.dtype.element_ty == tl.float16:
                tot = tl.dot(w.to(tl.float16), vh)
            else:
                tot = tl.dot(w, vh.to(tl.float32), input_precision="tf32")
            acc = tl.permute(tot, (1, 0, 2))
        elif DOT_AGG:
            # same[i, j] = 1 where edges i and j have one destination: same @ (p * v) is every row's
            # sum. The 0/1 matrix is exact in TF32. For float32, p * v = hi + lo with hi exact in
            # TF32 (mantissa cut to 10 bits) and lo exact in float32: two TF32 products keep float32
            # accuracy ("tf32x3" would also multiply same's residual, which is zero). For 16-bit
            # inputs one TF32 product rounds p * v no more than their own 10 or 7-bit mantissa would,
            # in float32's range (Triton's interpreter also cannot multiply bfloat16 matrices: it
            # multiplies their bit patterns).
            same = (dst[:, None] == dst[None, :]).to(tl.float32)
            pv = tl.reshape(p[:, :, None] * v_t, [TILE_E, BLOCK_H * BLOCK_D])
            if v.dtype.element_ty == tl.float32:
                hi = (pv.to(tl.uint32, bitcast=True) & 0xFFFFE000).to(tl.float32, bitcast=True)
                tot = tl.dot(same, hi, input_precision="tf32")
                tot = tl.dot(same, pv - hi, tot, input_precision="tf32")
            else:
                tot = tl.dot(same, pv, input_precision="tf32")
            acc = tl.reshape(tot, [TILE_E, BLOCK_H, BLOCK_D])
        else:
            ids3 = tl.broadcast_to(dst[:, None, None], [TILE_E, BLOCK_H, BLOCK_D])
            _, acc = tl.associative_scan((ids3, p[:, :, None] * v_t), 0, _seg_sum_fwd_combine)
        a_old = tl.where(cont, tl.exp2(carry_m[None, :] - m_ref), 0.0)
        l_fin = l_row + carry_l[None, :] * a_old
        acc = acc + carry_acc[None, :, :] * a_old[:, :, None]

        # Each row's totals sit at its last edge in the tile.
        is_end = e_ok & ((row_end == edges + 1) | (edges == t_end - 1))
        done_here = row_end <= t_end
        started_before = row_beg < c_start
        final = is_end & done_here & (row_beg >= c_start)
        o_off = lo.to(tl.int64)[:, None, None] * ROW + hd_off[None, :, :]
        inv_l = 1.0 / tl.where(l_fin > 0.0, l_fin, 1.0)  # one division per row and head, not per element
        res = acc * inv_l[:, :, None]
        tl.store(out + o_off, res.to(out.dtype.element_ty), mask=final[:, None, None] & hd_ok[None, :, :])

        # Partial records, for the row that began before the chunk and the row going on past it:
        # only the chunk's first tiles (while the tile's first row began before it) and its last
        # tile can hold one, so the other tiles branch past these stores.
        if (tl.load(rowptr + lo_row).to(tl.int32) < c_start) | (t_end == c_end):
            # rows going on past the chunk are cut at its last tile (a scalar select: the
            # interpreter mis-types scalar-bool & vector-bool)
            cut_at = tl.where(t_end == c_end, c_end, 2147483647)
            cut = is_end & ((started_before & done_here) | (row_end > cut_at))
            rec = chunk.to(tl.int64) * 2 + tl.where(started_before, 0, 1)
            p_off = rec[:, None] * PREC + heads[None, :] * (HEAD_DIM + 2)
            p_mask = cut[:, None] & h_ok[None, :]
            p_acc = part + p_off[:, :, None] + dims[None, None, :]
            tl.store(p_acc, acc, mask=p_mask[:, :, None] & hd_ok[None, :, :])
            tl.store(part + p_off + HEAD_DIM, m_new, mask=p_mask)
            tl.store(part + p_off + HEAD_DIM + 1, l_fin, mask=p_mask)

        # Carry the tile's last row (it may go on in the next tile; if not, no later edge matches it).
        last = edges == t_end - 1
        carry_row = tl.reduce(tl.where(last, dst, -1), 0, _max_combine)
        carry_m = tl.reduce(tl.where(last[:, None], m_new, float("-inf")), 0, _max_combine)
        carry_l = tl.reduce(tl.where(last[:, None], l_fin, 0.0), 0, _sum_combine)
        carry_acc = tl.reduce(tl.where(last[:, None, None], acc, 0.0), 0, _sum_combine)
        lo_row = carry_row


def sga_combine(
    out_in,
    part,
    rowptr,
    n_nodes,
    n_edges,
    out,
    HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    TILE_E: tl.constexpr,
    TILES: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Kernel 2: zero rows without incoming edge, merge rows cut by chunk borders. ``out`` is
    ``out_in`` (TensorRT aliases them; ``out_in`` is never read and is only here because a plugin's
    kernel receives its inputs before its outputs)."""
    pid = tl.program_id(0)
    head = tl.program_id(1)
    CHUNK: tl.constexpr = TILE_E * TILES
    ROW: tl.constexpr = HEADS * HEAD_DIM
    PREC: tl.constexpr = HEADS * (HEAD_DIM + 2)
    dims = tl.arange(0, BLOCK_D)
    d_ok = dims < HEAD_DIM

    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    r_ok = rows < n_nodes
    beg = tl.load(rowptr + rows, mask=r_ok, other=0)
    end = tl.load(rowptr + rows + 1, mask=r_ok, other=0)
    empty = r_ok & (beg == end)
    z_off = rows.to(tl.int64)[:, None] * ROW + head * HEAD_DIM + dims[None, :]
    zeros = tl.full([BLOCK_R, BLOCK_D], 0.0, tl.float32)
    tl.store(out + z_off, zeros.to(out.dtype.element_ty), mask=empty[:, None] & d_ok[None, :])

    n_chunks = (n_edges + CHUNK - 1) // CHUNK
    if (pid > 0) & (pid < n_chunks):
        c_start = pid * CHUNK
        lo_row = _row_of_edge(rowptr, n_nodes, c_start)
        first = tl.load(rowptr + lo_row).to(tl.int32)
        last = tl.load(rowptr + lo_row + 1).to(tl.int32)
        # This chunk's first row began in chunk c_a < pid and ends in this chunk: merge its records.
        # A row that goes on past the chunk is merged by the program of its last chunk only, so that
        # one program writes it (programs run in any order) and reads each record once.
        if (first < c_start) & (last <= c_start + CHUNK):
            c_a = first // CHUNK
            m_i = tl.full([BLOCK_P], float("-inf"), tl.float32)
            l_i = tl.full([BLOCK_P], 0.0, tl.float32)
            acc = tl.full([BLOCK_P, BLOCK_D], 0.0, tl.float32)
            for c0 in range(c_a, pid + 1, BLOCK_P):
                cs = c0 + tl.arange(0, BLOCK_P)
                ok = cs <= pid
                rec = cs.to(tl.int64) * 2 + tl.where(cs == c_a, 1, 0)
                base = rec * PREC + head * (HEAD_DIM + 2)
                pm = tl.load(part + base + HEAD_DIM, mask=ok, other=float("-inf"))
                pl = tl.load(part + base + HEAD_DIM + 1, mask=ok, other=0.0)
                pa = tl.load(part + base[:, None] + dims[None, :], mask=ok[:, None] & d_ok[None, :], other=0.0)
                # Lane-wise online merge; the lanes are merged once at the end.
                m_new = tl.maximum(m_i, pm)
                m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
                a = tl.exp2(m_i - m_ref)
                b = tl.exp2(pm - m_ref)
                l_i = l_i * a + pl * b
                acc = acc * a[:, None] + pa * b[:, None]
                m_i = m_new
            m = tl.reduce(m_i, 0, _max_combine)
            m = tl.where(m == float("-inf"), 0.0, m)
            w = tl.exp2(m_i - m)
            l_tot = tl.reduce(l_i * w, 0, _sum_combine)
            acc_tot = tl.reduce(acc * w[:, None], 0, _sum_combine)
            res = acc_tot / tl.where(l_tot > 0.0, l_tot, 1.0)
            o_off = lo_row.to(tl.int64) * ROW + head * HEAD_DIM + dims
            tl.store(out + o_off, res.to(out.dtype.element_ty), mask=d_ok)
