"""The Triton kernel, run on CPU by Triton's interpreter, against two references.

Kernel v2 (edge chunks, :mod:`trt_plugins._kernel`) is what the op runs. ``reference`` below
restates the math with gather/scatter on the CSR (trt_plugins may not import
gtcompress); every case is also checked against the project's one definition,
``gtcompress.nn.attention.sparse_attention``, on the original (unsorted) ``edge_index``.

No environment set-up is needed: CPU tensors always run through an explicit
``InterpretedFunction`` and the kernel avoids Triton's import-time-decorated helpers (see
``trt_plugins/_kernel.py``), so these tests pass in one pytest process whatever imported triton
first. ``test_under_triton_interpret_env`` checks the other mode -- ``TRITON_INTERPRET=1`` set
before triton is imported -- in a fresh interpreter, together with an AOT compile in that mode.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gtcompress.nn.attention import sparse_attention
from trt_plugins import PluginSpecError, spec
from trt_plugins.csr import edge_index_to_csr
from trt_plugins.kernels import check_csr, sparse_graph_attention, sparse_graph_attention_coo


def reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rowptr: torch.Tensor,
    col: torch.Tensor,
    bias: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """Softmax over each destination's CSR range, in float64, by gather + scatter."""
    q, k, v = q.double(), k.double(), v.double()
    n, h, d = q.shape
    dst = torch.repeat_interleave(torch.arange(n), (rowptr[1:] - rowptr[:-1]).long())
    src = col.long()
    s = (q[dst] * k[src]).sum(-1) * scale  # [E, H]
    if bias is not None:
        s = s + bias.double()
    idx = dst[:, None].expand(-1, h)
    smax = torch.full((n, h), -math.inf, dtype=s.dtype).scatter_reduce(0, idx, s, "amax", include_self=True)
    ex = torch.exp(s - smax[dst])
    denom = torch.zeros(n, h, dtype=s.dtype).scatter_add(0, idx, ex)
    msg = (ex / denom[dst])[..., None] * v[src]
    return torch.zeros(n, h, d, dtype=s.dtype).scatter_add(0, idx[..., None].expand(-1, -1, d), msg)


def make_graph(n: int, e: int, seed: int, hub: bool = False) -> torch.Tensor:
    """Random edges plus duplicates, a self-loop, isolated nodes and optionally a high in-degree hub."""
    g = torch.Generator().manual_seed(seed)
    if n == 0:
        return torch.zeros(2, 0, dtype=torch.long)
    keep = max(1, n - 2)  # the last node(s) stay isolated: no edge points at them
    ei = torch.stack([torch.randint(0, n, (e,), generator=g), torch.randint(0, keep, (e,), generator=g)])
    if e:
        extra = [ei[:, :3], torch.tensor([[0], [0]])]  # duplicated edges and a self-loop
        if hub:
            extra.append(torch.stack([torch.randint(0, n, (70,), generator=g), torch.full((70,), 1)]))
        ei = torch.cat([ei, *extra], dim=1)
    return ei


#: Small tiles keep the interpreter fast (its scans run element by element in Python) and make
#: every border case happen on small graphs: tile borders inside a chunk (the carried row), chunk
#: borders (partial records), rows spanning many chunks.
SMALL = spec.KernelConfig(tile_e=4, tiles=2, block_h=4, block_d=32, block_r=8, block_p=4)


def small(heads: int, head_dim: int, prefetch: bool = False) -> spec.KernelConfig:
    """:data:`SMALL` with the block sizes for the head shape."""
    return spec.KernelConfig(
        tile_e=SMALL.tile_e,
        tiles=SMALL.tiles,
        block_h=spec.next_pow2(heads),
        block_d=spec.next_pow2(head_dim),
        block_r=SMALL.block_r,
        block_p=SMALL.block_p,
        prefetch=prefetch,
    )


