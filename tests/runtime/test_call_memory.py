"""One request's memory is held to ``max_attention_mib`` as one sum (:mod:`runtime.call_memory`): its
cells or slots, what it holds per edge, and what every model holds per node. Each part held alone lets
a request take nearly twice the limit, and many small graphs have few cells but GiBs of node rows."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from exporters.onnx import export_onnx
from gtcompress.data.base import FeatureSpec
from gtcompress.models import ModelConfig
from gtcompress.preprocess import NumpyGraph
from gtcompress.preprocess.batching import union_graphs
from gtcompress.preprocess.layouts import padded_slots
from runtime.call_memory import check_call_memory
from runtime.edge_cost import CallBytes, call_bytes
from runtime.errors import GraphTooLargeError, SessionError
from runtime.packing import MIB, BatchConfig, GraphRequest, pack
from runtime.profile_cost import check_costs
from runtime.protocol import InferRequest
from runtime.request_cost import attention_bytes, attention_cell_bytes
from runtime.served import ServedModel, ServerLimits, request_graph
from runtime.session import GraphSession
from tests.runtime.conftest import seeded_model
from tests.runtime.test_edge_limits import LINUX, _peak_bytes

ROWS = "its layers' activations a row per node"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Hidden-32, 2-layer GPS exported ``dense``: a GIN one with 2 heads, a GINE one with 4."""
    root = tmp_path_factory.mktemp("call-memory")
    out = {}
    for name, heads, edges in (("gin", 2, None), ("gine", 4, FeatureSpec("float", 2))):
        cfg = ModelConfig(
            arch="gps",
            node_features=FeatureSpec("float", 3),
            edge_features=edges,
            out_dim=2,
            hidden=32,
            heads=heads,
            num_layers=2,
            task_level="node",
        )
        out[name] = export_onnx(seeded_model(cfg), root / f"{name}.onnx", "dense", verify_batches=1).path
    return out


def _request(graphs: int, nodes: int, edges: int, edge_attr: bool = False) -> InferRequest:
    """``graphs`` random graphs of ``nodes`` nodes and ``edges`` edges each, as one request's union."""
    rng = np.random.default_rng(0)
    offsets = np.repeat(np.arange(graphs, dtype=np.int64) * nodes, edges)
    tensors = {
        "x": rng.normal(size=(graphs * nodes, 3)).astype(np.float32),
        "edge_index": rng.integers(0, nodes, (2, graphs * edges)) + offsets,
        "node_counts": np.full(graphs, nodes, dtype=np.int64),
    }
    if edge_attr:
        tensors["edge_attr"] = rng.normal(size=(graphs * edges, 2)).astype(np.float32)
    dtypes = {"x": "FP32", "edge_index": "INT64", "node_counts": "INT64", "edge_attr": "FP32"}
    return InferRequest(tensors, {k: dtypes[k] for k in tensors})


def test_many_small_graphs_are_held_to_the_limit_by_their_nodes(models) -> None:
    """20,000 nodes in graphs of 4: under 1 MiB of cells, 63.5 MiB of node rows (before: answered)."""
    m = ServedModel("gps", GraphSession(models["gin"]))
    assert m.edge_cost == CallBytes(0, 80 * 32 + 768, ROWS)
    req = _request(5_000, 4, 4)
    with pytest.raises(GraphTooLargeError) as e:
        request_graph(req, m, ServerLimits(max_attention_mib=50))
    assert str(e.value) == (
        "input 'x': model 'gps' holds about 3328 B per node in one call (its layers' activations a row per node), "
        "so this request's 20,000 nodes take 63.5 MiB, above this server's 50 MiB (send fewer or smaller graphs)"
    )
    _, graphs, _ = request_graph(req, m, ServerLimits(max_attention_mib=65))
    assert graphs == 5_000


