"""The sparsified GPS attention graph: the exportable construction equals the sort + unique definition."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from gtcompress.nn.attention import MASK
from gtcompress.nn.layout import DenseLayout


def _reference_edges(edge_index: Tensor, batch: Tensor, layout: DenseLayout, k: int, kind: str) -> Tensor:
    """The definition as first written (stable sort, boolean indexing, ``unique``; not exportable)."""
    from gtcompress.nn.attention_edges import node_scores

    n = layout.slot.shape[0]
    s = layout.pad(node_scores(edge_index, n, kind).unsqueeze(-1)).squeeze(-1)
    s = s.masked_fill(~layout.valid, float("-inf"))
    order = torch.sort(s, dim=1, descending=True, stable=True).indices[:, : min(k, layout.max_nodes)]
    valid = layout.valid.gather(1, order)
    node_of_slot = torch.full((layout.num_rows * layout.max_nodes,), -1, dtype=torch.long)
    node_of_slot = node_of_slot.scatter(0, layout.slot, torch.arange(n))
    rows = torch.arange(layout.num_rows).unsqueeze(1) * layout.max_nodes
    top = node_of_slot.index_select(0, (rows + order).reshape(-1)).view(order.shape)
    src, ok = top.index_select(0, batch), valid.index_select(0, batch)
    dst = torch.arange(n).unsqueeze(1).expand_as(src)
    keys = torch.cat([edge_index[0] * n + edge_index[1], torch.arange(n) * (n + 1), (src * n + dst)[ok]])
    uniq = torch.unique(keys)
    return torch.stack([uniq // n, uniq % n])


def _batch(seed: int) -> tuple[Tensor, Tensor, int]:
    """Graphs with many tied scores (rings, stars, edgeless graphs, a 1-node graph, duplicate edges)."""
    g = torch.Generator().manual_seed(seed)
    sizes = [6, 1, 4, 9, 3, 7]
    edges, off = [], 0
    for i, n in enumerate(sizes):
        if i == 1 or n == 4:
            pass  # the 1-node graph and an edgeless 4-node graph
        elif i % 2:  # a star: every leaf ties
            e = torch.stack([torch.zeros(n - 1, dtype=torch.long), torch.arange(1, n)])
            edges.append(torch.cat([e, e.flip(0)], 1) + off)
        else:  # a ring with random chords, a self-loop and a duplicate edge
            ring = torch.stack([torch.arange(n), (torch.arange(n) + 1) % n])
            chords = torch.randint(0, n, (2, 3), generator=g)
            e = torch.cat([ring, ring.flip(0), chords, torch.tensor([[0, 1], [0, 2]])], 1)
            edges.append(e + off)
        off += n
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return torch.cat(edges, 1), batch, len(sizes)


@pytest.mark.parametrize("kind", ["teddy", "degree"])
@pytest.mark.parametrize("k", [1, 2, 3, 64])
def test_attention_edges_equal_the_sort_and_unique_definition(kind: str, k: int) -> None:
    from gtcompress.nn.attention_edges import attention_edges, attention_mask

    for seed in range(3):
        ei, batch, b = _batch(seed)
        lay = DenseLayout.from_batch(batch, b)
        ref = _reference_edges(ei, batch, lay, k, kind)
        got = attention_edges(ei, batch, lay, k, kind)
        assert torch.equal(got, ref)  # same pairs, same (src, dst) order
        assert torch.equal(attention_mask(ei, batch, lay, k, kind), lay.edge_counts(ref, batch) > 0)


def test_edgeless_and_single_node_batches() -> None:
    """No edge at all: self-loops plus each graph's first k nodes (every score ties at 0)."""
    from gtcompress.nn.attention_edges import attention_edges

    batch = torch.tensor([0, 0, 0, 1])
    lay = DenseLayout.from_batch(batch, 2)
    got = attention_edges(torch.zeros((2, 0), dtype=torch.long), batch, lay, 2)
    assert got.tolist() == [[0, 0, 0, 1, 1, 1, 2, 3], [0, 1, 2, 0, 1, 2, 2, 3]]
    one = torch.zeros(1, dtype=torch.long)
    lone = DenseLayout.from_batch(one, 1)
    assert attention_edges(torch.zeros((2, 0), dtype=torch.long), one, lone, 3).tolist() == [[0], [0]]


def test_old_import_path_re_exports_the_model_side_construction() -> None:
    """Models build the graph from ``gtcompress.nn`` (no import from ``compress``); the old names stay."""
    from gtcompress.compress import attention_graph
    from gtcompress.nn import attention_edges

    for name in ("attention_edges", "attention_mask", "node_scores"):
        assert getattr(attention_graph, name) is getattr(attention_edges, name)


def _two_hub_graph() -> tuple[Tensor, Tensor, int]:
    """Nodes 0 and 1 each adjacent to hubs of degrees 3, 4 and 8 (TEDDY scores equal in exact
    arithmetic), as two edge lists of the same graph: node 1's edges listed forwards, then backwards.
    Summed in those orders in float64, its neighbours' ``d^-1/2`` came out an ulp apart."""
    pairs, n = [], 2
    for d in (3, 4, 8):
        hub = n
        n += 1
        pairs += [(0, hub), (1, hub)]
        for _ in range(d - 2):
            pairs.append((hub, n))
            n += 1
    und = torch.tensor(pairs + [(b, a) for a, b in pairs]).T
    of0, of1, rest = [torch.nonzero(m).flatten() for m in (und[0] == 0, und[0] == 1, und[0] > 1)]
    return und[:, torch.cat([of0, of1, rest])], und[:, torch.cat([of0, of1.flip(0), rest])], n


