"""Padded per-graph layout ``[B, L, ·]`` (L = largest graph) for dense attention.

Built from the sorted ``batch`` vector; ``slot[i] = batch[i] * L + position of i in its graph``
maps each node to its row of the flattened padded tensor, so padding and unpadding are one
scatter / one gather.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class DenseLayout:
    slot: Tensor  # [N] int64 row in the flattened [B*L] padded tensor
    pos: Tensor  # [N] int64 position of each node within its graph
    valid: Tensor  # [B, L] bool, False on padding
    num_graphs: int
    max_nodes: int
    _node_at_slot: Tensor | None = field(default=None, repr=False)  # [B*L] node id, N on padding

    @classmethod
    def from_batch(cls, batch: Tensor, num_graphs: int) -> DenseLayout:
        counts = torch.bincount(batch, minlength=num_graphs)
        ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        pos = torch.arange(batch.shape[0], device=batch.device) - ptr.index_select(0, batch)
        max_nodes = int(counts.max()) if counts.numel() else 0
        valid = torch.arange(max_nodes, device=batch.device).unsqueeze(0) < counts.unsqueeze(1)
        return cls(batch * max_nodes + pos, pos, valid, num_graphs, max_nodes)

    @classmethod
    def from_slots(cls, node_slot: Tensor, pad_mask: Tensor, batch: Tensor) -> DenseLayout:
        """From pre-computed ``node_slot [N]`` and ``pad_mask [B, L]`` (export: shapes stay symbolic)."""
        num_graphs, max_nodes = pad_mask.shape[0], pad_mask.shape[1]
        return cls(node_slot, node_slot - batch * max_nodes, pad_mask, num_graphs, max_nodes)

    def pad(self, h: Tensor) -> Tensor:
        """``[N, F] -> [B, L, F]`` with zeros on padding: one Gather from ``h`` plus a zero row
        (a Gather is several times cheaper than a ScatterElements in ONNX Runtime)."""
        if self._node_at_slot is None:
            n = h.shape[0]
            idx = torch.full((self.num_graphs * self.max_nodes,), 0, dtype=torch.long, device=h.device) + n
            self._node_at_slot = idx.scatter(0, self.slot, torch.arange(n, device=h.device))
        padded = torch.cat([h, h.new_zeros((1, h.shape[-1]))]).index_select(0, self._node_at_slot)
        return padded.view(self.num_graphs, self.max_nodes, h.shape[-1])

    def unpad(self, hd: Tensor) -> Tensor:
        """``[B, L, F] -> [N, F]``."""
        return hd.reshape(-1, hd.shape[-1]).index_select(0, self.slot)

    def key_padding_bias(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """``[B, 1, 1, L]``: 0 for real keys, ``-inf`` for padding (complete-graph attention)."""
        zero = torch.zeros((), dtype=dtype, device=self.valid.device)
        ninf = torch.full((), float("-inf"), dtype=dtype, device=self.valid.device)
        return torch.where(self.valid, zero, ninf)[:, None, None, :]

    def pair_index(self, edge_index: Tensor, batch: Tensor) -> Tensor:
        """Flattened ``[B*L*L]`` index of each edge's (dst, src) pair, for scattering per-edge values."""
        l_ = self.max_nodes
        src, dst = edge_index[0], edge_index[1]
        return (
            batch.index_select(0, dst) * (l_ * l_)
            + self.pos.index_select(0, dst) * l_
            + self.pos.index_select(0, src)
        )

    def edge_bias(self, edge_index: Tensor, batch: Tensor, bias: Tensor | None = None) -> Tensor:
        """Per-edge score biases ``[E, H]`` (or none) as a dense additive bias ``[B, H, L, L]``.

        Edges sharing a (dst, src) pair are merged by log-sum-exp, so that the dense softmax weighs
        the pair exactly as the sparse one weighs its edge instances (no bias → ``log(count)``);
        pairs without an edge get ``-inf``.
        """
        if bias is None:
            return torch.log(self.edge_counts(edge_index, batch)).unsqueeze(1)
        flat = self.pair_index(edge_index, batch)
        n = self.num_graphs * self.max_nodes * self.max_nodes
        idx = flat.unsqueeze(-1).expand_as(bias)
        peak = bias.new_full((n, bias.shape[1]), float("-inf"))
        peak = peak.scatter_reduce(0, idx, bias.detach(), reduce="amax", include_self=True)
        peak_e = peak.gather(0, idx)
        total = bias.new_zeros((n, bias.shape[1])).scatter_add(0, idx, torch.exp(bias - peak_e))
        dense = torch.log(total) + torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
        return dense.view(self.num_graphs, self.max_nodes, self.max_nodes, -1).permute(0, 3, 1, 2)

    def edge_counts(self, edge_index: Tensor, batch: Tensor) -> Tensor:
        """``[B, L, L]`` multiplicity of each (dst, src) pair (duplicates counted)."""
        flat = self.pair_index(edge_index, batch)
        n = self.num_graphs * self.max_nodes * self.max_nodes
        counts = torch.zeros(n, dtype=torch.float32, device=flat.device)
        counts = counts.scatter_add(
            0, flat, torch.ones(flat.shape[0], dtype=torch.float32, device=flat.device)
        )
        return counts.view(self.num_graphs, self.max_nodes, self.max_nodes)
