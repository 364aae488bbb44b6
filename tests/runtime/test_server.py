"""The KServe v2 server on loopback, driven by tritonclient.http (binary and JSON) and raw httpx: the
protocol end to end in one file, its catalogue of bad requests included, hence over 500 lines (its limits
are in test_server_limits.py, test_http_head.py and test_attention_limits.py)."""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from exporters.triton_repo import config_pbtxt, input_dims
from gtcompress.preprocess import NumpyGraph, union_graphs
from gtcompress.preprocess.spec import InputSpec
from runtime.batcher import BatchConfig
from runtime.client import fetch_spec, infer_graphs, make_inputs, triton_inputs
from runtime.server import BackgroundServer, ServedModel, ServerLimits, create_app
from runtime.session import GraphSession
from runtime.spec import NUMPY_TO_KSERVE, spec_from_pbtxt

NAMES = {"gt_node": "node", "gt_graph": "graph", "gt_teddy": "teddy"}


@pytest.fixture(scope="module")
def sessions(exported):
    return {name: GraphSession(exported[key].path) for name, key in NAMES.items()}


@pytest.fixture(scope="module")
def server(sessions):
    app = create_app(dict(sessions), BatchConfig(max_delay_ms=5), metrics=True, limits=ServerLimits(max_nodes=5000))
    with BackgroundServer(app) as srv:
        yield srv


@pytest.fixture
def client(server):
    c = triton.InferenceServerClient(server.url)
    yield c
    c.close()