#: Both ways the partials kernel walks its tiles: K/V gathered per tile, or one tile ahead.
PREFETCH = pytest.mark.parametrize("prefetch", [False, True], ids=["gather", "prefetch"])


@dataclasses.dataclass
class CaseInputs:
    ei: torch.Tensor
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    bias: torch.Tensor | None
    rowptr: torch.Tensor
    col: torch.Tensor
    bias_csr: torch.Tensor | None


def case_inputs(
    n: int, e: int, heads: int, head_dim: int, dtype: torch.dtype, with_bias: bool, hub: bool
) -> CaseInputs:
    """One :data:`CASES` row's graph (:func:`make_graph`), q/k/v, bias and CSR, seeded by its size."""
    g = torch.Generator().manual_seed(n * 100 + e)
    ei = make_graph(n, e, seed=n + e, hub=hub)
    q, k, v = (torch.randn(n, heads, head_dim, generator=g).to(dtype) for _ in range(3))
    bias = torch.randn(ei.shape[1], heads, generator=g).to(dtype) if with_bias else None
    rowptr, col, perm = edge_index_to_csr(ei, n)
    return CaseInputs(ei, q, k, v, bias, rowptr, col, None if bias is None else bias[perm])


CASES = [
    # n, e, heads, head_dim, dtype, bias, hub
    (1, 0, 1, 4, torch.float32, False, False),  # one node, no edges
    (1, 1, 2, 8, torch.float32, True, False),  # one node with a self-loop
    (5, 0, 2, 16, torch.float32, True, False),  # no edges at all: zeros
    (7, 12, 2, 5, torch.float32, True, False),  # head_dim not a power of two
    (20, 60, 3, 24, torch.float32, False, True),  # a hub whose 70+ edges span many chunks
    (33, 90, 1, 64, torch.float32, True, False),  # one head, wide
    (9, 30, 2, 128, torch.float32, True, False),  # widest shipped head size
    (18, 50, 2, 16, torch.float16, True, True),
    (18, 50, 4, 16, torch.bfloat16, True, True),
    (6, 20, 4, 32, torch.float16, False, False),
]


def _check(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    tol = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}[dtype]
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)


@PREFETCH
@pytest.mark.parametrize(("n", "e", "heads", "head_dim", "dtype", "with_bias", "hub"), CASES)
def test_matches_references(
    n: int, e: int, heads: int, head_dim: int, dtype: torch.dtype, with_bias: bool, hub: bool, prefetch: bool
) -> None:
    c = case_inputs(n, e, heads, head_dim, dtype, with_bias, hub)
    ei, q, k, v, bias, rowptr, col, bias_csr = c.ei, c.q, c.k, c.v, c.bias, c.rowptr, c.col, c.bias_csr
    scale = spec.default_scale(head_dim)

    out = sparse_graph_attention(q, k, v, rowptr, col, bias_csr, config=small(heads, head_dim, prefetch))
    assert out.dtype == dtype and out.shape == (n, heads, head_dim)
    _check(out, reference(q, k, v, rowptr, col, bias_csr, scale), dtype)
    project = sparse_attention(q.double(), k.double(), v.double(), ei, None if bias is None else bias.double())
    _check(out, project, dtype)
    indegree = rowptr[1:] - rowptr[:-1]
    assert torch.equal(out[indegree == 0], torch.zeros_like(out[indegree == 0]))