def test_equal_teddy_scores_tie_whatever_the_edge_order() -> None:
    """Scores equal in exact arithmetic compare equal however the edges are listed, so the top ``k``
    takes the node first in its graph and the same graph with its edges in another order gets the
    same GPS answer (the rounding of the sum decided before: 1.8e-3 apart on this graph)."""
    from gtcompress.data.base import FeatureSpec
    from gtcompress.graph import GraphBatch
    from gtcompress.models import ModelConfig, build_model
    from gtcompress.nn.attention_edges import node_scores, top_node_mask
    from gtcompress.preprocess import NumpyGraph

    fwd, bwd, n = _two_hub_graph()
    batch = torch.zeros(n, dtype=torch.long)
    layout = DenseLayout.from_batch(batch, 1)
    for ei in (fwd, bwd):
        s = node_scores(ei, n)
        assert s[0].item() == s[1].item()
        k = int((s > s[0]).sum()) + 1  # room for one of the two tied nodes
        top = top_node_mask(ei, layout, k)[0]
        assert top[0].item() and not top[1].item()
    torch.manual_seed(0)
    cfg = ModelConfig(
        arch="gps",
        node_features=FeatureSpec("float", 3),
        out_dim=2,
        hidden=16,
        heads=2,
        num_layers=1,
        task_level="graph",
        attention_topk=k,
    )
    model = build_model(cfg).eval()
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(0)).numpy()
    with torch.no_grad():
        out = [model(GraphBatch.from_numpy(NumpyGraph(x, ei.numpy(), None, None, {}))) for ei in (fwd, bwd)]
    assert torch.equal(out[0], out[1])


@pytest.mark.parametrize("level", ["graph", "node"])
def test_sparsified_gps_on_the_dense_layout_equals_it_over_the_pairs(level: str) -> None:
    """The sparsified attention runs as the padded attention with the pairs off its graph masked (a few
    batched MatMuls; over the pairs, Gather + ScatterElements took 5-14x the dense GPS's time on ONNX
    Runtime CPU). Same function as over the pairs (``attention_layout="sparse"``), on graphs with tied
    scores, edgeless and 1-node graphs, duplicates and self-loops, for k below, at and above their sizes;
    with a token-pruned layer, whose kept tokens still attend over the pairs."""
    from dataclasses import replace

    from gtcompress.data.base import FeatureSpec
    from gtcompress.models import LayerSpec, ModelConfig, build_model
    from gtcompress.nn.attention_edges import attention_bias, attention_mask
    from gtcompress.preprocess.spec import Lowering

    base = ModelConfig(
        arch="gps", node_features=FeatureSpec("float", 3), out_dim=2, hidden=16, heads=2, num_layers=2,
        task_level=level,
    )  # fmt: skip
    pruned = [LayerSpec(heads=2, ffn_dim=32), LayerSpec(heads=2, ffn_dim=32, token_keep=0.5)]
    for layers in ([], pruned):
        for k in (1, 2, 64):
            torch.manual_seed(k)
            cfg = replace(base, attention_topk=k, layers=layers)
            dense = build_model(cfg).eval()
            pairs = build_model(replace(cfg, attention_layout="sparse")).eval()
            pairs.load_state_dict(dense.state_dict())
            for seed in range(2):
                ei, batch, b = _batch(seed)
                x = torch.randn(batch.shape[0], 3, generator=torch.Generator().manual_seed(seed))
                with torch.no_grad():
                    got = dense.compute(x, ei, None, batch, {}, b)
                    want = pairs.compute(x, ei, None, batch, {}, b)
                assert (got - want).abs().max() <= 1e-5, (layers, k, seed)
                h = dense.encode_nodes(x, {})
                ctx = dense.context(h, ei, None, batch, b)
                assert ctx.lowering is Lowering.DENSE and ctx.attn_bias is not None
                assert (ctx.attn_edges is not None) == bool(layers)  # the pairs only where a layer reads them
                lay = ctx.layout
                want_bias, rows = attention_bias(attention_mask(ei, batch, lay, k), lay)
                assert torch.equal(ctx.attn_bias, want_bias) and torch.equal(ctx.attn_rows, rows)
                assert set(ctx.attn_bias.unique().tolist()) <= {0.0, MASK}


def test_a_sparsified_gps_without_attention_builds_no_attention_graph() -> None:
    """``gtc prune`` may remove every attention sublayer of a GPS that ``gtc sparsify --attention-topk``
    made: its ``[B, L, L]`` mask and bias were still built on every call, 11 B a padded cell in eager
    torch that no layer read, where the server counts such a model at 0 B a cell (no heads) and so let
    a request of any size through. Nothing is built now, and the answers are those of the model
    without ``attention_topk``."""
    from dataclasses import replace

    from gtcompress.data.base import FeatureSpec
    from gtcompress.models import LayerSpec, ModelConfig, build_model

    cfg = ModelConfig(
        arch="gps", node_features=FeatureSpec("float", 3), out_dim=2, hidden=16, heads=2, num_layers=2,
        layers=[LayerSpec(heads=0, ffn_dim=32), LayerSpec(heads=0, ffn_dim=32)], attention_topk=2,
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    plain = build_model(replace(cfg, attention_topk=0)).eval()
    plain.load_state_dict(model.state_dict())
    ei, batch, b = _batch(0)
    x = torch.randn(batch.shape[0], 3, generator=torch.Generator().manual_seed(0))
    ctx = model.context(model.encode_nodes(x, {}), ei, None, batch, b)
    assert ctx.attn_bias is None and ctx.attn_rows is None and ctx.attn_edges is None
    with torch.no_grad():
        assert torch.equal(model.compute(x, ei, None, batch, {}, b), plain.compute(x, ei, None, batch, {}, b))