def test_health_metadata_and_triton_compatible_io(client, sessions, exported) -> None:
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "gtcompress" and "binary_tensor_data" in meta["extensions"]
    for name, key in NAMES.items():
        assert client.is_model_ready(name) and client.is_model_ready(name, "1")
        spec = exported[key].spec
        md = client.get_model_metadata(name)
        assert md["name"] == name and md["versions"] == ["1"] and md["platform"] == "onnxruntime_onnx"
        # exactly the inputs/outputs of the Triton repository `gtc export --triton-repo` writes
        want = {n: [NUMPY_TO_KSERVE[d], dims] for n, (d, dims) in input_dims(spec).items()}
        assert {i["name"]: [i["datatype"], i["shape"]] for i in md["inputs"]} == want
        assert [i["name"] for i in md["inputs"]] == spec.inputs
        assert md["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, spec.output.dim]}]
        served = fetch_spec(client, name)
        triton_spec = spec_from_pbtxt(config_pbtxt(name, spec, "onnxruntime_onnx", "KIND_CPU"))
        assert served.with_teddy(None) == InputSpec.from_json(triton_spec) == spec
        assert triton_spec == spec.to_json()  # the JSON form Triton's configuration carries
    assert fetch_spec(client, "gt_teddy").teddy["edges"] == 0.3
    assert not client.is_model_ready("nope")


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("name", list(NAMES))
def test_infer_equals_direct_session_run(client, sessions, exported, name: str, binary: bool) -> None:
    ex = exported[NAMES[name]]
    graphs = ex.graphs(3, seed=11, lo=6)
    expected = sessions[name].run(graphs)
    spec = fetch_spec(client, name)
    got = infer_graphs(client, name, graphs, spec, binary=binary)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # raw graphs (x, edge_index, [edge_attr], batch) — the server pre-processes them itself
    union = union_graphs(graphs)
    raw = {"x": union.x, "edge_index": union.edge_index, "batch": union.batch}
    if union.edge_attr is not None:
        raw["edge_attr"] = union.edge_attr
    res = client.infer(name, triton_inputs(raw, binary), model_version="1")
    out = res.as_numpy("output")
    np.testing.assert_allclose(out, np.concatenate([np.atleast_2d(e) for e in expected]), atol=1e-5)


def test_graphs_carrying_their_own_pe_get_the_sessions_answer(client, sessions, exported) -> None:
    """infer_graphs sent raw graphs to gtc serve and dropped their PE (a PyG Data's random_walk_pe): the
    server answered with its own RWSE, another answer than GraphSession.run gives the same objects."""
    name, ex = "gt_node", exported["node"]
    own, plain = ex.graphs(2, seed=21, lo=6)
    own.pe = {"rwse": np.random.default_rng(2).uniform(0.0, 1.0, (own.num_nodes, 4)).astype(np.float32)}
    expected = sessions[name].run([own, plain])
    assert np.abs(expected[0] - sessions[name].run(dataclasses.replace(own, pe={}))[0]).max() > 1e-3
    got = infer_graphs(client, name, [own, plain])
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_concurrent_requests_get_their_own_answers(server, sessions, exported) -> None:
    name, ex = "gt_node", exported["node"]
    jobs = [ex.graphs(1 + i % 3, seed=100 + i, lo=2, hi=20) for i in range(64)]
    expected = [sessions[name].run(g) for g in jobs]
    spec = sessions[name].spec
    before = server.app.state.models[name].batcher.batches

    def worker(k: int) -> list[bool]:
        c = triton.InferenceServerClient(server.url)
        try:
            oks = []
            for i in range(k, len(jobs), 16):
                got = infer_graphs(c, name, jobs[i], spec, binary=bool(i % 2))
                oks.append(all(np.allclose(a, b, atol=1e-5) for a, b in zip(got, expected[i], strict=True)))
            return oks
        finally:
            c.close()

    with ThreadPoolExecutor(16) as pool:
        results = [ok for oks in pool.map(worker, range(16)) for ok in oks]
    assert len(results) == len(jobs) and all(results)
    calls = server.app.state.models[name].batcher.batches - before
    assert calls < len(jobs)  # requests were merged


def _post(url: str, body: bytes | str, headers: dict | None = None, name: str = "gt_node") -> httpx.Response:
    return httpx.post(f"http://{url}/v2/models/{name}/infer", content=body, headers=headers or {}, timeout=30)


def _json_request(g: NumpyGraph, **override) -> dict:
    tensors = {
        "x": ("INT64", g.x),
        "edge_index": ("INT64", g.edge_index),
        "edge_attr": ("FP32", g.edge_attr),
    }
    inputs = [
        {"name": n, "datatype": d, "shape": list(a.shape), "data": a.ravel().tolist()} for n, (d, a) in tensors.items()
    ]
    req = {"inputs": inputs}
    for fn in override.values():
        fn(req)
    return req


def _set(name: str, **fields):
    def fn(req: dict) -> None:
        t = next(t for t in req["inputs"] if t["name"] == name)
        t.update(fields)

    return fn


def test_bad_requests_get_4xx_and_the_server_stays_ready(server, exported) -> None:
    g = exported["node"].graphs(1, seed=3, lo=5)[0]
    g = NumpyGraph(g.x, np.concatenate([g.edge_index, [[0, 1], [1, 2]]], axis=1), None)
    g = NumpyGraph(g.x, g.edge_index, np.ones((g.num_edges, 2), np.float32))
    n, e = g.num_nodes, g.num_edges
    ok = _json_request(g)
    assert _post(server.url, json.dumps(ok)).status_code == 200
    good_bin = make_inputs([g], exported["node"].spec)
    body, jl = triton._utils._get_inference_request(triton_inputs(good_bin), "", None, 0, False, False, 0, None, None)
    bad_head = json.loads(body[:jl])
    bad_head["inputs"][0]["parameters"]["binary_data_size"] += 8
    bad_head = json.dumps(bad_head).encode()
    big = 6000
    cases = [  # (status, message fragment, body, headers, model)
        (404, "unknown model 'nope'", json.dumps(ok), None, "nope"),
        (400, "request JSON is malformed", "{not json", None, "gt_node"),
        (400, "non-empty 'inputs'", json.dumps({"inputs": []}), None, "gt_node"),
        (
            400,
            "'foo' is not an input",
            json.dumps(
                _json_request(
                    g, a=lambda r: r["inputs"].append({"name": "foo", "datatype": "FP32", "shape": [1], "data": [1.0]})
                )
            ),
            None,
            "gt_node",
        ),
        (
            400,
            "datatype FP32 does not match the model's INT64",
            json.dumps(_json_request(g, a=_set("x", datatype="FP32", data=g.x.astype(float).ravel().tolist()))),
            None,
            "gt_node",
        ),
        (
            400,
            "does not match the model's [-1, 2]",
            json.dumps(_json_request(g, a=_set("x", shape=[n * 2], data=g.x.ravel().tolist()))),
            None,
            "gt_node",
        ),
        (
            400,
            "input 'x': required input is missing",
            json.dumps(_json_request(g, a=lambda r: r["inputs"].pop(0))),
            None,
            "gt_node",
        ),
        (
            400,
            f"out of range for {n} nodes",
            json.dumps(_json_request(g, a=_set("edge_index", data=(g.edge_index + 3).ravel().tolist()))),
            None,
            "gt_node",
        ),
        (
            400,
            "negative node id",
            json.dumps(_json_request(g, a=_set("edge_index", data=(g.edge_index - n).ravel().tolist()))),
            None,
            "gt_node",
        ),
        (
            400,
            "outside [0, 5)",
            json.dumps(_json_request(g, a=_set("x", data=(g.x + 5).ravel().tolist()))),
            None,
            "gt_node",
        ),
        (
            400,
            "input 'edge_attr': non-finite",
            json.dumps(_json_request(g, a=_set("edge_attr", data=[float("nan")] * (2 * e)))).replace("NaN", "NaN"),
            None,
            "gt_node",
        ),
        (
            400,
            "does not match the model's [-1, 2]",
            json.dumps(_json_request(g, a=_set("edge_attr", shape=[e, 1], data=[1.0] * e))),
            None,
            "gt_node",
        ),
        (
            400,
            f"has {e - 1} rows but the graph has {e} edges",
            json.dumps(_json_request(g, a=_set("edge_attr", shape=[e - 1, 2], data=[1.0] * (2 * e - 2)))),
            None,
            "gt_node",
        ),
        (
            400,
            "graph ids must be sorted",
            json.dumps(
                _json_request(
                    g,
                    a=lambda r: r["inputs"].append(
                        {"name": "batch", "datatype": "INT64", "shape": [n], "data": [0] * (n - 1) + [2]}
                    ),
                )
            ),
            None,
            "gt_node",
        ),
        (
            400,
            "does not match the graph sizes",
            json.dumps(
                _json_request(
                    g,
                    a=lambda r: r["inputs"].extend(
                        [
                            {"name": "batch", "datatype": "INT64", "shape": [n], "data": [0] * (n - 1) + [1]},
                            {"name": "node_counts", "datatype": "INT64", "shape": [2], "data": [n - 2, 2]},
                        ]
                    ),
                )
            ),
            None,
            "gt_node",
        ),
        (
            400,
            "has 3 elements but shape needs",
            json.dumps(_json_request(g, a=_set("x", data=[0, 1, 2]))),
            None,
            "gt_node",
        ),
        (
            400,
            "output 'logits' is not an output",
            json.dumps(_json_request(g, a=lambda r: r.update(outputs=[{"name": "logits"}]))),
            None,
            "gt_node",
        ),
        (
            400,
            "a graph needs at least one node",
            json.dumps(
                _json_request(
                    NumpyGraph(np.zeros((0, 2), np.int64), np.zeros((2, 0), np.int64), np.zeros((0, 2), np.float32))
                )
            ),
            None,
            "gt_node",
        ),
        (
            400,
            "binary_data_size",
            bad_head + body[jl:],
            {"Inference-Header-Content-Length": str(len(bad_head))},
            "gt_node",
        ),
        (
            400,
            "Inference-Header-Content-Length is",
            body,
            {"Inference-Header-Content-Length": str(len(body) + 5)},
            "gt_node",
        ),
        (
            400,
            "binary bytes after the declared inputs",
            body + b"\0" * 3,
            {"Inference-Header-Content-Length": str(jl)},
            "gt_node",
        ),
        (400, "unsupported Content-Encoding", json.dumps(ok), {"Content-Encoding": "br"}, "gt_node"),
        (
            400,
            f"request has {big} nodes, above this server's 5000",
            json.dumps(
                {
                    "inputs": [
                        {"name": "x", "datatype": "FP32", "shape": [big, 3], "data": [0.0] * (3 * big)},
                        {"name": "edge_index", "datatype": "INT64", "shape": [2, 0], "data": []},
                    ]
                }
            ),
            None,
            "gt_graph",
        ),
        (404, "has no version '7'", json.dumps(ok), None, "gt_node/versions/7"),
        (  # a lone surrogate escape in the id: orjson could not encode the response, a 500 after the model ran
            400,
            "request 'id' is not valid Unicode (it holds a lone surrogate escape)",
            json.dumps(dict(ok, id="req-\ud800")),
            None,
            "gt_node",
        ),
    ]
    assert len(cases) >= 15
    for status, fragment, body_, headers, name in cases:
        r = _post(server.url, body_, headers, name)
        assert r.status_code == status, (fragment, r.status_code, r.text)
        assert fragment in r.json()["error"], (fragment, r.json())
        assert httpx.get(f"http://{server.url}/v2/health/ready").status_code == 200
    assert httpx.get(f"http://{server.url}/v2/models/gt_node/infer").status_code == 405
    r = _post(server.url, gzip.compress(json.dumps(ok).encode()), {"Content-Encoding": "gzip"})
    assert r.status_code == 200
    with pytest.raises(InferenceServerException, match="out of range"):
        bad = dict(good_bin, edge_index=good_bin["edge_index"] + 50)
        triton.InferenceServerClient(server.url).infer("gt_node", triton_inputs(bad))


def test_metrics_endpoint(server, client, exported) -> None:
    def graphs_run() -> float:  # graphs in the model calls observed so far
        text = httpx.get(f"http://{server.url}/metrics").text
        return float(re.search(r'gtc_batch_graphs_sum\{model="gt_graph"\} (\S+)', text)[1])

    before = graphs_run()
    infer_graphs(client, "gt_graph", exported["graph"].graphs(2), fetch_spec(client, "gt_graph"))
    text = httpx.get(f"http://{server.url}/metrics").text
    assert 'gtc_inference_requests_total{model="gt_graph",outcome="success"}' in text
    assert "gtc_batch_requests_bucket" in text and "gtc_queue_pending" in text
    assert graphs_run() - before == 2.0  # the model calls were observed


def test_no_batching_and_drain_on_shutdown(sessions, exported, monkeypatch) -> None:
    sess = sessions["gt_node"]
    ex = exported["node"]
    jobs = [ex.graphs(1, seed=200 + i)[0] for i in range(12)]
    expected = [sess.run(g)[0] for g in jobs]
    # without batching: one model call per request, answers unchanged
    app = create_app([ServedModel("m", sess, BatchConfig.disabled())])
    with BackgroundServer(app) as srv:
        c = triton.InferenceServerClient(srv.url)
        for g, want in zip(jobs[:4], expected[:4], strict=True):
            np.testing.assert_allclose(infer_graphs(c, "m", g, sess.spec)[0], want, atol=1e-5)
        assert app.state.models["m"].batcher.batches == 4
        assert c.get_model_config("m")["dynamic_batching"] is None
    # with a slow model, requests are still queued when shutdown starts: all must finish
    run_inputs = sess.run_inputs

    def slow(inputs: dict) -> dict:
        time.sleep(0.5)
        return run_inputs(inputs)

    monkeypatch.setattr(sess, "run_inputs", slow)
    # A delay far past the time 12 clients take to queue, even on a loaded CI machine (with 1.5 s the
    # batch fired before the last arrived, once in a full-suite run); shutdown fires the batch at once.
    app = create_app([ServedModel("m", sess, BatchConfig(max_delay_ms=30000))])
    srv = BackgroundServer(app).start()
    results: list = [None] * len(jobs)

    errors: list = []

    def call(i: int) -> None:
        try:
            c = triton.InferenceServerClient(srv.url)
            results[i] = infer_graphs(c, "m", jobs[i], sess.spec)[0]
        except Exception as e:  # said in the assertion below, not lost in a thread
            errors.append(repr(e))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while app.state.models["m"].batcher.pending < len(jobs) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert app.state.models["m"].batcher.pending == len(jobs), errors
    srv.stop()
    for t in threads:
        t.join(10)
    for got, want in zip(results, expected, strict=True):
        assert got is not None
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert not app.state.models["m"].batcher.running


def test_supplied_layout_sizes_are_checked_and_packed_rows_accepted() -> None:
    """``pad_mask`` may have fewer rows than graphs (small graphs packed into shared rows), never more."""
    from runtime.errors import ShapeError
    from runtime.layout_sizes import check_layout_sizes

    n, e, b = 10, 20, 4
    for rows in (1, 3, 4):
        check_layout_sizes({"pad_mask": np.zeros((rows, 5), bool), "node_slot": np.zeros(n, np.int64)}, n, e, b, 5)
    with pytest.raises(ShapeError, match="1 to 4 rows"):
        check_layout_sizes({"pad_mask": np.zeros((5, 5), bool)}, n, e, b, 5)
    with pytest.raises(ShapeError, match="implies 10"):
        check_layout_sizes({"node_slot": np.zeros(9, np.int64)}, n, e, b, 5)


def _tampered(inputs: dict[str, np.ndarray], change: str) -> tuple[dict[str, np.ndarray], str]:
    """``inputs`` (a full pre-processed set) with one layout size made inconsistent, and the 400's message."""
    out = dict(inputs)
    if change == "pad_mask extra column":
        pad = out["pad_mask"]
        out["pad_mask"] = np.concatenate([pad, np.zeros((pad.shape[0], 1), bool)], axis=1)
        return out, (
            f"input 'pad_mask': dimension 1 is {pad.shape[1] + 1} but the largest graph has {pad.shape[1]} nodes"
        )
    if change == "nbr_src_1 extra column":
        src = out["nbr_src_1"]
        out["nbr_src_1"] = np.concatenate([src, src[:, :1]], axis=1)
        return out, (
            f"input 'nbr_edge_1': shape {list(src.shape)} differs from nbr_src_1's {[src.shape[0], src.shape[1] + 1]}:"
            " they index the same slots"
        )
    if change == "nbr_node_0 a row short":
        rows = out["nbr_node_0"].shape[0]
        out["nbr_node_0"] = out["nbr_node_0"][1:]
        return out, f"input 'nbr_src_0': dimension 0 is {rows} but nbr_node_0 has {rows - 1} rows"
    if change == "nbr_inv a row short":
        n = out["nbr_inv"].shape[0]
        out["nbr_inv"] = out["nbr_inv"][1:]
        return out, f"input 'nbr_inv': dimension 0 is {n - 1} but the graph implies {n}"
    assert change == "bucket 0 a row short"
    for what in ("node", "src", "edge", "mask"):
        out[f"nbr_{what}_0"] = out[f"nbr_{what}_0"][1:]
    n = out["nbr_inv"].shape[0]
    rows = sum(out[f"nbr_node_{k}"].shape[0] for k in range(4))
    return out, (
        f"input 'nbr_node_0': the buckets' rows (nbr_node_0, nbr_node_1, nbr_node_2, nbr_node_3) add up to {rows} "
        f"but the graph's {n} nodes imply {n} to {n + 4} (a row per node, and one for each empty bucket)"
    )


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("gt_node", "pad_mask extra column"),
        ("gt_graph", "nbr_src_1 extra column"),
        ("gt_graph", "nbr_node_0 a row short"),
        ("gt_graph", "nbr_inv a row short"),
        ("gt_graph", "bucket 0 a row short"),
    ],
)
def test_supplied_layout_tensors_of_inconsistent_sizes_are_a_400(server, sessions, exported, name, change) -> None:
    """A full input set's layout tensors are rebuilt, so their sizes are all the server checks of them:
    those of the degree-bucketed neighbour lists (``nbr_*_b``, ``nbr_inv``) and ``pad_mask``'s columns were
    not checked at all, so a set that Triton could not answer right got 200 from this server."""
    graphs = exported[NAMES[name]].graphs(3, seed=8, lo=6)
    full = make_inputs(graphs, sessions[name].spec)
    r = _binary_post(server.url, name, full)
    assert r.status_code == 200, r.text
    bad, message = _tampered(full, change)
    r = _binary_post(server.url, name, bad)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == message


