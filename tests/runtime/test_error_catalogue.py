"""A catalogue of bad inputs to ``GraphSession`` and to the server, each with its exact message.

Its CLI counterpart is ``tests/cli/test_error_catalogue.py``. Every case here must fail with an
error of the project's own type (``GraphSession``) or a 4xx whose ``{"error": ...}`` names the input
and the problem (server): a message a user can act on, never a stack trace or a 500. The models
are the shared tiny exports of ``conftest.py``: ``node`` (categorical x with 2 columns of
cardinalities 5 and 3, 2 float edge features, RWSE-4, node-level) and ``graph`` (3 float
features, no edge features, LapPE-2, graph-level).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

from gtcompress.errors import GTCompressError
from gtcompress.preprocess import NumpyGraph
from runtime.batcher import BatchConfig
from runtime.errors import (
    BatchVectorError,
    CategoryError,
    DTypeError,
    EdgeIndexError,
    GraphTooLargeError,
    NonFiniteError,
    SessionError,
    ShapeError,
)
from runtime.graphs import Limits
from runtime.server import BackgroundServer, ServerLimits, create_app
from runtime.session import GraphSession

# ---------------------------------------------------------------- GraphSession
# One node-model graph, 8 nodes and 12 edges, with every input right; each case changes one thing.
N, E = 8, 12


def _good() -> NumpyGraph:
    rng = np.random.default_rng(6)
    ei = np.stack([rng.integers(0, N, E), rng.integers(0, N, E)]).astype(np.int64)
    x = np.stack([rng.integers(0, 5, N), rng.integers(0, 3, N)], axis=1).astype(np.int64)
    return NumpyGraph(x=x, edge_index=ei, edge_attr=rng.standard_normal((E, 2)).astype(np.float32))


def _with(**kw: Any) -> Callable[[], NumpyGraph]:
    def make() -> NumpyGraph:
        g = _good()
        d = {"x": g.x, "edge_index": g.edge_index, "edge_attr": g.edge_attr, "batch": None, "pe": {}}
        d.update({k: v(g) if callable(v) else v for k, v in kw.items()})
        return NumpyGraph(**d)

    return make


def _set_first_source(g: NumpyGraph, node: int, dtype: type = np.int64) -> np.ndarray:
    ei = g.edge_index.astype(dtype)
    ei[0, 0] = node
    return ei


def _cross_edge(g: NumpyGraph) -> np.ndarray:
    ei = g.edge_index % 4  # graph 0: nodes 0-3, graph 1: nodes 4-7 ...
    return np.concatenate([ei, [[0], [5]]], axis=1)  # ... and one edge from graph 0 into graph 1


SESSION_CASES = [
    ("x float for categorical", _with(x=lambda g: g.x.astype(np.float32)), DTypeError,
     "input 'x': categorical features must be integers (int64), got float32"),
    ("x one column", _with(x=lambda g: g.x[:, :1]), ShapeError, "input 'x': expected 2 feature columns, got 1"),
    ("x 1-d", _with(x=lambda g: g.x[:, 0].copy()), ShapeError,
     "input 'x': expected a 2-D array [nodes, 2], got shape [8]"),
    ("category past cardinality", _with(x=lambda g: np.concatenate([g.x[:, :1], np.full((N, 1), 3)], axis=1)),
     CategoryError, "input 'x': value 3 at row 0, column 1 is outside [0, 3) of that column"),
    ("negative category", _with(x=lambda g: np.concatenate([g.x[:, :1], np.full((N, 1), -1)], axis=1)),
     CategoryError, "input 'x': value -1 at row 0, column 1 is outside [0, 3) of that column"),
    ("no nodes", _with(x=np.zeros((0, 2), np.int64), edge_index=np.zeros((2, 0), np.int64),
                       edge_attr=np.zeros((0, 2), np.float32)),
     ShapeError, "input 'x': a graph needs at least one node"),
    ("edge_index float", _with(edge_index=lambda g: g.edge_index.astype(np.float32)), DTypeError,
     "input 'edge_index': expected integer node ids (int64), got float32"),
    ("edge_index one row", _with(edge_index=lambda g: g.edge_index[:1]), ShapeError,
     "input 'edge_index': expected shape [2, num_edges], got [1, 12]"),
    ("edge_index three rows", _with(edge_index=lambda g: np.concatenate([g.edge_index, g.edge_index[:1]])),
     ShapeError, "input 'edge_index': expected shape [2, num_edges], got [3, 12]"),
    ("node id past the nodes", _with(edge_index=lambda g: _set_first_source(g, N + 3)), EdgeIndexError,
     "input 'edge_index': node id 11 out of range for 8 nodes (edge 0)"),
    ("negative node id", _with(edge_index=lambda g: _set_first_source(g, -2)), EdgeIndexError,
     "input 'edge_index': negative node id -2 (edge 0)"),
    ("uint64 node id past 2**63", _with(edge_index=lambda g: _set_first_source(g, 2**64 - 2, np.uint64)),
     EdgeIndexError, "input 'edge_index': node id 18446744073709551614 out of range for 8 nodes (edge 0)"),
    ("edge features missing", _with(edge_attr=None), ShapeError,
     "input 'edge_attr': the model needs edge features; the graph has none"),
    ("edge features, one row too many", _with(edge_attr=np.ones((E + 1, 2), np.float32)), ShapeError,
     "input 'edge_attr': has 13 rows but the graph has 12 edges"),
    ("edge features, 3 columns", _with(edge_attr=np.ones((E, 3), np.float32)), ShapeError,
     "input 'edge_attr': expected 2 feature columns, got 3"),
    ("edge features NaN", _with(edge_attr=np.full((E, 2), np.nan, np.float32)), NonFiniteError,
     "input 'edge_attr': non-finite value nan at row 0, column 0"),
    ("edge features inf", _with(edge_attr=np.full((E, 2), np.inf, np.float32)), NonFiniteError,
     "input 'edge_attr': non-finite value inf at row 0, column 0"),
    ("edge features past float32 (float64)", _with(edge_attr=np.full((E, 2), -1e39)), NonFiniteError,
     "input 'edge_attr': value -1e+39 at row 0, column 0 is beyond float32's range (±3.403e+38), in which the "
     "model computes"),
    ("batch not starting at 0", _with(batch=np.arange(N)[::-1].copy()), BatchVectorError,
     "input 'batch': graph ids must start at 0, got 7"),
    ("batch with an empty graph", _with(batch=np.r_[np.zeros(N - 1, np.int64), 2]), BatchVectorError,
     "input 'batch': graph ids must be sorted and consecutive (no empty graph); 0 then 2"),
    ("batch one id too many", _with(batch=np.zeros(N + 1, np.int64)), ShapeError,
     "input 'batch': expected shape [8] (one graph id per node), got [9]"),
    ("batch float", _with(batch=np.zeros(N, np.float32)), DTypeError,
     "input 'batch': expected integer graph ids (int64), got float32"),
    ("PE too narrow", _with(pe={"rwse": np.zeros((N, 3), np.float32)}), ShapeError,
     "input 'pe_rwse': expected shape [8, 4], got [8, 3]"),
    ("PE one row too many", _with(pe={"rwse": np.zeros((N + 1, 4), np.float32)}), ShapeError,
     "input 'pe_rwse': expected shape [8, 4], got [9, 4]"),
    ("PE NaN", _with(pe={"rwse": np.full((N, 4), np.nan, np.float32)}), NonFiniteError,
     "input 'pe_rwse': contains NaN or infinite values"),
    ("an edge joining two graphs", _with(batch=np.r_[np.zeros(4, np.int64), np.ones(N - 4, np.int64)],
                                          edge_index=_cross_edge, edge_attr=np.ones((E + 1, 2), np.float32)),
     EdgeIndexError, "input 'edge_index': edge 12 (0 -> 5) joins graph 0 and graph 1"),
]  # fmt: skip


@pytest.fixture(scope="module")
def node_session(exported: dict) -> GraphSession:
    return GraphSession(exported["node"].path)


@pytest.mark.parametrize(("make", "cls", "message"), [c[1:] for c in SESSION_CASES], ids=[c[0] for c in SESSION_CASES])
def test_graph_session_names_the_input(node_session: GraphSession, make: Callable, cls: type, message: str) -> None:
    with pytest.raises(cls) as info:
        node_session.run(make())
    assert str(info.value) == message
    assert isinstance(info.value, GTCompressError)


def test_float_model_inputs(exported: dict) -> None:
    sess = GraphSession(exported["graph"].path)
    ei = np.array([[0, 1], [1, 2]])
    cases = [
        (NumpyGraph(x=np.zeros((5, 3), np.int64), edge_index=ei), DTypeError,
         "input 'x': expected floating-point features (float32), got int64"),
        (NumpyGraph(x=np.full((5, 3), np.nan, np.float32), edge_index=ei), NonFiniteError,
         "input 'x': non-finite value nan at row 0, column 0"),
        (NumpyGraph(x=np.zeros((5, 4), np.float32), edge_index=ei), ShapeError,
         "input 'x': expected 3 feature columns, got 4"),
    ]  # fmt: skip
    for g, cls, message in cases:
        with pytest.raises(cls) as info:
            sess.run(g)
        assert str(info.value) == message
    small = GraphSession(exported["graph"].path, limits=Limits(max_nodes=4))
    with pytest.raises(GraphTooLargeError) as info:
        small.run(NumpyGraph(x=np.zeros((5, 3), np.float32), edge_index=ei))
    assert str(info.value) == "input 'x': batch has 5 nodes, more than the maximum 4"


def test_session_construction_errors(exported: dict, tmp_path) -> None:
    with pytest.raises(SessionError) as info:
        GraphSession(tmp_path / "nope.onnx")
    assert str(info.value) == f"model file does not exist: {tmp_path / 'nope.onnx'}"
    with pytest.raises(SessionError) as info:
        GraphSession(exported["node"].path, ["nope"])
    assert str(info.value).startswith("execution provider 'nope' is not available here; available: ")


# ---------------------------------------------------------------- server
def _t(name: str, arr: np.ndarray) -> dict[str, Any]:
    dt = {"int64": "INT64", "float32": "FP32"}[arr.dtype.name]
    return {"name": name, "datatype": dt, "shape": list(arr.shape), "data": arr.ravel().tolist()}


def _ok() -> list[dict[str, Any]]:
    g = _good()
    return [_t("x", g.x), _t("edge_index", g.edge_index), _t("edge_attr", g.edge_attr)]


def _body(inputs: list[dict[str, Any]], **kw: Any) -> bytes:
    return json.dumps({"inputs": inputs, **kw}).encode()


def _binary_short() -> tuple[bytes, dict[str, str]]:
    ok = _ok()
    head = json.dumps({"inputs": [{**ok[0], "data": None, "parameters": {"binary_data_size": 8}}, *ok[1:]]})
    head = head.replace(', "data": null', "").encode()
    return head + b"\0" * 3, {"Inference-Header-Content-Length": str(len(head))}


def _bytes_x() -> tuple[bytes, dict[str, str]]:
    """``x`` as a BYTES tensor of 2N elements in binary (the model's x is INT64), its last element cut
    short: refused for its datatype, since its data is no longer decoded before the check."""
    ok = _ok()
    size = 6 * 2 * N - 1
    entry = {"name": "x", "datatype": "BYTES", "shape": [N, 2], "parameters": {"binary_data_size": size}}
    head = json.dumps({"inputs": [entry, *ok[1:]]}).encode()
    return head + (b"\x02\x00\x00\x00ab" * (2 * N))[:size], {"Inference-Header-Content-Length": str(len(head))}


INCOMPLETE = (
    "model 'gt_node': incomplete pre-processed request: it carries pe_rwse but lacks batch, node_counts, "
    "node_slot, pad_mask; send every model input (as runtime.client.make_inputs builds them) or only the raw "
    "graph: x, edge_index, edge_attr, optionally batch and/or node_counts"
)
SERVER_CASES: list[tuple[str, Callable[[], tuple[bytes, dict[str, str]]], int, str]] = [
    ("malformed JSON", lambda: (b"{not json", {}), 400,
     "request JSON is malformed: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
    ("JSON not an object", lambda: (b"[1, 2]", {}), 400, "request JSON must be an object with an 'inputs' list"),
    ("no inputs", lambda: (_body([]), {}), 400, "request JSON needs a non-empty 'inputs' list"),
    ("unknown input", lambda: (_body([*_ok(), _t("y", np.ones(1, np.float32))]), {}), 400,
     "input 'y' is not an input of model 'gt_node'; its inputs are x, edge_index, edge_attr, batch, node_counts, "
     "pe_rwse, node_slot, pad_mask"),
    ("missing x", lambda: (_body(_ok()[1:]), {}), 400,
     "input 'x': required input is missing (model 'gt_node' needs x, edge_index, edge_attr)"),
    ("duplicate input", lambda: (_body([*_ok(), _ok()[0]]), {}), 400, "input 'x' appears twice"),
    ("wrong datatype", lambda: (_body([{**_ok()[0], "datatype": "FP32"}, *_ok()[1:]]), {}), 400,
     "input 'x': datatype FP32 does not match the model's INT64"),
    ("unknown datatype", lambda: (_body([{**_ok()[0], "datatype": "FP99"}, *_ok()[1:]]), {}), 400,
     "input 'x': unknown datatype 'FP99'"),
    ("shape does not fit the data", lambda: (_body([{**_ok()[0], "shape": [3, 2]}, *_ok()[1:]]), {}), 400,
     "input 'x': 'data' has 16 elements but shape needs 6"),
    ("negative dimension", lambda: (_body([{**_ok()[0], "shape": [-1, 2]}, *_ok()[1:]]), {}), 400,
     "input 'x': negative dimension in shape [-1, 2]"),
    ("data not numbers", lambda: (_body([{**_ok()[0], "data": "abc"}, *_ok()[1:]]), {}), 400,
     "input 'x': 'data' must hold numbers (or true/false for BOOL)"),
    ("node id out of range", lambda: (_body([_ok()[0], {**_ok()[1], "data": [100] * 2 * E}, _ok()[2]]), {}), 400,
     "input 'edge_index': node id 100 out of range for 8 nodes (edge 0)"),
    ("category out of range", lambda: (_body([{**_ok()[0], "data": [9] * 2 * N}, *_ok()[1:]]), {}), 400,
     "input 'x': value 9 at row 0, column 0 is outside [0, 5) of that column"),
    ("unknown output", lambda: (_body(_ok(), outputs=[{"name": "nope"}]), {}), 400,
     "output 'nope' is not an output of model 'gt_node'; its outputs are output"),
    ("incomplete pre-processed set", lambda: (_body([*_ok(), _t("pe_rwse", np.zeros((N, 4), np.float32))]), {}),
     400, INCOMPLETE),
    ("binary data shorter than declared", _binary_short, 400,
     "input 'x': binary_data_size 8 runs past the 3 binary bytes in the body"),
    ("corrupt gzip", lambda: (b"\x1f\x8b\x08\x00garbage", {"Content-Encoding": "gzip"}), 400,
     "request body is not valid gzip data (it ends inside the compressed stream)"),
    ("unsupported encoding", lambda: (_body(_ok()), {"Content-Encoding": "br"}), 400,
     "unsupported Content-Encoding 'br'; use gzip, deflate or none"),
    ("BYTES input (refused before its data is decoded)", lambda: _bytes_x(), 400,
     "input 'x': datatype BYTES does not match the model's INT64"),
    ("integer of 5000 digits", lambda: (b'{"id": ' + b"1" * 5000 + b', "inputs": []}', {}), 400,
     "request JSON is malformed: a number has more than 4300 digits"),
    ("dimension above int64", lambda: (_body([{**_ok()[0], "shape": [2**63, 2]}, *_ok()[1:]]), {}), 400,
     "input 'x': dimension 0 of 'shape' is larger than 2**63-1 (9223372036854775807)"),
    ("nested data of another shape", lambda: (_body([{**_ok()[0], "shape": [2, N], "data": _good().x.tolist()},
                                                    *_ok()[1:]]), {}), 400,
     f"input 'x': nested 'data' has shape [{N}, 2] but 'shape' is [2, {N}]; nest it as the shape or send it flat"),
    ("booleans as INT64", lambda: (_body([{**_ok()[0], "data": [True] * 2 * N}, *_ok()[1:]]), {}), 400,
     "input 'x': datatype INT64 needs numbers in 'data', got true/false"),
    ("binary_data_output as a string", lambda: (_body(_ok(), parameters={"binary_data_output": "false"}), {}), 400,
     "request parameter 'binary_data_output' must be true or false, got 'false'"),
    ("body over the limit", lambda: (b"x" * (2 * 1024 * 1024), {}), 413,
     "request body of 2097152 bytes (Content-Length) exceeds this server's limit of 1048576 bytes "
     "(max_body_bytes); Content-Encoding: identity"),
]  # fmt: skip


@pytest.fixture(scope="module")
def http(exported: dict) -> Any:
    sessions = {"gt_node": GraphSession(exported["node"].path), "gt_graph": GraphSession(exported["graph"].path)}
    limits = ServerLimits(max_nodes=5000, max_body_bytes=1024 * 1024)
    with BackgroundServer(create_app(sessions, BatchConfig(max_delay_ms=1), limits=limits)) as srv:
        url = srv.url if srv.url.startswith("http") else f"http://{srv.url}"
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client


@pytest.mark.parametrize(("make", "status", "message"), [c[1:] for c in SERVER_CASES], ids=[c[0] for c in SERVER_CASES])
def test_server_answers_4xx_naming_the_problem(http: Any, make: Callable, status: int, message: str) -> None:
    content, headers = make()
    r = http.post("/v2/models/gt_node/infer", content=content, headers=headers)
    assert (r.status_code, r.json()) == (status, {"error": message})
    assert http.get("/v2/health/ready").status_code == 200  # and stays ready


def test_server_unknown_model_and_version(http: Any) -> None:
    r = http.post("/v2/models/nope/infer", content=_body(_ok()))
    assert (r.status_code, r.json()) == (404, {"error": "unknown model 'nope'; this server has gt_graph, gt_node"})
    r = http.post("/v2/models/gt_node/versions/7/infer", content=_body(_ok()))
    assert (r.status_code, r.json()) == (404, {"error": "model 'gt_node' has no version '7' (served: 1)"})
    r = http.get("/v2/models/nope")
    assert r.status_code == 404


def test_batch_alone_is_held_to_max_graphs(exported: dict) -> None:
    """Only node_counts was checked against max_graphs: 'batch' alone named as many graphs as nodes."""
    from runtime.protocol import InferRequest
    from runtime.served import ServedModel, request_graph

    model = ServedModel("gt_graph", GraphSession(exported["graph"].path))
    x, ei = np.zeros((5, 3), np.float32), np.zeros((2, 0), np.int64)
    for extra in ({"batch": np.arange(5, dtype=np.int64)}, {"node_counts": np.ones(5, np.int64)}):
        inputs = {"x": x, "edge_index": ei, **extra}
        req = InferRequest(inputs, {k: "FP32" if k == "x" else "INT64" for k in inputs})
        with pytest.raises(GraphTooLargeError) as info:
            request_graph(req, model, ServerLimits(max_graphs=2))
        assert str(info.value) == f"input '{next(iter(extra))}': request has 5 graphs, above this server's 2"
        assert request_graph(req, model, ServerLimits(max_graphs=5))[1] == 5
