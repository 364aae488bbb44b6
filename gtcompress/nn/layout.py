"""The attention layouts a model's layers read: padded per-graph rows and neighbour lists.

:class:`DenseLayout` is the padded per-graph layout ``[B, L, ·]`` (L = largest graph) for dense
attention. Built from the sorted ``batch`` vector; ``slot[i] = batch[i] * L + position of i in its
graph`` maps each node to its row of the flattened padded tensor, so padding and unpadding are one
scatter / one gather. :class:`NeighbourLists` carries the ``padded`` lowering's degree-bucketed
neighbour lists.

Both are data, used by :mod:`gtcompress.nn.mha` and the models; this module imports only
:data:`~gtcompress.nn.attention.MASK` from the attention definition, never the multi-head module,
so no import circle runs through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn import functional as F

from gtcompress.nn.attention import MASK, mask_value, overflow_to_nan


class NeighbourLists(NamedTuple):
    """The ``padded`` lowering's layout (see :func:`gtcompress.preprocess.layouts.bucketed_layout`).

    ``buckets``: per degree bucket ``(node [R_b] | None, src [R_b,K_b], edge [R_b,K_b], mask [R_b,K_b])``
    (``node`` is None for a single bucket holding every node in order); ``inv [N]``: row of each node
    in the concatenated bucket outputs (None for a single unpermuted bucket).
    """

    buckets: list[tuple[Tensor | None, Tensor, Tensor, Tensor]]
    inv: Tensor | None = None


@dataclass
class DenseLayout:
    slot: Tensor  # [N] int64 row in the flattened [B*L] padded tensor
    pos: Tensor  # [N] int64 position of each node within its graph
    valid: Tensor  # [B, L] bool, False on padding
    num_rows: int  # padded rows B: one per graph, fewer when small graphs share rows (from_slots, packed)
    max_nodes: int
    _node_at_slot: Tensor | None = field(default=None, repr=False)  # [B*L] node id, N on padding
    _head_indices: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict, repr=False)  # per head count

    @property
    def num_cells(self) -> int:
        """``B*L*L``: the (row, dst, src) cells that :meth:`pair_index` indexes."""
        return self.num_rows * self.max_nodes * self.max_nodes

    @classmethod
    def from_batch(cls, batch: Tensor, num_graphs: int) -> DenseLayout:
        # Not bincount: its length is read from the data (max id + 1), which torch.compile(fullgraph=True)
        # cannot trace; graph ids lie in [0, num_graphs) (GraphBatch checks), so this is the same count.
        counts = torch.zeros(num_graphs, dtype=torch.long, device=batch.device)
        counts = counts.scatter_add(0, batch, torch.ones_like(batch))
        ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        pos = torch.arange(batch.shape[0], device=batch.device) - ptr.index_select(0, batch)
        if torch.compiler.is_compiling():
            # Traced, the padded length is an unbacked size, and inductor's bmm lowering (torch 2.13) guards
            # on its being 1 ("Could not guard on data-dependent expression Eq(u0, 1)"): GPS, Graphormer and
            # a dense GT failed torch.compile(fullgraph=True). At least 2, it is known not to be 1; a lone
            # 1-node graph gains one masked padding slot, which no answer reads.
            max_nodes = int(counts.max().clamp(min=2))
            torch._check(max_nodes >= 2)
        else:
            max_nodes = int(counts.max()) if counts.numel() else 0
        valid = torch.arange(max_nodes, device=batch.device).unsqueeze(0) < counts.unsqueeze(1)
        return cls(batch * max_nodes + pos, pos, valid, num_graphs, max_nodes)

    @classmethod
    def from_slots(cls, node_slot: Tensor, pad_mask: Tensor) -> DenseLayout:
        """From pre-computed ``node_slot [N]`` and ``pad_mask [R, L]`` (export: shapes stay symbolic). Rows
        may hold several graphs (:func:`gtcompress.preprocess.layouts.dense_layout` with ``pack``), so a
        node's position is its slot modulo ``L``, not counted from its graph's start."""
        rows, max_nodes = pad_mask.shape[0], pad_mask.shape[1]
        pos = node_slot - torch.div(node_slot, max_nodes, rounding_mode="floor") * max_nodes
        return cls(node_slot, pos, pad_mask, rows, max_nodes)

    def node_at_slot(self, n: int) -> Tensor:
        """``[B*L]`` node of each padded row, ``n`` (= N) on padding."""
        if self._node_at_slot is None:
            idx = torch.full((self.num_rows * self.max_nodes,), 0, dtype=torch.long, device=self.slot.device) + n
            self._node_at_slot = idx.scatter(0, self.slot, torch.arange(n, device=self.slot.device))
        return self._node_at_slot

    def pad(self, h: Tensor) -> Tensor:
        """``[N, F] -> [B, L, F]`` with zeros on padding: one Gather from ``h`` plus a zero row
        (a Gather is several times cheaper than a ScatterElements in ONNX Runtime).

        The zero row is appended by ``F.pad``, not by a Concat with a zeros tensor: inductor (torch
        2.11 to 2.13) writes ``h`` straight into a Concat's buffer and, when a later kernel takes over
        ``h``'s rows in place, may hand the whole buffer to a MatMul of the same size while those rows
        are its input, so a compiled token-pruned GT answered a lone 1-node graph wrong (``[2, d]``
        is the size of the FFN's ``[1, 2d]``). A pad copies ``h`` and shares no buffer with it."""
        padded = F.pad(h, (0, 0, 0, 1)).index_select(0, self.node_at_slot(h.shape[0]))
        return padded.view(self.num_rows, self.max_nodes, h.shape[-1])

    def unpad(self, hd: Tensor) -> Tensor:
        """``[B, L, F] -> [N, F]``."""
        return hd.reshape(-1, hd.shape[-1]).index_select(0, self.slot)

    def _head_index(self, n: int, heads: int) -> tuple[Tensor, Tensor]:
        """Gather indices between node rows ``[N*H, D]`` and head-major padded rows ``[B*H*L, D]``."""
        if heads not in self._head_indices:
            b, l_, dev = self.num_rows, self.max_nodes, self.slot.device
            hs = torch.arange(heads, dtype=torch.long, device=dev)
            # padding (node n) lands on rows n*H.. and is clamped onto the zero row n*H
            pad = (self.node_at_slot(n).view(b, 1, l_) * heads + hs.view(1, heads, 1)).clamp(max=n * heads)
            # node i of graph g at position p sits in row (g*H + h)*L + p = (slot - p)*H + p + h*L
            unpad = ((self.slot - self.pos) * heads + self.pos).unsqueeze(1) + hs.unsqueeze(0) * l_
            self._head_indices[heads] = (pad.reshape(-1), unpad.reshape(-1))
        return self._head_indices[heads]

    def pad_heads(self, x: Tensor, heads: int) -> Tensor:
        """``[N, H*D] -> [B, H, L, D]`` (zeros on padding) by one Gather of (node, head) rows, so
        the head-major layout attention needs costs no Transpose (several times a Gather's cost in
        ONNX Runtime CPU for rows of a few floats)."""
        n, d = x.shape[0], x.shape[1] // heads
        rows = torch.cat([x.reshape(n * heads, d), x.new_zeros((1, d))])
        return rows.index_select(0, self._head_index(n, heads)[0]).view(self.num_rows, heads, self.max_nodes, d)

    def unpad_heads(self, xd: Tensor) -> Tensor:
        """``[B, H, L, D] -> [N, H*D]``: the inverse of :meth:`pad_heads` on real nodes, one Gather."""
        heads, d, n = xd.shape[1], xd.shape[3], self.slot.shape[0]
        return xd.reshape(-1, d).index_select(0, self._head_index(n, heads)[1]).view(n, heads * d)

    def key_padding_bias(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """``[B, 1, 1, L]``: 0 for real keys, :func:`~gtcompress.nn.attention.mask_value` of ``dtype``
        for padding (complete-graph attention; half of ``dtype``'s range)."""
        zero = torch.zeros((), dtype=dtype, device=self.valid.device)
        mask = torch.full((), mask_value(dtype), dtype=dtype, device=self.valid.device)
        return torch.where(self.valid, zero, mask)[:, None, None, :]

    def pair_index(self, edge_index: Tensor, batch: Tensor) -> Tensor:
        """Flattened ``[B*L*L]`` index of each edge's (dst, src) pair, for scattering per-edge values."""
        # (batch[dst] * L + pos[dst]) * L + pos[src], with slot = batch * L + pos. torch.gather on 1-D
        # tensors exports as GatherElements, ~10x cheaper than Gather there in ONNX Runtime CPU.
        src, dst = edge_index[0], edge_index[1]
        return self.slot.gather(0, dst) * self.max_nodes + self.pos.gather(0, src)

    def edge_bias(
        self,
        edge_index: Tensor,
        batch: Tensor,
        bias: Tensor | None = None,
        pair: Tensor | None = None,
        first: Tensor | None = None,
    ) -> Tensor:
        """Per-edge score biases ``[E, H]`` (or none) as a dense additive bias ``[B, H, L, L]``.

        Edges sharing a (dst, src) pair are merged by log-sum-exp, so that the dense softmax weighs
        the pair exactly as the sparse one weighs its edge instances (no bias → ``log(count)``);
        pairs without an edge get :data:`~gtcompress.nn.attention.MASK` (finite, see
        :func:`~gtcompress.nn.attention.dense_attention`). Per-edge biases are merged by
        :meth:`edge_bias_at` on :meth:`pair_index`, which takes the logarithm per edge. ``pair`` and
        ``first``: that index and :meth:`first_of_pair` of it, when the caller has them (a model takes them
        once per forward for all its layers); the merge's tables are per edge, and only the bias is per cell.
        """
        if bias is None:
            return self.log_count_bias(self.edge_counts(edge_index, batch))
        n = self.num_cells
        pair = self.pair_index(edge_index, batch) if pair is None else pair
        first = self.first_of_pair(pair, n) if first is None else first
        heads, cells = bias.shape[1], self.max_nodes * self.max_nodes
        # written head-major, as attention adds it, not [B, L, L, H] then transposed (a Transpose over every
        # cell in ONNX Runtime): pair b*L*L + r of head h is cell (b*H + h)*L*L + r
        row = torch.div(pair, cells, rounding_mode="floor")
        at = (pair + row * ((heads - 1) * cells)).unsqueeze(-1) + torch.arange(heads, device=pair.device) * cells
        per_edge = _merged_per_edge(pair, bias, n, first)
        dense = bias.new_full((n * heads,), mask_value(bias.dtype))
        dense = dense.scatter_reduce(0, at.reshape(-1), per_edge.reshape(-1), reduce="amax")
        return dense.view(self.num_rows, heads, self.max_nodes, self.max_nodes)

    def kept_pair_index(self, edge_index: Tensor, idx: Tensor) -> Tensor:
        """``[E]`` index of each edge's (dst, src) pair among the kept tokens ``idx [B, L']`` (positions),
        flattened over ``[B, L', L']`` by (row, dst column, src column); ``B*L'*L'`` (a spare row) for an
        edge with an end not kept. What a token-pruned layer scatters its per-edge biases by, so that it
        builds them on its kept pairs only."""
        rows, length, lp = self.num_rows, self.max_nodes, idx.shape[1]
        spare = rows * lp * lp
        # each slot's column among the kept tokens (spare: not kept) as a source, and as a destination
        # its row of the kept batch [B*L'] (past spare * L' when not kept)
        src_at = torch.full((rows, length), spare, dtype=torch.long, device=idx.device)
        src_at = src_at.scatter(1, idx, torch.arange(lp, device=idx.device).expand(rows, lp))
        dst_at = src_at + torch.arange(rows, device=idx.device).unsqueeze(1) * lp
        src = src_at.reshape(-1).gather(0, self.slot.gather(0, edge_index[0]))
        dst = dst_at.reshape(-1).gather(0, self.slot.gather(0, edge_index[1]))
        pair = dst * lp + src  # spare * L' and up where an end is not kept
        # a Where, not a clamp: ONNX Runtime 1.31's int64 Min and Clip leave values in [2^31, 2^32) as they
        # are, so an edge leaving a 1,425-token row (1425^3 + its column) scattered past the table
        return torch.where(pair < spare, pair, spare)

    @staticmethod
    def first_of_pair(pair: Tensor, n: int) -> Tensor:
        """``[E]`` the first edge (lowest id) of each edge's pair, by the pair index ``pair [E]`` over ``n`` pairs:
        what :meth:`edge_bias_at` groups a pair's edges by, so that its log-sum-exp tables are ``[E, H]``, not
        ``[n, H]``. It depends on the graph only: taken once per forward, one int64 table over the pairs."""
        edges = pair.shape[0]
        ids = torch.arange(edges, device=pair.device)
        first = torch.full((n,), edges, dtype=torch.long, device=pair.device)
        return first.scatter_reduce(0, pair, ids, reduce="amin").gather(0, pair)

    @staticmethod
    def edge_bias_at(pair: Tensor, bias: Tensor, n: int, first: Tensor | None = None) -> Tensor:
        """Per-edge score biases ``[E, H]`` merged into ``n`` pairs by the pair index ``pair [E]``, ``[n, H]``:
        log-sum-exp per pair, :func:`~gtcompress.nn.attention.mask_value` of the dtype where none (the clamp
        keeps float16 finite). The logarithm is taken per edge (``E*H`` values) and each pair's written by its
        edges, not over all ``n*H``: ONNX Runtime's CPU Log is not vectorised, and a Log, its Where on the
        peaks and their IsNaN, IsInf and Clip over every pair were most of a token-pruned GT layer's bias and
        a quarter of a dense GT's time (``bench/HISTORY.md``). The edges of a pair write the same value; by
        ``amax``, whose gradient a pair's edges share, so that each edge gets its own once (a plain scatter
        would pass it once through each edge's copy), and with the mask, which they reach only clamped, where
        the clamp passes none: one ScatterElements, where ``include_self=False`` exports as two.

        With ``first`` (:meth:`first_of_pair` of the whole graph's pairs) the pair's largest bias and its sum of
        exponentials are gathered in ``[E, H]`` tables at the pair's first edge rather than in two more ``[n, H]``
        tables, each filled and copied over every cell (ONNX Runtime's ScatterElements copies its data): the
        same edges in the same order, so the same values. The pairs ``pair`` merges into may
        be coarser than ``first``'s (a token-pruned layer's spare row): edges in no kept pair are discarded."""
        per_edge = _merged_per_edge(pair, bias, n, first)
        idx = pair.unsqueeze(-1).expand_as(bias)
        return bias.new_full((n, bias.shape[1]), mask_value(bias.dtype)).scatter_reduce(0, idx, per_edge, reduce="amax")

    @staticmethod
    def log_count_bias(counts: Tensor) -> Tensor:
        """``[B, 1, L, L]`` ``log(count)`` from :meth:`edge_counts`, :data:`MASK` where there is no edge."""
        return torch.log(counts).clamp(min=MASK).unsqueeze(1)

    def count_bias_and_rows(
        self, edge_index: Tensor, batch: Tensor, pair: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """:meth:`log_count_bias` and :meth:`rows_with_edges` of the edge counts, with the logarithm
        taken per edge (:meth:`edge_log_counts`) and scattered (:meth:`count_bias_at`); ``pair``:
        :meth:`pair_index`, when the caller has it."""
        flat = self.pair_index(edge_index, batch) if pair is None else pair
        n = self.num_cells
        log_e, counts = self.edge_log_counts(flat, n)
        shape = (self.num_rows, self.max_nodes, self.max_nodes)
        return self.count_bias_at(flat, log_e, n).view(shape).unsqueeze(1), self.rows_with_edges(counts.view(shape))

    @staticmethod
    def edge_log_counts(pair: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """Float32 ``log(count)`` ``[E]`` of each edge's pair among ``n`` pairs by the pair index ``pair [E]``
        (duplicate edges get the same value), and the counts ``[n]``. Taken per edge (``E`` values), not over
        all ``n`` pairs: ``Log`` is not vectorised in ONNX Runtime CPU (~1.7 ns per element)."""
        counts = DenseLayout._pair_counts(pair, n)
        return torch.log(counts.gather(0, pair)), counts

    @staticmethod
    def _pair_counts(pair: Tensor, n: int) -> Tensor:
        """``[n]`` float32 number of edges at each of ``n`` pairs, by the pair index ``pair [E]``."""
        counts = torch.zeros(n, dtype=torch.float32, device=pair.device)
        return counts.scatter_add(0, pair, torch.ones(pair.shape[0], dtype=torch.float32, device=pair.device))

    @staticmethod
    def count_bias_at(pair: Tensor, log_counts: Tensor, n: int) -> Tensor:
        """``[n]`` float32 count bias: each edge's ``log(count)`` (:meth:`edge_log_counts`) written at its pair
        ``pair [E]``, :data:`MASK` where none. :meth:`edge_bias_at` without per-edge biases (the log-sum-exp
        of a pair's zero biases is its ``log(count)``), in one scatter; a pair's edges write the same value.
        The counts need not be taken by ``pair``: a token-pruned layer writes the counts of the whole
        graph's pairs at its kept pairs (the same pairs, an edge with an end not kept at a spare one)."""
        return torch.full((n,), MASK, dtype=torch.float32, device=pair.device).scatter(0, pair, log_counts)

    @staticmethod
    def rows_with_edges(counts: Tensor) -> Tensor:
        """``[B, 1, L, 1]`` 1.0 where a (dst) row of :meth:`edge_counts` has an incoming edge, else 0.0."""
        return (counts.amax(dim=-1) > 0).to(counts.dtype)[:, None, :, None]

    def edge_counts(self, edge_index: Tensor, batch: Tensor) -> Tensor:
        """``[B, L, L]`` multiplicity of each (dst, src) pair (duplicates counted)."""
        counts = self._pair_counts(self.pair_index(edge_index, batch), self.num_cells)
        return counts.view(self.num_rows, self.max_nodes, self.max_nodes)


def _merged_per_edge(pair: Tensor, bias: Tensor, n: int, first: Tensor | None) -> Tensor:
    """``[E, H]`` the log-sum-exp of each edge's pair (:meth:`DenseLayout.edge_bias_at`), clamped to the mask;
    its tables per pair (``pair`` over ``n``) or, with ``first``, per edge.

    A bias of ``-inf`` is an overflow (see :func:`~gtcompress.nn.attention.overflow_to_nan`): it is made NaN
    first, so that its pair, and the node, answer NaN as in every other layout. Merged as it was, it weighed
    ``exp(-inf) = 0`` beside a finite copy of its edge, and the node answered finitely without the edge."""
    bias = overflow_to_nan(bias)
    if first is None:
        idx, peak_e, total = _exp_sums(pair, bias, n)
    else:
        idx, peak_e, total = _exp_sums(first, bias, bias.shape[0])
    per_edge = torch.log(total.gather(0, idx)) + torch.where(torch.isfinite(peak_e), peak_e, torch.zeros_like(peak_e))
    return per_edge.clamp(min=mask_value(bias.dtype))


def _exp_sums(pair: Tensor, bias: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """The log-sum-exp of per-edge biases ``[E, H]`` by pair ``pair [E]`` over ``n`` pairs, before its
    logarithm: the index ``[E, H]``, the largest bias of each edge's pair ``[E, H]``, and each pair's sum
    of ``exp(bias - largest)`` ``[n, H]``."""
    idx = pair.unsqueeze(-1).expand_as(bias)
    peak = bias.new_full((n, bias.shape[1]), float("-inf"))
    peak = peak.scatter_reduce(0, idx, bias.detach(), reduce="amax", include_self=True)
    peak_e = peak.gather(0, idx)
    total = bias.new_zeros((n, bias.shape[1])).scatter_add(0, idx, torch.exp(bias - peak_e))
    return idx, peak_e, total