def _binary_post(url: str, name: str, inputs: dict[str, np.ndarray]) -> httpx.Response:
    """POST ``inputs`` the way tritonclient sends them (binary tensor data extension)."""
    body, jl = triton._utils._get_inference_request(triton_inputs(inputs), "", None, 0, False, False, 0, None, None)
    return _post(url, body, {"Inference-Header-Content-Length": str(jl)}, name)


def _output(r: httpx.Response) -> np.ndarray:
    jl = r.headers.get("Inference-Header-Content-Length")
    return triton.InferResult.from_response_body(r.content, header_length=None if jl is None else int(jl)).as_numpy(
        "output"
    )


@pytest.mark.parametrize("missing", ["batch", "node_counts", "pe_rwse", "pad_mask"])
def test_an_incomplete_preprocessed_set_is_refused_not_sparsified_twice(server, sessions, exported, missing) -> None:
    """A request that carries any tensor only pre-processing makes (``pe_*``, layout) must carry all of
    them: TEDDY was applied by the client, and running it again on the server changes the answer."""
    name = "gt_teddy"
    graphs = [g for g in exported["teddy"].graphs(10, seed=21, lo=8, hi=14) if g.num_edges >= 8][:3]
    full = make_inputs(graphs, sessions[name].spec, teddy=sessions[name].model.teddy)
    expected = np.concatenate(sessions[name].run(graphs))
    r = _binary_post(server.url, name, full)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(_output(r), expected, atol=1e-5)
    partial = {k: v for k, v in full.items() if k != missing}
    r = _binary_post(server.url, name, partial)
    carried = ", ".join(k for k in partial if k in ("pe_rwse", "node_slot", "pad_mask"))
    assert r.status_code == 400, r.text
    assert r.json()["error"] == (
        f"model 'gt_teddy': incomplete pre-processed request: it carries {carried} but lacks {missing}; send every "
        "model input (as runtime.client.make_inputs builds them) or only the raw graph: x, edge_index, edge_attr, "
        "optionally batch and/or node_counts"
    )