def test_cells_edges_and_nodes_each_within_the_limit_are_refused_past_it_together(models) -> None:
    """One 1,000-node graph of 10,000 edges: 22.9 MiB of cells and 14.8 of edges and nodes, each within
    30 MiB (before: answered), 37.7 together."""
    m = ServedModel("gine", GraphSession(models["gine"]))
    req = _request(1, 1_000, 10_000, edge_attr=True)
    with pytest.raises(GraphTooLargeError) as e:
        request_graph(req, m, ServerLimits(max_attention_mib=30))
    assert str(e.value) == (
        "input 'x': model 'gine' holds about 1216 B per edge and 3328 B per node in one call (its local message "
        "passing (GINE) holds a message per edge, its layers' activations a row per node), so this request's "
        "10,000 edges and 1,000 nodes take 14.8 MiB, and its attention scores per layer (1 graph(s) padded to 1000 "
        "nodes at 24 B a cell) take 22.9 MiB more: 37.7 MiB in all, above this server's 30 MiB (send fewer or smaller "
        "graphs)"
    )
    with pytest.raises(GraphTooLargeError) as e:  # the cells alone past the limit: their own words, as before
        request_graph(req, m, ServerLimits(max_attention_mib=20))
    assert str(e.value).startswith("input 'x': graph 0 has 1000 nodes; model 'gine' attends densely")
    union, _, _ = request_graph(req, m, ServerLimits(max_attention_mib=38))
    assert union.num_edges == 10_000


@dataclass
class _Item:
    nodes: int
    edges: int
    num_graphs: int = 1
    largest: int = 10


def test_the_batcher_merges_no_more_than_the_sum_allows(models) -> None:
    """Requests of 0.4 MiB of nodes and edges each: two merge within 1 MiB, a third would pass it."""
    cfg = replace(BatchConfig(), max_attention_mib=1.0, node_bytes=200, edge_bytes=20)
    items = [_Item(1_000, 10_000) for _ in range(5)]  # five within the soft node and edge limits
    assert [len(b) for b in pack(items, cfg)] == [2, 2, 1]
    assert [len(b) for b in pack(items, replace(cfg, node_bytes=0, edge_bytes=0))] == [5]
    # 10^2 cells an item at 2,000 B: five items' cells alone fit (before: merged), two items' with their
    # nodes and edges do not; at 1,000 B a cell two do
    cells = replace(cfg, attention_cell_bytes=2_000)
    assert [len(b) for b in pack(items, cells)] == [1, 1, 1, 1, 1]
    assert [len(b) for b in pack(items, replace(cells, attention_cell_bytes=1_000))] == [2, 2, 1]
    m = ServedModel("gine", GraphSession(models["gine"]))
    assert (m.batch.node_bytes, m.batch.edge_bytes) == (m.edge_cost.node, m.edge_cost.edge) == (3328, 1216)


def test_profile_refuses_what_the_sum_passes(models) -> None:
    with pytest.raises(SessionError) as e:  # nodes alone
        check_costs([str(models["gin"])], [(4, 5_000)], 1.0, 0, max_attention_mib=50)
    assert str(e.value) == (
        f"profile: {models['gin']} at graph size 4 and batch size 5000 needs an estimated 63.5 MiB of memory for its "
        f"20,000 nodes (3328 B per node: {ROWS}), above the limit of 50 MiB; choose smaller --sizes or --batch-sizes, "
        "or raise --max-attention-mib"
    )
    with pytest.raises(SessionError) as e:  # cells, edges and nodes, each within the limit
        check_costs([str(models["gine"])], [(1_000, 1)], 10.0, 0, max_attention_mib=30)
    assert str(e.value) == (
        f"profile: {models['gine']} at graph size 1000 and batch size 1 needs an estimated 14.8 MiB of memory for its "
        "10,000 edges and 1,000 nodes (1216 B per edge and 3328 B per node: its local message passing (GINE) holds a "
        f"message per edge, {ROWS}) and 22.9 MiB of attention memory per layer (1 padded 1000x1000 attention score "
        "matrices at 24 B a cell), 37.7 MiB in all, above the limit of 30 MiB; choose smaller --sizes or "
        "--batch-sizes, or raise --max-attention-mib"
    )
    check_costs([str(models["gine"])], [(1_000, 1)], 10.0, 0, max_attention_mib=38)


@LINUX
def test_a_gps_node_count_covers_what_a_call_of_small_graphs_takes(models) -> None:
    """10,000 graphs of 8 nodes (few cells), pre-processing included: the sum is above the peak, and not
    far above (a count far above would refuse what the server can run)."""
    session = GraphSession(models["gin"])
    cells, _ = attention_bytes(attention_cell_bytes(session), np.full(10_000, 8), packed=session.spec.packed)
    counted = cells + call_bytes(session).need(80_000, 160_000)
    peak = _peak_bytes(models["gin"], 10_000, 8, 16)
    assert 0.5 * counted < peak <= counted, f"peak {peak / MIB:.0f} MiB, counted {counted / MIB:.0f} MiB"