@PREFETCH
@pytest.mark.parametrize(
    ("tile_e", "tiles"),
    [(4, 1), (4, 3), (8, 2), (16, 4)],  # chunks of 4, 12, 16 and 64 edges over the same graph
)
def test_chunk_and_tile_borders_anywhere(tile_e: int, tiles: int, prefetch: bool) -> None:
    """Rows that start exactly at a chunk start, end exactly at a chunk end, span many chunks, and
    long runs of rows without edges between them, over several chunk and tile sizes."""
    degrees = [0, 4, 4, 0, 0, 0, 1, 12, 3, 0, 17, 1, 1, 0, 8, 0]
    n = len(degrees)
    dst = torch.repeat_interleave(torch.arange(n), torch.tensor(degrees))
    g = torch.Generator().manual_seed(tile_e * 10 + tiles)
    ei = torch.stack([torch.randint(0, n, (dst.numel(),), generator=g), dst])
    q, k, v = (torch.randn(n, 2, 8, generator=g) * 3 for _ in range(3))
    bias = torch.randn(dst.numel(), 2, generator=g)
    rowptr, col, perm = edge_index_to_csr(ei, n)
    config = spec.KernelConfig(
        tile_e=tile_e, tiles=tiles, block_h=2, block_d=8, block_r=4, block_p=2, prefetch=prefetch
    )
    out = sparse_graph_attention(q, k, v, rowptr, col, bias[perm], config=config)
    _check(out, reference(q, k, v, rowptr, col, bias[perm], spec.default_scale(8)), torch.float32)