@pytest.mark.parametrize("ids", [("batch",), ("node_counts",), ("batch", "node_counts")])
def test_raw_graphs_with_batch_or_node_counts_are_sparsified_once(server, sessions, exported, ids) -> None:
    name = "gt_teddy"
    graphs = [g for g in exported["teddy"].graphs(10, seed=22, lo=8, hi=14) if g.num_edges >= 8][:3]
    union = union_graphs(graphs)
    raw = {"x": union.x, "edge_index": union.edge_index, "edge_attr": union.edge_attr}
    if "batch" in ids:
        raw["batch"] = union.batch
    if "node_counts" in ids:
        raw["node_counts"] = np.array([g.num_nodes for g in graphs], dtype=np.int64)
    r = _binary_post(server.url, name, raw)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(_output(r), np.concatenate(sessions[name].run(graphs)), atol=1e-5)


def _two_graphs_joined(spec: dict) -> dict[str, np.ndarray]:
    """12 nodes in two graphs of 6 and one edge pair 0 <-> 7 that joins them (the review's example)."""
    rng = np.random.default_rng(0)
    if spec.x.kind == "categorical":
        x = np.stack([rng.integers(0, c, 12) for c in spec.x.cardinalities], axis=1).astype(np.int64)
    else:
        x = rng.standard_normal((12, spec.x.dim)).astype(np.float32)
    inputs = {"x": x, "edge_index": np.array([[0, 7], [7, 0]], dtype=np.int64)}
    if spec.edge_attr:
        inputs["edge_attr"] = np.ones((2, spec.edge_attr.dim), np.float32)
    inputs["batch"] = np.repeat(np.arange(2, dtype=np.int64), 6)
    return inputs


