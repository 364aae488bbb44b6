"""Positional-encoding work: LapPE and RWSE cost up to the cube of a graph's nodes, so a raw request
within the node and edge limits could keep a server busy for minutes (one 8,000-node random graph's
LapPE: 60 s; a 20,000-node star's RWSE: 44 s). ``ServerLimits.max_pe_work`` refuses such a request
with a 400 naming the limit before any encoding is computed; a pre-processed request is not charged."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from gtcompress.preprocess import NumpyGraph
from gtcompress.preprocess import pe as pe_module
from gtcompress.preprocess.pe import PE_GRAPH_WORK, pe_work
from runtime.client import make_inputs
from runtime.server import BackgroundServer, ServedModel, ServerLimits, create_app
from runtime.session import GraphSession
from runtime.spec import NUMPY_TO_KSERVE

LAP = PE_GRAPH_WORK["lap"]
LIMIT = LAP + 10_000  # the 'graph' model's LapPE (k = 2): one graph of up to 21 nodes (21^3 = 9,261)


def test_pe_work_counts_a_cube_per_graph_and_a_step_per_walk_length() -> None:
    counts = np.array([1, 2, 3], dtype=np.int64)
    assert pe_work("lap", counts, 4) == 8 + 27 + 2 * LAP  # a one-node graph has nothing to compute
    assert pe_work("rwse", counts, 4) == 3 * (8 + 27) + 2 * PE_GRAPH_WORK["rwse"]  # k - 1 n x n products
    assert pe_work("rwse", counts, 1) == 8 + 27 + 2 * PE_GRAPH_WORK["rwse"]
    assert pe_work("lap", counts, 0) == 0.0
    with pytest.raises(ValueError, match="unknown PE kind 'spd'; expected lap or rwse"):
        pe_work("spd", counts, 4)


def test_lap_pe_past_the_dense_size_is_charged_the_sparse_solvers_speed() -> None:
    """The sparse eigensolver runs at about a quarter of LAPACK's speed: a random 5,300-node graph's
    LapPE took 18 s (4,200 nodes: 10-12 s) and, counted as n^3, passed the default limit."""
    from gtcompress.preprocess.pe import _DENSE_EIG_MAX, LAP_SPARSE_FACTOR

    big = np.array([_DENSE_EIG_MAX + 1], dtype=np.int64)
    assert pe_work("lap", big, 8) == LAP_SPARSE_FACTOR * float(big[0]) ** 3 + LAP
    assert pe_work("lap", big - 1, 8) == float(_DENSE_EIG_MAX) ** 3 + LAP  # the dense path, as before
    assert pe_work("lap", np.array([4200]), 8) > ServerLimits().max_pe_work
    assert pe_work("lap", np.array([3300]), 8) < ServerLimits().max_pe_work


def test_many_tiny_graphs_are_charged_their_fixed_cost() -> None:
    """100,000 graphs of 10 nodes (within max_graphs) took 15 s of LapPE, all of it per-graph overhead:
    their cubes alone (1e8 steps) passed the default limit."""
    tiny = np.full(100_000, 10, dtype=np.int64)
    assert pe_work("lap", tiny, 8) == 100_000 * (1000 + LAP)
    assert pe_work("lap", tiny, 8) > ServerLimits().max_pe_work
    assert pe_work("lap", tiny[:10_000], 8) < ServerLimits().max_pe_work  # 1.5 s


@pytest.fixture(scope="module")
def server(exported) -> Iterator[BackgroundServer]:
    session = GraphSession(exported["graph"].path)  # LapPE, padded lowering: no attention limit applies
    app = create_app([ServedModel("m", session)], limits=ServerLimits(max_pe_work=LIMIT), warmup=False)
    with BackgroundServer(app) as srv:
        yield srv


def _path(n: int) -> NumpyGraph:
    s = np.arange(n - 1, dtype=np.int64)
    ei = np.stack([np.concatenate([s, s + 1]), np.concatenate([s + 1, s])])
    x = np.random.default_rng(n).normal(size=(n, 3)).astype(np.float32)
    return NumpyGraph(x=x, edge_index=ei, edge_attr=None, batch=None, pe={})


def _post(srv: BackgroundServer, tensors: dict[str, np.ndarray]) -> httpx.Response:
    inputs = [
        {"name": k, "datatype": NUMPY_TO_KSERVE[str(a.dtype)], "shape": list(a.shape), "data": a.ravel().tolist()}
        for k, a in tensors.items()
    ]
    return httpx.post(f"http://{srv.url}/v2/models/m/infer", content=json.dumps({"inputs": inputs}), timeout=60)


def test_a_raw_request_past_max_pe_work_is_a_400_before_any_encoding(server, monkeypatch) -> None:
    def refuse(*args: object) -> np.ndarray:
        raise AssertionError("LapPE computed for a request past max_pe_work")

    g = _path(22)  # 22^3 = 10,648
    monkeypatch.setattr(pe_module, "laplacian_pe", refuse)
    r = _post(server, {"x": g.x, "edge_index": g.edge_index})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == (
        "input 'x': computing pe_lap for this request's 1 graph(s) (the largest, graph 0, has 22 nodes) takes "
        f"{LAP + 22**3:.4g} steps of work, above this server's max_pe_work {LIMIT:.4g}; send fewer or smaller "
        "graphs, or pe_lap computed by the client with every model input (a pre-processed request, as "
        "runtime.client.make_inputs builds it)"
    )


def test_many_graphs_add_up_and_smaller_requests_are_served(server, exported) -> None:
    graphs = [_path(14) for _ in range(4)]  # 4 x (LAP + 14^3): each alone is served, together refused
    x = np.concatenate([g.x for g in graphs])
    ei = np.concatenate([g.edge_index + 14 * i for i, g in enumerate(graphs)], axis=1)
    batch = np.repeat(np.arange(4, dtype=np.int64), 14)
    r = _post(server, {"x": x, "edge_index": ei, "batch": batch})
    assert r.status_code == 400, r.text
    took = f"this request's 4 graph(s) (the largest, graph 0, has 14 nodes) takes {4 * (LAP + 14**3):.4g} steps"
    assert took in r.json()["error"]
    want = GraphSession(exported["graph"].path).run(graphs[0])[0]
    r = _post(server, {"x": graphs[0].x, "edge_index": graphs[0].edge_index})
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    np.testing.assert_allclose(np.asarray(out["data"], np.float32), want.ravel(), atol=1e-5)


def test_a_preprocessed_request_carries_its_own_encodings_and_is_not_charged(server, exported) -> None:
    g = _path(40)  # LAP + 64,000 steps if the server computed its LapPE
    inputs = make_inputs(g, exported["graph"].spec)
    r = _post(server, inputs)
    assert r.status_code == 200, r.text
    want = GraphSession(exported["graph"].path).run(g)[0]
    out = r.json()["outputs"][0]
    np.testing.assert_allclose(np.asarray(out["data"], np.float32), want.ravel(), atol=1e-5)
