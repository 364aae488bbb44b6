"""A Graphormer's shortest-path distances cost time cubic in its largest graph: ``max_spd`` MatMuls of
each padded ``[L, L]`` adjacency, inside the model, on every call. Their memory was bounded
(``max_attention_mib``) but not their time: a 1-head Graphormer at the default limits took about 27 s
a request. ``ServerLimits.max_pe_work`` now counts them with the positional encodings, for raw and
pre-processed requests alike (the model computes them whatever the request carries)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gtcompress.preprocess import NumpyGraph
from runtime.client import make_inputs
from runtime.errors import GraphTooLargeError
from runtime.protocol import InferRequest
from runtime.request_cost import distance_hops
from runtime.served import ServedModel, ServerLimits, request_graph
from runtime.session import GraphSession
from runtime.spec import NUMPY_TO_KSERVE

#: a 40-node graph's distances: 8 hops x 40^3 = 512,000 steps; 39 nodes: 474,552
LIMIT = 500_000


def _graphormer(tmp_path: Path, heads: int, pe: dict[str, int] | None = None) -> GraphSession:
    import torch

    from exporters.onnx import export_onnx
    from gtcompress.data.base import FeatureSpec
    from gtcompress.models import LayerSpec, ModelConfig, build_model

    torch.manual_seed(0)
    cfg = ModelConfig(
        arch="graphormer",
        node_features=FeatureSpec("float", 3),
        out_dim=2,
        hidden=16,
        heads=2,
        pe=pe or {},
        layers=[LayerSpec(heads=heads, ffn_dim=8)],
    )
    path = tmp_path / f"graphormer-{heads}-{'-'.join(pe or {})}.onnx"
    export_onnx(build_model(cfg).eval(), path, "dense", verify=False)
    return GraphSession(path)


def _ring(n: int) -> NumpyGraph:
    s = np.arange(n, dtype=np.int64)
    ei = np.stack([np.concatenate([s, (s + 1) % n]), np.concatenate([(s + 1) % n, s])])
    x = np.random.default_rng(n).normal(size=(n, 3)).astype(np.float32)
    return NumpyGraph(x=x, edge_index=ei, edge_attr=None, batch=None, pe={})


def _request(tensors: dict[str, np.ndarray]) -> InferRequest:
    return InferRequest(tensors, {k: NUMPY_TO_KSERVE[str(a.dtype)] for k, a in tensors.items()})


def _raw(g: NumpyGraph) -> InferRequest:
    return _request({"x": g.x, "edge_index": g.edge_index})


@pytest.fixture(scope="module")
def graphormer(tmp_path_factory: pytest.TempPathFactory) -> ServedModel:
    return ServedModel("g", _graphormer(tmp_path_factory.mktemp("spd"), 1))


def test_a_graphormer_counts_its_distance_hops_and_a_pruned_one_none(tmp_path: Path, graphormer) -> None:
    assert distance_hops(graphormer.session) == 8
    assert distance_hops(_graphormer(tmp_path, 0)) == 0  # no attention left: no distances computed


def test_a_raw_request_past_the_limit_is_refused_before_the_model_runs(graphormer) -> None:
    limits = ServerLimits(max_pe_work=LIMIT)
    g, graphs, full = request_graph(_raw(_ring(39)), graphormer, limits)
    assert (g.num_nodes, graphs, full) == (39, 1, False)
    with pytest.raises(GraphTooLargeError) as e:
        request_graph(_raw(_ring(40)), graphormer, limits)
    assert str(e.value) == (
        "input 'x': model 'g' computes its shortest-path distances inside the model, 8 products of 1 padded "
        "40x40 matrices for this request's 1 graph(s) (the largest, graph 0), 5.12e+05 steps of work, above "
        "this server's max_pe_work 5e+05; send fewer or smaller graphs, or start the server with a larger "
        "--max-pe-work"
    )


def test_a_preprocessed_request_is_charged_too(graphormer) -> None:
    """Sending every model input spares the server the encodings, not the model its distances."""
    tensors = make_inputs(_ring(40), graphormer.session.spec)
    with pytest.raises(GraphTooLargeError, match="8 products of 1 padded 40x40 matrices"):
        request_graph(_request(tensors), graphormer, ServerLimits(max_pe_work=LIMIT))
    assert request_graph(_request(tensors), graphormer, ServerLimits())[2] is True


def test_every_graph_is_padded_to_the_largest(graphormer) -> None:
    """Three graphs of 30, 10 and 5 nodes: three rows of 30^3 per hop (648,000), not 30^3 + 10^3 + 5^3."""
    graphs = [_ring(30), _ring(10), _ring(5)]
    tensors = make_inputs(graphs, graphormer.session.spec)
    raw = {"x": tensors["x"], "edge_index": tensors["edge_index"], "batch": tensors["batch"]}
    with pytest.raises(GraphTooLargeError, match=r"8 products of 3 padded 30x30 matrices .* 6.48e\+05 steps"):
        request_graph(_request(raw), graphormer, ServerLimits(max_pe_work=LIMIT))


def test_the_triton_python_model_names_its_parameter(graphormer) -> None:
    with pytest.raises(GraphTooLargeError, match="raise the model's gtcompress_max_pe_work parameter in its"):
        request_graph(_raw(_ring(40)), graphormer, ServerLimits(max_pe_work=LIMIT), raw_only=True)


def test_encodings_and_distances_are_counted_together(tmp_path: Path) -> None:
    """With LapPE the request's work is the encodings' plus the distances'; where the distances alone fit,
    sending the encodings pre-processed is the way through, and the message says so."""
    model = ServedModel("g", _graphormer(tmp_path, 1, {"lap": 2}))
    g = _ring(30)  # distances 216,000; LapPE 27,000 + its per-graph cost
    with pytest.raises(GraphTooLargeError) as e:
        request_graph(_raw(g), model, ServerLimits(max_pe_work=230_000))
    msg = str(e.value)
    assert "computing pe_lap for this request's 1 graph(s) (the largest, graph 0, has 30 nodes) takes" in msg
    assert "(and the model's shortest-path distances 2.16e+05 more), above this server's max_pe_work 2.3e+05" in msg
    assert msg.endswith(
        "or pe_lap computed by the client with every model input (a pre-processed request, as "
        "runtime.client.make_inputs builds it)"
    )
    tensors = make_inputs(g, model.session.spec)
    assert request_graph(_request(tensors), model, ServerLimits(max_pe_work=230_000))[2] is True