def _stand_in(edge: int, node: int, slot: int = 0, cell: int = 0) -> SimpleNamespace:
    """What :func:`check_call_memory` reads of a served model, with chosen byte counts."""
    batch = replace(BatchConfig(), slot_bytes=slot, attention_cell_bytes=cell)
    session = SimpleNamespace(spec=SimpleNamespace(packed=False))
    return SimpleNamespace(name="m", batch=batch, edge_cost=CallBytes(edge, node, "rows"), session=session)


def _chain(n: int) -> np.ndarray:
    """``n`` nodes, each with one incoming edge (from the one before it, node 0 from the last)."""
    return np.stack([np.roll(np.arange(n), 1), np.arange(n)]).astype(np.int64)


@pytest.mark.parametrize(
    ("edge", "node", "tensor", "advice"),
    [(600, 500, "edge_index", "send fewer edges or smaller graphs"), (500, 600, "x", "send fewer or smaller graphs")],
)
def test_a_refusal_by_edges_and_nodes_names_the_larger_of_the_two(edge: int, node: int, tensor: str, advice: str):
    """1,000 nodes and 1,000 edges, 1.05 MiB under a 1 MiB limit: the input named is the one holding more, and
    the advice follows it, whatever the cells (0.95 MiB at 1 B a cell, not part of this refusal); two decimals,
    where one would read ``1.0 MiB, above this server's 1 MiB``."""
    with pytest.raises(GraphTooLargeError) as e:
        check_call_memory(
            _stand_in(edge, node, cell=1),
            ServerLimits(max_attention_mib=1),
            np.array([1_000]),
            _chain(1_000),
            1_000,
            1_000,
        )
    assert str(e.value) == (
        f"input '{tensor}': model 'm' holds about {edge} B per edge and {node} B per node in one call (rows), so this "
        f"request's 1,000 edges and 1,000 nodes take 1.05 MiB, above this server's 1 MiB ({advice})"
    )


def test_neighbour_list_slots_and_nodes_each_within_the_limit_are_refused_past_it_together() -> None:
    """The padded lowering: 1,000 slots at 600 B (0.57 MiB) and 1,000 nodes at 500 B (0.48 MiB), each within
    1 MiB, 1.05 MiB together; at 1.1 MiB the same request passes."""
    model = _stand_in(0, 500, slot=600)
    with pytest.raises(GraphTooLargeError) as e:
        check_call_memory(model, ServerLimits(max_attention_mib=1), np.array([1_000]), _chain(1_000), 1_000, 1_000)
    assert str(e.value) == (
        "input 'edge_index': model 'm' holds about 500 B per node in one call (rows), so this request's 1,000 nodes "
        "take 0.48 MiB, and its 1,000 neighbour-list slots at 600 B a slot take 0.57 MiB more: 1.05 MiB in all, "
        "above this server's 1 MiB (send fewer or smaller graphs)"
    )
    check_call_memory(model, ServerLimits(max_attention_mib=1.1), np.array([1_000]), _chain(1_000), 1_000, 1_000)


