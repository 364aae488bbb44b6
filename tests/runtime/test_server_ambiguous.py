"""A TEDDY model whose inputs are all raw ones (scatter lowering, no PE): its pre-processed input set
(TEDDY applied, ``batch`` and ``node_counts``) looks exactly like a raw graph sent with both ``batch``
and ``node_counts``. The server took such a request as pre-processed and skipped TEDDY, while the
Python-backend Triton model (always raw) applied it: one request, two answers (0.082 apart). Now the
request says which it is (request parameter ``gtcompress_preprocessed``), or gets a 400."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
import torch
import tritonclient.http as triton

from exporters.onnx import export_onnx
from gtcompress.data.base import FeatureSpec
from gtcompress.models import ModelConfig, build_model
from gtcompress.preprocess import NumpyGraph, union_graphs
from runtime.batcher import BatchConfig
from runtime.client import infer_graphs, make_inputs
from runtime.protocol import PREPROCESSED_PARAMETER
from runtime.server import BackgroundServer, create_app
from runtime.session import GraphSession


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> GraphSession:
    torch.manual_seed(0)
    cfg = ModelConfig(
        arch="gt", node_features=FeatureSpec("float", 3), out_dim=2, hidden=16, heads=2, num_layers=1, task_level="node"
    )
    path = Path(tmp_path_factory.mktemp("ambiguous")) / "m.onnx"
    export_onnx(build_model(cfg).eval(), path, "scatter", verify_batches=1)
    proto = onnx.load(str(path))
    proto.metadata_props.add(key="teddy", value=json.dumps({"edges": 0.5, "per_graph": True}))
    onnx.save(proto, str(path))
    s = GraphSession(path)
    assert set(s.spec.inputs) == {"x", "edge_index", "batch", "node_counts"}  # nothing marks pre-processing
    return s


@pytest.fixture(scope="module")
def server(session: GraphSession):
    with BackgroundServer(create_app({"m": session}, BatchConfig(max_delay_ms=1))) as srv:
        yield srv


@pytest.fixture(scope="module")
def graphs() -> list[NumpyGraph]:
    rng = np.random.default_rng(0)
    return [
        NumpyGraph(x=rng.standard_normal((6, 3)).astype(np.float32), edge_index=rng.integers(0, 6, (2, 14)))
        for _ in range(2)
    ]


def _post(url: str, inputs: dict[str, np.ndarray], parameters: dict | None = None) -> httpx.Response:
    body: dict = {
        "inputs": [
            {"name": k, "shape": list(v.shape), "datatype": "FP32" if k == "x" else "INT64", "data": v.ravel().tolist()}
            for k, v in inputs.items()
        ]
    }
    if parameters is not None:
        body["parameters"] = parameters
    return httpx.post(f"http://{url}/v2/models/m/infer", json=body, timeout=30)


def _out(r: httpx.Response) -> np.ndarray:
    assert r.status_code == 200, r.text
    return np.array(r.json()["outputs"][0]["data"], dtype=np.float32).reshape(-1, 2)


def _raw(graphs: list[NumpyGraph]) -> dict[str, np.ndarray]:
    u = union_graphs(graphs)
    return {"x": u.x, "edge_index": u.edge_index, "batch": u.batch, "node_counts": np.array([6, 6])}


def test_a_request_that_could_be_either_gets_a_400_not_a_guess(server, graphs) -> None:
    r = _post(server.url, _raw(graphs))
    assert r.status_code == 400
    assert r.json()["error"] == (
        "model 'm' runs TEDDY on raw graphs, and a request with both batch and node_counts could be a raw graph or "
        "a TEDDY-sparsified input set: send batch or node_counts alone for a raw graph, or say which with the "
        f"request parameter '{PREPROCESSED_PARAMETER}' (true or false)"
    )


def test_the_request_parameter_says_which_it_is(server, session, graphs) -> None:
    want = np.concatenate(session.run(graphs))  # TEDDY applied once
    np.testing.assert_allclose(_out(_post(server.url, _raw(graphs), {PREPROCESSED_PARAMETER: False})), want, atol=1e-5)
    full = make_inputs(graphs, session.spec, teddy=session.model.teddy)  # TEDDY applied here, by the client
    assert full["edge_index"].shape[1] < sum(g.num_edges for g in graphs)
    got = _out(_post(server.url, full, {PREPROCESSED_PARAMETER: True}))
    np.testing.assert_allclose(got, want, atol=1e-5)
    for one in ("batch", "node_counts"):  # unambiguous without the parameter: raw
        raw = {k: v for k, v in _raw(graphs).items() if k != one}
        np.testing.assert_allclose(_out(_post(server.url, raw)), want, atol=1e-5)


def test_a_wrong_or_contradicted_parameter_is_named(server, graphs) -> None:
    r = _post(server.url, _raw(graphs), {PREPROCESSED_PARAMETER: "yes"})
    assert (r.status_code, r.json()["error"]) == (
        400,
        f"request parameter '{PREPROCESSED_PARAMETER}' must be true or false, got \"yes\"",
    )
    raw = {k: v for k, v in _raw(graphs).items() if k != "node_counts"}
    r = _post(server.url, raw, {PREPROCESSED_PARAMETER: True})
    assert (r.status_code, r.json()["error"]) == (
        400,
        f"model 'm': the request says '{PREPROCESSED_PARAMETER}': true but lacks node_counts; a pre-processed "
        "request carries every model input",
    )


@pytest.mark.parametrize("preprocess", [None, True])
def test_infer_graphs_says_what_it_sends(server, session, graphs, preprocess: bool | None) -> None:
    c = triton.InferenceServerClient(server.url)
    try:
        got = infer_graphs(c, "m", graphs, preprocess=preprocess)
    finally:
        c.close()
    for g, w in zip(got, session.run(graphs), strict=True):
        np.testing.assert_allclose(g, w, atol=1e-5)