@pytest.mark.parametrize("name", ["gt_node", "gt_graph"])
@pytest.mark.parametrize("form", ["raw", "node_counts", "full"])
def test_an_edge_joining_two_graphs_of_a_request_is_a_400(server, sessions, name, form) -> None:
    spec = sessions[name].spec
    inputs = _two_graphs_joined(spec)
    if form == "node_counts":
        inputs["node_counts"] = np.array([6, 6], dtype=np.int64)
        del inputs["batch"]
    elif form == "full":  # pre-processed: PE given, so nothing on the server would trip over the edge
        inputs["node_counts"] = np.array([6, 6], dtype=np.int64)
        for kind, k in spec.pe.items():
            inputs[f"pe_{kind}"] = np.zeros((12, k), np.float32)
        ea = np.zeros((0, spec.edge_attr.dim), np.float32) if spec.edge_attr else None
        layout = make_inputs([NumpyGraph(inputs["x"][:6], np.zeros((2, 0), np.int64), ea)] * 2, spec, teddy=False)
        inputs.update({k: v for k, v in layout.items() if k not in inputs and k != "edge_attr"})
        inputs = {k: inputs[k] for k in spec.inputs}
    r = _binary_post(server.url, name, inputs)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "input 'edge_index': edge 0 (0 -> 7) joins graph 0 and graph 1"
    assert httpx.get(f"http://{server.url}/v2/health/ready").status_code == 200