def test_every_server_caps_its_batchers_memory_at_the_request_limit(models) -> None:
    """A merged call answers requests each held to the server's limit, so it may not hold more than one of them:
    ``create_app`` (``gtc serve``, or a library caller with its own limits) caps the batch's 256 MiB at the
    server's 100 MiB, and the merge of two 60 MiB requests is then two calls."""
    from runtime.server import create_app

    m = ServedModel("gps", GraphSession(models["gin"]))
    assert m.batch.max_attention_mib == 256
    create_app([m], limits=ServerLimits(max_attention_mib=100), warmup=False)
    assert m.batch.max_attention_mib == 100
    per = m.edge_cost.node  # 60 MiB of node rows a request, no edges, 1-node graphs (no cells to speak of)
    items = [_Item(60 * MIB // per, 0, 1, 1) for _ in range(2)]
    assert [len(b) for b in pack(items, replace(m.batch, max_nodes=10**9))] == [1, 1]
    create_app([m], limits=ServerLimits(max_attention_mib=4096), warmup=False)
    assert m.batch.max_attention_mib == 100  # capped, never raised


def _merge_case(draw: st.DrawFn) -> tuple[SimpleNamespace, float, list[GraphRequest]]:
    """A stand-in model (dense cells, packed or not; or neighbour-list slots; bytes per node and edge), a
    limit, and requests of 1-4 random graphs each. Half the limits are drawn within 10 % of what the first two
    requests take merged, where a rule a few percent too lax merges a call the server refuses."""
    kind = draw(st.sampled_from(["cells", "packed", "slots", "edges only"]))
    cell = draw(st.integers(1, 400)) if kind in ("cells", "packed") else 0
    slot = draw(st.integers(1, 400)) if kind == "slots" else 0
    batch = replace(
        BatchConfig(max_nodes=10**9, max_edges=10**9, max_graphs=10**9, max_requests=10**6),
        attention_cell_bytes=cell,
        packed_rows=kind == "packed",
        slot_bytes=slot,
        slot_buckets=draw(st.sampled_from([0, 1, 2, 4])),
        node_bytes=draw(st.integers(0, 3_000)),
        edge_bytes=draw(st.integers(0, 3_000)),
    )
    session = SimpleNamespace(spec=SimpleNamespace(packed=kind == "packed"))
    model = SimpleNamespace(name="m", batch=batch, edge_cost=CallBytes(batch.edge_bytes, batch.node_bytes, "rows"),
                            session=session)  # fmt: skip
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    requests = []
    for _ in range(draw(st.integers(2, 12))):
        graphs = []
        for _ in range(int(rng.integers(1, 5))):
            n = int(rng.integers(1, 60))
            e = int(rng.integers(0, 4 * n))
            hub = rng.random() < 0.3  # a node taking most edges: a large neighbour-list bucket
            dst = np.zeros(e, dtype=np.int64) if hub else rng.integers(0, n, e)
            graphs.append(NumpyGraph(np.zeros((n, 1), np.float32), np.stack([rng.integers(0, n, e), dst])))
        requests.append(GraphRequest(union_graphs(graphs), len(graphs)))

    def need(r: GraphRequest) -> int:  # one row a graph
        return (r.nodes * batch.node_bytes + r.edges * batch.edge_bytes + r.num_graphs * r.largest**2 * cell
                + padded_slots(*r.degrees, batch.slot_buckets) * slot)  # fmt: skip

    if draw(st.booleans()):  # about the largest request's need: limits around it refuse some and merge others
        around = max(need(r) for r in requests)
        scale = draw(st.floats(0.5, 4.0))
    else:  # within 10 % of the first two merged: a merge a few percent past the limit is where a rule errs
        around = need(GraphRequest(union_graphs([r.graph for r in requests[:2]]), requests[0].num_graphs
                                   + requests[1].num_graphs))  # fmt: skip
        scale = draw(st.floats(0.9, 1.1))
    return model, max(around, 1) / MIB * scale, requests


def _check_request(model: SimpleNamespace, limit: float, req: GraphRequest) -> None:
    g = req.graph
    check_call_memory(model, ServerLimits(max_attention_mib=limit), req.graph_nodes, g.edge_index, g.num_nodes,
                      g.num_edges)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_every_call_the_batcher_merges_passes_the_servers_check_as_one_request(data: st.DataObject) -> None:
    """Requests each within the server's limit, merged as ``pack`` merges them (the batcher's and Triton's
    python model's rule, against the batch limit every server caps at its own), are one call within that
    limit by the server's per-request check: merging never forms a call the server would refuse from one
    client. The two rules are written apart (``fits`` counts as a batch grows, ``check_call_memory`` a whole
    request, with its packed rows or neighbour-list buckets cut from the union)."""
    model, limit, requests = data.draw(st.composite(lambda draw: _merge_case(draw))())
    accepted = []
    for req in requests:
        try:
            _check_request(model, limit, req)
        except GraphTooLargeError:
            continue  # refused before the batcher sees it
        accepted.append(req)
    batches = pack(accepted, replace(model.batch, max_attention_mib=limit))
    event(f"{len(requests) - len(accepted)} refused" if len(accepted) < len(requests) else "none refused")
    event("split and merged" if 1 < len(batches) < len(accepted) else f"{len(batches)} of {len(accepted)}")
    assert sum(len(b) for b in batches) == len(accepted)
    for b in batches:
        merged = GraphRequest(union_graphs([r.graph for r in b]), sum(r.num_graphs for r in b))
        _check_request(model, limit, merged)
