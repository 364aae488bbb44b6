"""Positional-encoding memory: the encodings the server computes for a raw request take far more memory
than its body (one 5,300-node graph's RWSE: 703 MiB for a 22 MiB body), so ``gtc serve`` charges their
working memory (:func:`~gtcompress.preprocess.pe.pe_bytes`) against ``max_inflight_mib`` while they are
computed: a 400 past the whole budget, a 503 past what other requests leave."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from gtcompress.preprocess import NumpyGraph
from gtcompress.preprocess import pe as pe_module
from gtcompress.preprocess.pe import pe_bytes
from runtime import served as served_module
from runtime.body import InflightBudget
from runtime.request_cost import INLINE_PE_BYTES, JSON_ANSWER_VALUE_BYTES
from runtime.server import BackgroundServer, ServedModel, ServerLimits, create_app
from runtime.session import GraphSession
from runtime.spec import NUMPY_TO_KSERVE

MiB = 1 << 20
ROOT = Path(__file__).resolve().parents[2]

#: One encoding call in a fresh process: peak RSS over the RSS just before it (the peak is reset with
#: /proc/self/clear_refs), for a random graph of ``n`` nodes and ``e`` edges (``graphs`` copies).
_MEASURE = r"""
import gc, sys
import numpy as np
from gtcompress.preprocess.pe import pe_function
kind, n, e, k, graphs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rng = np.random.default_rng(0)
half = [rng.integers(0, n, size=(2, e // 2)) + g * n for g in range(graphs)]
ei = np.ascontiguousarray(np.concatenate([np.concatenate([h, h[::-1]], axis=1) for h in half], axis=1))
del half
ptr = np.arange(graphs + 1, dtype=np.int64) * n
fn = pe_function(kind)
fn(np.zeros((2, 0), np.int64), np.array([0, 3]), k)
gc.collect()
def status(field):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(field))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = status("VmRSS:")
fn(ei, ptr, k)
print(status("VmHWM:") - base, ei.shape[1])
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's peak-RSS reset")
@pytest.mark.parametrize(
    ("kind", "n", "e", "k", "graphs"),
    [
        ("rwse", 1500, 150_000, 4, 1),  # dense path (e >= n^2 / 20)
        ("rwse", 1000, 10_000, 16, 1),  # sparse path, powers filling in to n^2
        ("rwse", 30, 60, 16, 5000),  # many small graphs: the output dominates
        ("lap", 1500, 15_000, 8, 1),  # dense eigh
        ("lap", 2300, 30_000, 8, 1),  # sparse solver past 2,000 nodes
    ],
)
def test_pe_bytes_bounds_the_measured_peak_within_3x(kind: str, n: int, e: int, k: int, graphs: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, kind, str(n), str(e), str(k), str(graphs)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=True,
    )
    peak, edges = map(int, done.stdout.split())
    counts = np.full(graphs, n, dtype=np.int64)
    per_graph = np.full(graphs, edges // graphs, dtype=np.int64)
    bound = pe_bytes(kind, counts, per_graph, k)
    assert peak > 4 * MiB, peak  # large enough for the comparison to mean something
    assert peak <= bound <= 3 * peak, (peak / MiB, bound / MiB)


def test_pe_bytes_counts_the_largest_graph_plus_edges_and_outputs() -> None:
    counts = np.array([100, 3000, 1], dtype=np.int64)
    edges = np.array([400, 500_000, 0], dtype=np.int64)  # 3,000 nodes, n^2 / 18 edges: RWSE's dense path
    out = 8 * 4 * 3101
    assert pe_bytes("rwse", counts, edges, 4) == 32 * 3000**2 + 48 * 500_400 + out
    assert pe_bytes("lap", counts, edges, 4) == 20 * 3000**2 + 48 * 500_400 + out  # the sparse solver
    assert pe_bytes("lap", counts[:1], edges[:1], 4) == 24 * 100**2 + 48 * 400 + 8 * 4 * 100  # dense eigh
    sparse = np.array([400, 6000, 0], dtype=np.int64)  # the same nodes, few edges: the sparse path
    assert pe_bytes("rwse", counts, sparse, 4) == 36 * 4_000_000 + 3 * 64 * MiB + 48 * 6400 + out
    # one step: the sparse path keeps only P; the 100-node graph (dense path, always) is then the largest
    assert pe_bytes("rwse", counts, sparse, 1) == 32 * 100**2 + 48 * 6400 + 8 * 3101
    # TEDDY may still drop edges: the larger of the two paths
    assert pe_bytes("rwse", counts, edges, 4, fewer_edges=True) == 36 * 4_000_000 + 3 * 64 * MiB + 48 * 500_400 + out
    assert pe_bytes("lap", np.array([2001]), np.array([10]), 2) == 20 * 2001**2 + 480 + 8 * 2 * 2001
    assert pe_bytes("lap", counts, edges, 0) == 0
    with pytest.raises(ValueError, match="unknown PE kind 'spd'; expected lap or rwse"):
        pe_bytes("spd", counts, edges, 4)


def test_typical_requests_stay_under_the_inline_threshold() -> None:
    """A batch of 128 molecules and 32 CLUSTER graphs are encoded where they were, uncharged."""
    molecules = np.full(128, 40, dtype=np.int64)
    both = pe_bytes("rwse", molecules, np.full(128, 90), 16) + pe_bytes("lap", molecules, np.full(128, 90), 8)
    assert both < INLINE_PE_BYTES
    cluster = np.full(32, 190, dtype=np.int64)
    assert pe_bytes("rwse", cluster, np.full(32, 4000), 16) < INLINE_PE_BYTES


def test_lease_shrinks_but_never_grows_by_shrink_to() -> None:
    budget = InflightBudget(100)
    lease = budget.lease()
    lease.grow_to(80)
    lease.shrink_to(90)
    assert (lease.held, budget.held) == (80, 80)
    lease.shrink_to(30)
    assert (lease.held, budget.held) == (30, 30)
    lease.release()
    assert budget.held == 0


def _path(n: int) -> NumpyGraph:
    s = np.arange(n - 1, dtype=np.int64)
    ei = np.stack([np.concatenate([s, s + 1]), np.concatenate([s + 1, s])])
    return NumpyGraph(x=np.zeros((n, 3), np.float32), edge_index=ei, edge_attr=None, batch=None, pe={})


def _body(tensors: dict[str, np.ndarray]) -> bytes:
    inputs = [
        {"name": k, "datatype": NUMPY_TO_KSERVE[str(a.dtype)], "shape": list(a.shape), "data": a.ravel().tolist()}
        for k, a in tensors.items()
    ]
    return json.dumps({"inputs": inputs}).encode()


#: What the answer to one graph of the LapPE model (2 values, as JSON) is charged while the model runs.
ANSWER = 2 * JSON_ANSWER_VALUE_BYTES


def _held(body: bytes, tensors: dict[str, np.ndarray]) -> int:
    """What a parsed JSON request holds: its body and the arrays decoded from it."""
    return len(body) + sum(a.nbytes for a in tensors.values())


def _post(srv: BackgroundServer, body: bytes, model: str = "m") -> httpx.Response:
    return httpx.post(f"http://{srv.url}/v2/models/{model}/infer", content=body, timeout=120)


@pytest.fixture(scope="module")
def lap_session(exported) -> GraphSession:
    return GraphSession(exported["graph"].path)  # LapPE k = 2, padded lowering: no attention limit applies


@pytest.fixture(scope="module")
def server(lap_session) -> Iterator[BackgroundServer]:
    app = create_app([ServedModel("m", lap_session)], limits=ServerLimits(max_body_bytes=MiB), warmup=False)
    with BackgroundServer(app) as srv:
        yield srv


def _spy(monkeypatch: pytest.MonkeyPatch, srv: BackgroundServer, name: str = "laplacian_pe") -> list[int]:
    """The in-flight bytes the budget holds each time ``name`` computes an encoding (worker threads)."""
    seen: list[int] = []
    real = getattr(pe_module, name)

    def spy(*args: object) -> np.ndarray:
        seen.append(srv.app.state.inflight.held)
        return real(*args)

    monkeypatch.setattr(pe_module, name, spy)
    return seen


@pytest.mark.parametrize("n", [1500, 2100])  # a body under 64 KiB (decoded on the event loop), one over it
def test_the_encodings_working_memory_is_charged_while_they_are_computed(server, monkeypatch, n: int) -> None:
    g = _path(n)
    body = _body({"x": g.x, "edge_index": g.edge_index})
    assert (len(body) <= 64 * 1024) == (n == 1500)
    seen = _spy(monkeypatch, server)
    held_at_call: list[int] = []
    real_prepare = served_module.prepare_validated

    def prepare(*args: object, **kwargs: object) -> object:
        held_at_call.append(server.app.state.inflight.held)
        return real_prepare(*args, **kwargs)

    monkeypatch.setattr(served_module, "prepare_validated", prepare)
    r = _post(server, body)
    assert r.status_code == 200, r.text
    need = pe_bytes("lap", np.array([n]), np.array([2 * (n - 1)]), 2)
    assert need > INLINE_PE_BYTES
    held = _held(body, {"x": g.x, "edge_index": g.edge_index})
    assert seen == [held + need]  # computed once, in the charged step, not in the batcher
    # the model call: the body, the float32 encoding kept and the answer's charge
    assert held_at_call == [held + n * 2 * 4 + ANSWER]
    assert server.app.state.inflight.held == 0


def test_a_small_request_is_still_encoded_in_the_batcher_uncharged(server, monkeypatch, exported) -> None:
    g = _path(20)
    body = _body({"x": g.x, "edge_index": g.edge_index})
    seen = _spy(monkeypatch, server)
    r = _post(server, body)
    assert r.status_code == 200, r.text
    assert seen == [_held(body, {"x": g.x, "edge_index": g.edge_index}) + ANSWER]  # in the batcher (its PE uncharged)
    want = GraphSession(exported["graph"].path).run(g)[0]
    np.testing.assert_allclose(np.asarray(r.json()["outputs"][0]["data"], np.float32), want.ravel(), atol=1e-5)


def test_a_request_whose_body_and_encodings_exceed_the_whole_budget_is_a_400(lap_session, monkeypatch) -> None:
    limits = ServerLimits(max_body_bytes=MiB, max_inflight_mib=16)
    app = create_app([ServedModel("m", lap_session)], limits=limits, warmup=False)
    g = _path(2100)
    body = _body({"x": g.x, "edge_index": g.edge_index})
    need = pe_bytes("lap", np.array([2100]), np.array([4198]), 2)
    held = _held(body, {"x": g.x, "edge_index": g.edge_index})
    with BackgroundServer(app) as srv:
        seen = _spy(monkeypatch, srv)
        r = _post(srv, body)
        assert r.status_code == 400, r.text
        assert seen == []
        assert r.json()["error"] == (
            f"input 'x': computing pe_lap for this request's graphs takes about {need:,} bytes of memory, which "
            f"with its {held:,} bytes of body and arrays is more than this server's in-flight budget of "
            "16,777,216 bytes (--max-inflight-mib 16); send fewer or smaller graphs, pe_lap computed by the client "
            "with every model input (a pre-processed request), or start the server with a larger --max-inflight-mib"
        )
        assert srv.app.state.inflight.held == 0


def test_a_budget_others_hold_gets_a_503_before_the_encodings(server, monkeypatch) -> None:
    g = _path(2100)
    body = _body({"x": g.x, "edge_index": g.edge_index})
    need = pe_bytes("lap", np.array([2100]), np.array([4198]), 2)
    budget = server.app.state.inflight
    held = _held(body, {"x": g.x, "edge_index": g.edge_index})
    others = budget.limit - held - need + 1  # room for the body and its arrays, not for its encodings
    seen = _spy(monkeypatch, server)
    budget.held += others
    try:
        r = _post(server, body)
    finally:
        budget.held -= others
    assert r.status_code == 503, r.text
    assert seen == []
    assert r.json()["error"] == (
        f"server is busy: requests in flight hold {others} bytes, and this one's {held + need} would take "
        f"them past this server's limit of {budget.limit} bytes (max_inflight_mib); retry later"
    )
    assert budget.held == 0


def test_teddys_encodings_of_the_unsparsified_graph_are_charged_too(exported, monkeypatch) -> None:
    """A TEDDY model computes a kind it does not recompute on the graph before its edges go, inside the
    request's validation: charged the same (RWSE counting its larger path, as the edges may drop)."""
    import onnx

    path = exported["teddy"].path.with_name("teddy-keep-rwse.onnx")
    proto = onnx.load(str(exported["teddy"].path))
    for prop in proto.metadata_props:
        if prop.key == "teddy":
            prop.value = json.dumps({"edges": 0.3, "per_graph": True, "recompute_pe": []})
    onnx.save(proto, str(path))
    session = GraphSession(path)
    app = create_app([ServedModel("t", session)], limits=ServerLimits(max_body_bytes=MiB), warmup=False)
    g = exported["teddy"].graphs(1, seed=3, lo=600, hi=601)[0]
    tensors = {"x": g.x, "edge_index": g.edge_index, "edge_attr": g.edge_attr}
    body = _body(tensors)
    need = pe_bytes("rwse", np.array([600]), np.array([g.num_edges]), 4, fewer_edges=True)
    assert need > INLINE_PE_BYTES
    with BackgroundServer(app) as srv:
        seen = _spy(monkeypatch, srv, "rwse")
        r = _post(srv, body, "t")
        assert r.status_code == 200, r.text
        assert seen == [_held(body, tensors) + need]
        assert srv.app.state.inflight.held == 0
