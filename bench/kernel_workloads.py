"""Workloads and peers of ``bench/kernel.py``: graphs, the PyG-style attention op, the 4-layer GT.

Graphs are generated on the device (nothing to download): uniform and power-law random graphs
(in-degrees drawn from a Zipf law over the nodes, sources uniform: a few hubs hold a large share
of all edges, as in citation, social and web graphs), stochastic-block-model batches of
CLUSTER-size graphs and batches of molecule-size graphs.

The peers compute the same function as our op, ``out_i = sum_e softmax_e(tau q_i.k_src + b) v_src``:

* ``pyg_attention`` -- the steps of PyG's ``TransformerConv`` (gather, ``torch_geometric.utils.
  softmax`` by destination, ``scatter`` sum), eager or under ``torch.compile``;
* ``BenchGT`` -- a 4-layer graph transformer (TransformerConv attention with its root weight,
  output projection, residual, BatchNorm, FFN, residual, BatchNorm; hidden 64, 4 heads) whose
  attention runs either through PyG's ``TransformerConv`` or through our op on the same weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

#: The dtypes a row can name, and their names in ``trt_plugins.spec``.
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
SPEC_DTYPE = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


@dataclass
class Graph:
    """One workload: COO edges plus the CSR our op takes (built once, outside the timed region)."""

    name: str
    kind: str
    edge_index: Tensor  # [2, E] (src, dst), int64
    num_nodes: int
    rowptr: Tensor
    col: Tensor
    perm: Tensor
    batch: Tensor | None = None
    num_graphs: int = 1

    @property
    def src(self) -> Tensor:
        return self.edge_index[0]

    @property
    def dst(self) -> Tensor:
        return self.edge_index[1]

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def max_in_degree(self) -> int:
        return int((self.rowptr[1:] - self.rowptr[:-1]).max()) if self.num_nodes else 0


def _finish(
    name: str, kind: str, src: Tensor, dst: Tensor, n: int, batch: Tensor | None = None, graphs: int = 1
) -> Graph:
    from gtcompress.nn.fused import csr_from_edge_index

    edge_index = torch.stack([src, dst]).contiguous()
    rowptr, col, perm = csr_from_edge_index(edge_index, n)
    return Graph(name, kind, edge_index, n, rowptr.to(torch.int32), col.to(torch.int32), perm, batch, graphs)


def uniform_graph(n: int, e: int, device: torch.device, seed: int = 0) -> Graph:
    g = torch.Generator(device=device).manual_seed(seed)
    src = torch.randint(0, n, (e,), device=device, generator=g)
    dst = torch.randint(0, n, (e,), device=device, generator=g)
    return _finish(f"uniform E={_short(e)}", "uniform", src, dst, n)


def power_law_graph(n: int, e: int, device: torch.device, seed: int = 0, exponent: float = 1.1) -> Graph:
    """In-degrees from a Zipf law (node ``k`` drawn with weight ``k^-exponent``) in random node order."""
    g = torch.Generator(device=device).manual_seed(seed)
    weights = torch.arange(1, n + 1, device=device, dtype=torch.float64) ** -exponent
    cdf = torch.cumsum(weights, 0)
    cdf = cdf / cdf[-1]
    rank = torch.searchsorted(cdf, torch.rand(e, device=device, generator=g, dtype=torch.float64))
    rank = rank.clamp_(max=n - 1)
    dst = torch.randperm(n, device=device, generator=g)[rank]
    src = torch.randint(0, n, (e,), device=device, generator=g)
    return _finish(f"power-law E={_short(e)}", "power-law", src, dst, n)


def _batched(name: str, kind: str, sizes: list[int], edges: list[tuple[Tensor, Tensor]], device: torch.device) -> Graph:
    offsets = torch.tensor([0, *sizes], device=device).cumsum(0)
    src = torch.cat([s + offsets[i] for i, (s, _) in enumerate(edges)])
    dst = torch.cat([d + offsets[i] for i, (_, d) in enumerate(edges)])
    batch = torch.repeat_interleave(torch.arange(len(sizes), device=device), torch.tensor(sizes, device=device))
    return _finish(name, kind, src, dst, int(offsets[-1]), batch, len(sizes))


def sbm_batch(graphs: int, device: torch.device, seed: int = 0) -> Graph:
    """CLUSTER-size stochastic block models: 6 blocks of 5-35 nodes, p = 0.55 inside, q = 0.25 across."""
    g = torch.Generator().manual_seed(seed)
    sizes, edges = [], []
    for _ in range(graphs):
        blocks = torch.randint(5, 36, (6,), generator=g)
        label = torch.repeat_interleave(torch.arange(6), blocks)
        n = int(label.numel())
        prob = torch.where(label[:, None] == label[None, :], 0.55, 0.25)
        adj = torch.rand(n, n, generator=g) < prob
        adj = torch.triu(adj, 1)
        adj = adj | adj.T  # undirected: both directions
        s, d = adj.nonzero(as_tuple=True)
        sizes.append(n)
        edges.append((s.to(device), d.to(device)))
    return _batched(f"SBM x{graphs}", "sbm", sizes, edges, device)


def molecule_batch(graphs: int, device: torch.device, seed: int = 0) -> Graph:
    """Molecule-size graphs (ZINC-like): 15-38 atoms on a random tree plus a few ring bonds, both directions."""
    g = torch.Generator().manual_seed(seed)
    sizes, edges = [], []
    for _ in range(graphs):
        n = int(torch.randint(15, 39, (1,), generator=g))
        parent = torch.stack([torch.randint(0, i, (1,), generator=g) for i in range(1, n)]).flatten()
        child = torch.arange(1, n)
        rings = torch.randint(0, n, (2, max(1, n // 8)), generator=g)
        s = torch.cat([parent, child, rings[0], rings[1]])
        d = torch.cat([child, parent, rings[1], rings[0]])
        sizes.append(n)
        edges.append((s.to(device), d.to(device)))
    name = "molecule" if graphs == 1 else f"molecules x{graphs}"
    return _batched(name, "molecule", sizes, edges, device)


def _short(e: int) -> str:
    return f"{e // 1_000_000}M" if e % 1_000_000 == 0 else f"{e // 1000}k"


# ---------------------------------------------------------------- the op's peers


def pyg_attention(q: Tensor, k: Tensor, v: Tensor, src: Tensor, dst: Tensor, num_nodes: int) -> Tensor:
    """TransformerConv's message passing: score per edge, softmax by destination, weighted scatter-sum."""
    from torch_geometric.utils import scatter, softmax

    alpha = (q.index_select(0, dst) * k.index_select(0, src)).sum(-1) / math.sqrt(q.shape[-1])
    alpha = softmax(alpha, dst, num_nodes=num_nodes)
    msg = v.index_select(0, src) * alpha.unsqueeze(-1)
    return scatter(msg, dst, dim=0, dim_size=num_nodes, reduce="sum")