@pytest.mark.parametrize(("heads", "group", "prefetch"), [(4, 1, False), (4, 2, True), (3, 2, False), (8, 4, True)])
def test_head_groups_split_over_programs(heads: int, group: int, prefetch: bool) -> None:
    """Wide rows are read in head groups, one program per group (the grid's second axis); each way of
    walking the tiles meets a group of one head's width and wider ones."""
    g = torch.Generator().manual_seed(heads * 10 + group)
    n, d = 14, 8
    ei = make_graph(n, 40, seed=heads + group, hub=True)
    q, k, v = (torch.randn(n, heads, d, generator=g) for _ in range(3))
    bias = torch.randn(ei.shape[1], heads, generator=g)
    rowptr, col, perm = edge_index_to_csr(ei, n)
    config = spec.KernelConfig(
        tile_e=4,
        tiles=3,
        block_h=spec.next_pow2(group),
        block_d=8,
        block_r=4,
        block_p=2,
        head_group=group,
        prefetch=prefetch,
    )
    assert spec.grid("partials", n, col.numel(), heads, config)[1] == -(-heads // group)
    out = sparse_graph_attention(q, k, v, rowptr, col, bias[perm], config=config)
    _check(out, reference(q, k, v, rowptr, col, bias[perm], spec.default_scale(d)), torch.float32)


def products(config: spec.KernelConfig, aggregate: str) -> spec.KernelConfig:
    """``config`` working its tiles with tensor-core products (``aggregate`` "dot" or "mma"), on
    tiles of the smallest edge count a product takes."""
    return dataclasses.replace(config, tile_e=spec.MIN_DOT, aggregate=aggregate)


def takes_products(aggregate: str, heads: int, head_dim: int) -> bool:
    """Whether a head shape has operands big enough for ``aggregate``'s products."""
    width = spec.next_pow2(head_dim) * (spec.next_pow2(heads) if aggregate == "dot" else 1)
    return width >= spec.MIN_DOT


#: (aggregate, case, prefetch): the two ways of walking the tiles take turns over the cases (the product
#: replaces the per-tile arithmetic, not the loads they differ in), so each meets both aggregates.
_TAKING_PRODUCTS = [(a, case) for a in ("dot", "mma") for case in CASES if takes_products(a, case[2], case[3])]
PRODUCT_CASES = [(aggregate, case, i % 2 == 1) for i, (aggregate, case) in enumerate(_TAKING_PRODUCTS)]


@pytest.mark.parametrize(("aggregate", "case", "prefetch"), PRODUCT_CASES)
def test_tensor_core_products_match_references(aggregate: str, case: tuple, prefetch: bool) -> None:
    """The tensor-core ways of working a tile (the sum as one product over all heads; the scores and
    sums as per-head products) give what the scan gives: the rows inside a tile, the row carried over
    a tile border and the rows cut by chunk borders, in float32, fp16 and bf16."""
    c = case_inputs(*case)
    q, k, v, rowptr, col, bias_csr = c.q, c.k, c.v, c.rowptr, c.col, c.bias_csr
    heads, head_dim, dtype = case[2], case[3], case[4]
    config = products(small(heads, head_dim, prefetch), aggregate)
    assert config.chunk == 2 * spec.MIN_DOT  # the 70-edge hub spans several chunks
    out = sparse_graph_attention(q, k, v, rowptr, col, bias_csr, config=config)
    _check(out, reference(q, k, v, rowptr, col, bias_csr, spec.default_scale(head_dim)), dtype)
    indegree = rowptr[1:] - rowptr[:-1]
    assert torch.equal(out[indegree == 0], torch.zeros_like(out[indegree == 0]))


@pytest.mark.parametrize("aggregate", ["dot", "mma"])
@pytest.mark.parametrize(("tiles", "heads", "group"), [(1, 2, 2), (3, 2, 2), (2, 4, 2), (2, 3, 2)])
def test_tensor_core_products_at_borders_and_in_head_groups(aggregate: str, tiles: int, heads: int, group: int) -> None:
    """Rows starting and ending at chunk borders, spanning chunks, with head groups split over programs."""
    degrees = [0, 16, 4, 0, 0, 1, 40, 3, 0, 17, 1, 1, 0, 15, 0, 2]
    n, d = len(degrees), 8 if aggregate == "dot" else 16
    dst = torch.repeat_interleave(torch.arange(n), torch.tensor(degrees))
    g = torch.Generator().manual_seed(tiles * 10 + heads)
    ei = torch.stack([torch.randint(0, n, (dst.numel(),), generator=g), dst])
    q, k, v = (torch.randn(n, heads, d, generator=g) * 3 for _ in range(3))
    bias = torch.randn(dst.numel(), heads, generator=g)
    rowptr, col, perm = edge_index_to_csr(ei, n)
    config = spec.KernelConfig(
        tile_e=16, tiles=tiles, block_h=2, block_d=d, block_r=4, block_p=2, head_group=group, aggregate=aggregate
    )
    out = sparse_graph_attention(q, k, v, rowptr, col, bias[perm], config=config)
    _check(out, reference(q, k, v, rowptr, col, bias[perm], spec.default_scale(d)), torch.float32)


@pytest.fixture
def programs_in_reverse(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every kernel's programs last to first. The interpreter runs them in order, one at a time; a
    GPU runs them in any order, at once, so two programs writing one output must not depend on which
    finishes last (with ascending order, the program that should write a row often simply writes last)."""
    from triton.runtime import interpreter

    builder = interpreter.interpreter_builder
    set_dim, set_idx = builder.set_grid_dim, builder.set_grid_idx
    grid: dict[str, int] = {}

    def remember(x: int, y: int, z: int) -> None:
        grid["x"] = x
        set_dim(x, y, z)

    monkeypatch.setattr(builder, "set_grid_dim", remember)
    monkeypatch.setattr(builder, "set_grid_idx", lambda x, y, z: set_idx(grid["x"] - 1 - x, y, z))


@pytest.mark.parametrize("aggregate", spec.AGGREGATES)
def test_program_order_does_not_matter(programs_in_reverse: None, aggregate: str) -> None:
    """A hub row spanning many chunks is merged and written by one combine program only: with the
    programs in reverse order, a program that merged only a prefix of its records would write last."""
    degrees = [2, 70, 0, 5, 40, 1, 0, 3]
    n = len(degrees)
    dst = torch.repeat_interleave(torch.arange(n), torch.tensor(degrees))
    g = torch.Generator().manual_seed(11)
    ei = torch.stack([torch.randint(0, n, (dst.numel(),), generator=g), dst])
    d = 16 if aggregate == "mma" else 8
    q, k, v = (torch.randn(n, 2, d, generator=g) * 2 for _ in range(3))
    rowptr, col, _ = edge_index_to_csr(ei, n)
    tile = 4 if aggregate == "scan" else 16
    config = spec.KernelConfig(tile_e=tile, tiles=1, block_h=2, block_d=d, block_r=4, block_p=2, aggregate=aggregate)
    assert spec.n_chunks(col.numel(), config.chunk) >= 7  # the 70-edge hub spans five or more chunks
    out = sparse_graph_attention(q, k, v, rowptr, col, config=config)
    _check(out, reference(q, k, v, rowptr, col, None, spec.default_scale(d)), torch.float32)


@pytest.mark.parametrize("case", [case for case in CASES if case[-1]])
def test_hub_cases_with_programs_in_reverse(programs_in_reverse: None, case: tuple) -> None:
    c = case_inputs(*case)
    q, k, v, rowptr, col, bias_csr = c.q, c.k, c.v, c.rowptr, c.col, c.bias_csr
    heads, head_dim, dtype = case[2], case[3], case[4]
    out = sparse_graph_attention(q, k, v, rowptr, col, bias_csr, config=small(heads, head_dim, True))
    _check(out, reference(q, k, v, rowptr, col, bias_csr, spec.default_scale(head_dim)), dtype)


def test_partial_records_are_those_of_the_partition() -> None:
    """The partials kernel writes exactly the records :mod:`trt_plugins.partition` names, and the
    combine kernel then reproduces the reference (it reads only those records)."""
    from trt_plugins import kernels
    from trt_plugins.partition import partition

    degrees = [3, 0, 9, 2, 0, 0, 14, 1]
    n = len(degrees)
    dst = torch.repeat_interleave(torch.arange(n), torch.tensor(degrees))
    g = torch.Generator().manual_seed(5)
    ei = torch.stack([torch.randint(0, n, (dst.numel(),), generator=g), dst])
    q, k, v = (torch.randn(n, 1, 4, generator=g) for _ in range(3))
    rowptr, col, _ = edge_index_to_csr(ei, n)
    config = spec.KernelConfig(tile_e=2, tiles=2, block_h=1, block_d=4, block_r=4, block_p=2)
    attrs = spec.validate_attributes(1, 4, 0.5, False)
    e = col.numel()
    out = torch.zeros_like(q)
    part = torch.full(spec.part_shape(e, 1, 4, config), float("nan"))
    kernels.interpreted_kernel("partials")[spec.grid("partials", n, e, 1, config)](
        q, k, v, rowptr, col, q.new_empty(0, 1), n, e, out, part, **spec.partials_constexprs(attrs, config)
    )
    written = {r for r in range(part.shape[0]) if not torch.isnan(part[r]).any()}
    assert written == partition(rowptr.numpy(), config.chunk).written_records()
    kernels.interpreted_kernel("combine")[spec.grid("combine", n, e, 1, config)](
        out, part, rowptr, n, e, out, **spec.combine_constexprs(attrs, config)
    )
    _check(out, reference(q, k, v, rowptr, col, None, 0.5), torch.float32)


def test_default_config_and_large_tiles() -> None:
    """The shipped config for the head shape (large tiles, many tiles per chunk) on a graph with a hub."""
    g = torch.Generator().manual_seed(9)
    n, h, d = 40, 4, 16
    ei = make_graph(n, 300, seed=9, hub=True)
    q, k, v = (torch.randn(n, h, d, generator=g) for _ in range(3))
    rowptr, col, _ = edge_index_to_csr(ei, n)
    _check(sparse_graph_attention(q, k, v, rowptr, col), reference(q, k, v, rowptr, col, None, 0.25), torch.float32)


def test_custom_scale_int64_indices_and_coo_entry_point() -> None:
    g = torch.Generator().manual_seed(3)
    n, h, d = 11, 2, 8
    ei = make_graph(n, 30, seed=3)
    q, k, v = (torch.randn(n, h, d, generator=g) for _ in range(3))
    bias = torch.randn(ei.shape[1], h, generator=g)
    ref = sparse_attention(q.double(), k.double(), v.double(), ei, bias.double(), scale=0.3)
    _check(sparse_graph_attention_coo(q, k, v, ei, bias, scale=0.3), ref, torch.float32)
    rowptr, col, perm = edge_index_to_csr(ei, n, dtype=torch.int64)
    _check(sparse_graph_attention(q, k, v, rowptr, col, bias[perm], scale=0.3, config=small(h, d)), ref, torch.float32)


def test_duplicate_edges_count_twice() -> None:
    q = torch.zeros(3, 1, 2)
    v = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[5.0, 5.0]]])
    ei = torch.tensor([[0, 1, 1], [2, 2, 2]])  # node 2 <- 0 once, <- 1 twice; nodes 0, 1 isolated
    out = sparse_graph_attention_coo(q, q, v, ei)
    torch.testing.assert_close(out[2, 0], torch.tensor([1 / 3, 2 / 3]))
    assert torch.equal(out[:2], torch.zeros(2, 1, 2))


def test_zero_nodes() -> None:
    q = torch.zeros(0, 2, 8)
    out = sparse_graph_attention_coo(q, q, q, torch.zeros(2, 0, dtype=torch.long))
    assert out.shape == (0, 2, 8)


def test_shape_and_dtype_errors_name_the_input() -> None:
    q = torch.zeros(3, 1, 4)
    rowptr = torch.tensor([0, 1, 2, 5], dtype=torch.int32)
    with pytest.raises(PluginSpecError, match="'bias' must have shape"):
        sparse_graph_attention(q, q, q, rowptr, torch.zeros(5, dtype=torch.int32), torch.zeros(4, 1))
    with pytest.raises(PluginSpecError, match="'col' must have the dtype of 'rowptr'"):
        sparse_graph_attention(q, q, q, rowptr, torch.zeros(5, dtype=torch.int64))
    with pytest.raises(PluginSpecError, match="'rowptr' must have n_nodes \\+ 1 = 4 entries"):
        sparse_graph_attention(q, q, q, rowptr[:3], torch.zeros(5, dtype=torch.int32))
    # a config narrower than the head would give a wrong answer (it ran, before the check), not an error
    with pytest.raises(PluginSpecError, match="config block_d 2 is smaller than head_dim 4"):
        sparse_graph_attention(q, q, q, rowptr, torch.zeros(5, dtype=torch.int32), config=small(1, 2))


def test_check_csr_is_a_separate_step() -> None:
    """The launcher reads no device value (so it can be captured in a CUDA graph); value checks are
    :func:`check_csr`, which names what is wrong."""
    col = torch.zeros(4, dtype=torch.int32)
    with pytest.raises(PluginSpecError, match=r"must run from 0 to E = 4 .* got 0 \.\. 5"):
        check_csr(torch.tensor([0, 1, 2, 5], dtype=torch.int32), col, 3)
    with pytest.raises(PluginSpecError, match="decreases at row 1: 3 -> 2"):
        check_csr(torch.tensor([0, 3, 2, 4]), col, 3)
    with pytest.raises(PluginSpecError, match=r"node ids in \[0, 7\], outside \[0, 2\]"):
        check_csr(torch.tensor([0, 1, 2, 4]), torch.tensor([0, 7, 1, 1]), 3)
    with pytest.raises(PluginSpecError, match="n_nodes \\+ 1 = 4 entries"):
        check_csr(torch.tensor([0, 4]), col, 3)
    check_csr(torch.tensor([0, 1, 1, 4]), col, 3)


def test_kernel_v1_still_matches_for_the_benchmark() -> None:
    """v1 stays callable (``bench/kernel.py`` times it next to v2) and correct."""
    from trt_plugins.kernels_v1 import sparse_graph_attention_v1

    g = torch.Generator().manual_seed(4)
    n, h, d = 20, 2, 16
    ei = make_graph(n, 60, seed=4, hub=True)
    q, k, v = (torch.randn(n, h, d, generator=g) for _ in range(3))
    rowptr, col, _ = edge_index_to_csr(ei, n)
    _check(sparse_graph_attention_v1(q, k, v, rowptr, col), reference(q, k, v, rowptr, col, None, 0.25), torch.float32)


_CHILD = """
import sys, torch, triton
from triton.runtime.interpreter import InterpretedFunction
assert triton.knobs.runtime.interpret and isinstance(triton.language.standard.max, InterpretedFunction)
from gtcompress.nn.attention import sparse_attention
from trt_plugins import aot
from trt_plugins.kernels import sparse_graph_attention_coo
g = torch.Generator().manual_seed(0)
for n, e, h, d in [(1, 0, 1, 4), (12, 40, 2, 24)]:
    q, k, v = (torch.randn(n, h, d, generator=g) for _ in range(3))
    ei = torch.randint(0, n, (2, e), generator=g)
    bias = torch.randn(e, h, generator=g)
    out = sparse_graph_attention_coo(q, k, v, ei, bias)
    ref = sparse_attention(q.double(), k.double(), v.double(), ei, bias.double())
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
root = __import__("pathlib").Path(sys.argv[1])
kernel = aot.compile_kernel("partials", "float16", 2, 32, 80, None, True, cache_root=root)
assert ".target sm_80" in kernel.ptx
print("child ok")
"""


def test_under_triton_interpret_env(tmp_path: Path) -> None:
    # A fresh Triton cache: a cached cubin would hide a compile that fails in this mode.
    env = {**os.environ, "TRITON_INTERPRET": "1", "TRITON_CACHE_DIR": str(tmp_path / "triton")}
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0 and "child ok" in proc.stdout, proc.stdout[-4000:] + proc.stderr[-4000:]


def test_kernel_calls_only_triton_builtins() -> None:
    """``tl.max``/``tl.sum``/``tl.zeros`` are ``@jit`` helpers frozen to one mode at triton import; a
    kernel calling them would break either the interpreter or the AOT compile in some processes."""
    import ast
    import inspect

    import triton.language as tl

    from trt_plugins import _kernel, _kernel_v1

    tree = ast.parse(inspect.getsource(_kernel) + inspect.getsource(_kernel_v1))
    called = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "tl"
    }
    assert called, "no tl.* calls found"
    # tl.constexpr(...) wraps a module-level constant (a class, not a jit helper).
    not_builtin = sorted(n for n in called - {"constexpr"} if not tl.core.is_builtin(getattr(tl, n)))
    assert not not_builtin, f"kernel calls non-builtin triton.language helpers: {not_builtin}"


@pytest.mark.parametrize("hub", [False, True])
def test_an_overflowed_score_makes_its_node_nan(hub: bool) -> None:
    """Node 2's edge from node 0 scores q·k = -1e40, past float32's range (-inf): the kernel weighed it 0 and
    answered node 1's value, a finite answer the reference (``sparse_attention``) gives NaN for, as the
    runtime refuses. With ``hub`` node 2 has 300 in-edges, so its row is split over chunks (partials, then
    the combine). The aggregation multiplies rows of a tile together (a 0/1 matrix), so other rows of the
    tile may be NaN too: a deployment recomputes a NaN answer alone."""
    n, heads, head_dim = 6, 2, 8
    src = [0, 1] + ([3, 4, 5] * 100 if hub else []) + [2, 5]
    dst = [2, 2] + ([2] * 300 if hub else []) + [4, 3]
    ei = torch.tensor([src, dst])
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(n, heads, head_dim, generator=g) for _ in range(3))
    q[2], k[0] = 1e20, -1e20
    rowptr, col, _ = edge_index_to_csr(ei, n)
    ref = sparse_attention(q, k, v, ei)
    assert torch.isnan(ref[2]).all() and torch.isfinite(ref[[0, 1, 3, 4, 5]]).all()
    out = sparse_graph_attention(q, k, v, rowptr, col, None, config=small(heads, head_dim, False))
    assert torch.isnan(out[2]).all()