def test_node_counts_whose_sum_overflows_are_a_400(server, exported) -> None:
    """Counts that wrap around int64 to the node count must not reach ``np.repeat`` (a 500 before)."""
    g = exported["node"].graphs(1, seed=4, lo=5)[0]
    n = g.num_nodes
    counts = np.array([2**62, 2**62, 2**62, 2**62 + n], dtype=np.int64)
    assert int(counts.sum()) == n  # int64 arithmetic wraps
    raw = {"x": g.x, "edge_index": g.edge_index, "edge_attr": g.edge_attr, "node_counts": counts}
    r = _binary_post(server.url, "gt_node", raw)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == f"input 'node_counts': graph 0 has {2**62} nodes but x has only {n}"


def test_shutdown_does_not_wait_for_company(sessions, exported, monkeypatch) -> None:
    """A batch waiting for more requests (up to max_delay_ms) fires as soon as shutdown begins.

    It used to wait for requests that could no longer come: shutdown took the whole delay, and with a
    delay past uvicorn's graceful timeout the request was cancelled (HTTP 500, a traceback) unanswered."""
    sess = sessions["gt_node"]
    jobs = exported["node"].graphs(2, seed=300)
    expected = [sess.run(g)[0] for g in jobs]
    run_inputs = sess.run_inputs

    def slow(inputs: dict) -> dict:  # the first request is still running when the second arrives
        time.sleep(0.3)
        return run_inputs(inputs)

    monkeypatch.setattr(sess, "run_inputs", slow)
    app = create_app([ServedModel("m", sess, BatchConfig(max_delay_ms=60_000))], warmup=False)
    srv = BackgroundServer(app).start()
    batcher = app.state.models["m"].batcher
    results: list = [None, None]
    errors: list = []

    def call(i: int) -> None:
        try:
            c = triton.InferenceServerClient(srv.url, network_timeout=120)
            results[i] = infer_graphs(c, "m", jobs[i], sess.spec)[0]
        except Exception as e:  # reported by the assertions below
            errors.append(e)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
    try:
        for i, t in enumerate(threads):
            t.start()
            deadline = time.monotonic() + 20
            while batcher.pending < i + 1 and time.monotonic() < deadline:
                time.sleep(0.005)
        threads[0].join(20)
        # two were in flight at once, so the second now waits for a companion (up to a minute)
        assert results[0] is not None and batcher.pending == 1 and batcher.batches == 1
    finally:
        srv.stop()  # graceful timeout 10 s: far below the batch delay
    threads[1].join(20)
    assert errors == []
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert batcher.batches == 2


def test_an_empty_outputs_list_gets_every_output_as_triton_answers_it(server, sessions, exported) -> None:
    """``"outputs": []`` got 200 with no outputs, a request answered with nothing. KServe v2 returns every
    output when none is named; Triton reads an empty list so (InferenceRequest::Normalize), and tritonclient
    sends ``outputs=[]`` as no list at all: the server answers it as Triton does, with every output."""
    g = exported["node"].graphs(1, seed=8, lo=5)[0]
    r = _post(server.url, json.dumps(_json_request(g, a=lambda req: req.update(outputs=[]))))
    assert r.status_code == 200, r.text
    (out,) = r.json()["outputs"]
    assert out["name"] == "output"
    got = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
    np.testing.assert_allclose(got, sessions["gt_node"].run(g)[0], atol=1e-5)