def min_bytes(n: int, e: int, heads: int, head_dim: int, itemsize: int) -> int:
    """Fewest bytes the op must move: K and V rows once per edge, Q and out once, rowptr and col."""
    row = heads * head_dim * itemsize
    return e * (2 * row + 4) + n * (2 * row + 4) + 4


# ---------------------------------------------------------------- the model


class FFN(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)

    def forward(self, h: Tensor) -> Tensor:
        return self.lin2(torch.relu(self.lin1(h)))


class BenchLayer(nn.Module):
    """TransformerConv attention (concat heads, root weight) -> O -> +res -> BN -> FFN -> +res -> BN."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        from torch_geometric.nn import TransformerConv

        self.heads, self.head_dim = heads, dim // heads
        self.conv = TransformerConv(dim, self.head_dim, heads=heads, concat=True, root_weight=True)
        self.o = nn.Linear(dim, dim)
        self.norm1, self.norm2 = nn.BatchNorm1d(dim), nn.BatchNorm1d(dim)
        self.ffn = FFN(dim)

    def attend(self, h: Tensor, g: Graph, ours: bool) -> Tensor:
        if not ours:
            return self.conv(h, g.edge_index)
        c = self.conv
        shape = (h.shape[0], self.heads, self.head_dim)
        q, k, v = c.lin_query(h).view(shape), c.lin_key(h).view(shape), c.lin_value(h).view(shape)
        out = torch.ops.gtcompress.sparse_graph_attention(
            q, k, v, g.rowptr, g.col, None, 1.0 / math.sqrt(self.head_dim)
        )
        return out.reshape(h.shape[0], -1) + c.lin_skip(h)

    def forward(self, h: Tensor, g: Graph, ours: bool) -> Tensor:
        h = self.norm1(h + self.o(self.attend(h, g, ours)))
        return self.norm2(h + self.ffn(h))


class BenchGT(nn.Module):
    """The 4-layer GT of the GPU issue; ``ours`` picks the attention implementation, weights shared."""

    def __init__(self, dim: int = 64, heads: int = 4, layers: int = 4, ours: bool = False) -> None:
        super().__init__()
        self.ours = ours
        self.layers = nn.ModuleList(BenchLayer(dim, heads) for _ in range(layers))

    def forward(self, h: Tensor, g: Graph) -> Tensor:
        for layer in self.layers:
            h = layer(h, g, self.ours)
        return h
