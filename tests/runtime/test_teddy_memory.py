"""A TEDDY model's call holds the edges TEDDY keeps, not the edges sent (:mod:`runtime.call_memory`), in
``gtc serve``, the Triton python model and ``gtc profile``'s counts alike.

The ``teddy`` model (conftest: a dense GT with edge features, 224 B an edge, 1152 B a node, TEDDY dropping
30 % of each graph's edges) takes a graph of 100 nodes and 20,000 edges: 4.4 MiB of edges and nodes as
sent, 3.1 MiB as kept (14,060), and 0.7 MiB of cells. Counted on the edges sent, it was refused at 4 MiB
though its call holds 3.9."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.call_memory import TEDDY_EDGE_BYTES
from runtime.errors import GraphTooLargeError
from runtime.protocol import InferRequest
from runtime.served import ServedModel, ServerLimits, request_graph
from runtime.session import GraphSession
from runtime.spec import NUMPY_TO_KSERVE
from tests.runtime.conftest import python_request


def _graph(nodes: int, edges: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x": np.stack([rng.integers(0, 5, nodes), rng.integers(0, 3, nodes)], 1).astype(np.int64),
        "edge_index": rng.integers(0, nodes, (2, edges)).astype(np.int64),
        "edge_attr": rng.normal(size=(edges, 2)).astype(np.float32),
    }


def _request(nodes: int, edges: int) -> InferRequest:
    return InferRequest(_graph(nodes, edges), {"x": "INT64", "edge_index": "INT64", "edge_attr": "FP32"})


@pytest.fixture(scope="module")
def served(exported) -> ServedModel:
    m = ServedModel("gt_teddy", GraphSession(exported["teddy"].path))
    assert (m.edge_cost.edge, m.edge_cost.node, m.batch.attention_cell_bytes) == (224, 1152, 78)
    return m


def test_the_call_is_held_to_the_limit_on_the_edges_teddy_keeps(served: ServedModel) -> None:
    g, _, _ = request_graph(_request(100, 20_000), served, ServerLimits(max_attention_mib=4))
    assert g.num_edges == 14_060  # answered: before, "this request's 20,000 edges and 100 nodes take 4.38 MiB"
    with pytest.raises(GraphTooLargeError) as e:
        request_graph(_request(100, 20_000), served, ServerLimits(max_attention_mib=3))
    assert str(e.value) == (
        "input 'edge_index': model 'gt_teddy' holds about 224 B per edge and 1152 B per node in one call (its edge "
        "bias holds a row per edge, its layers' activations a row per node), so this request's 14,060 edges (what "
        "TEDDY kept of the 20,000 sent) and 100 nodes take 3.11 MiB, above this server's 3 MiB (send fewer edges or "
        "smaller graphs)"
    )


def test_teddys_own_memory_is_held_to_the_limit_before_it_runs(served: ServedModel) -> None:
    """TEDDY scores every edge sent (about 124 B an edge measured): 40,000 edges take 4.88 MiB before any drop."""
    assert TEDDY_EDGE_BYTES == 128
    with pytest.raises(GraphTooLargeError) as e:
        request_graph(_request(100, 40_000), served, ServerLimits(max_attention_mib=4), teddy=False)
    assert str(e.value) == (
        "input 'edge_index': model 'gt_teddy' sparsifies each request with TEDDY before its call, which holds about "
        "128 B per edge sent, so this request's 40,000 edges take 4.88 MiB, above this server's 4 MiB (send fewer "
        "edges)"
    )


def test_a_request_carrying_teddys_result_is_held_to_the_limit_on_its_edges(served: ServedModel, exported) -> None:
    """A pre-processed request (every input, TEDDY already applied by the client) is not sparsified again:
    its edges are what the call holds, counted as they come."""
    from gtcompress.preprocess import NumpyGraph
    from gtcompress.preprocess.inputs import build_inputs

    raw = _graph(100, 20_000)
    spec = served.session.spec
    inputs = build_inputs(NumpyGraph(raw["x"], raw["edge_index"], raw["edge_attr"]), spec)
    types = {k: NUMPY_TO_KSERVE[v.dtype.name] for k, v in inputs.items()}
    with pytest.raises(GraphTooLargeError, match=r"so this request's 20,000 edges and 100 nodes take 4\.38 MiB"):
        request_graph(InferRequest(inputs, types), served, ServerLimits(max_attention_mib=4))


def test_gtc_serve_answers_what_teddy_brings_within_the_limit(served: ServedModel, exported) -> None:
    import httpx

    from runtime.server import BackgroundServer, create_app

    graph = _graph(100, 20_000)
    body = {
        "inputs": [
            {"name": k, "datatype": t, "shape": list(graph[k].shape), "data": graph[k].ravel().tolist()}
            for k, t in (("x", "INT64"), ("edge_index", "INT64"), ("edge_attr", "FP32"))
        ]
    }
    answers = {}
    for limit in (3, 4, 100):
        app = create_app([ServedModel("m", GraphSession(exported["teddy"].path))],
                         limits=ServerLimits(max_attention_mib=limit), warmup=False)  # fmt: skip
        with BackgroundServer(app) as srv:
            r = httpx.post(f"http://{srv.url}/v2/models/m/infer", json=body, timeout=60)
        answers[limit] = r.status_code, r.json()
    assert answers[4][0] == 200 and answers[4] == answers[100]
    assert answers[3][0] == 400  # refused after TEDDY, on the edges it kept
    assert answers[3][1]["error"].startswith("input 'edge_index': model 'm' holds about 224 B per edge")
    assert "this request's 14,060 edges (what TEDDY kept of the 20,000 sent)" in answers[3][1]["error"]


def test_the_triton_python_model_answers_what_teddy_brings_within_the_limit(config, node_repo) -> None:
    from gtcompress.preprocess import NumpyGraph
    from runtime.triton_python import Failure, GraphBatchModel

    graph = _graph(100, 20_000)
    g = NumpyGraph(graph["x"], graph["edge_index"], graph["edge_attr"])
    limited = GraphBatchModel(node_repo, 1, config(node_repo, gtcompress_max_attention_mib="4"))
    (out,) = limited.answer([python_request(g)])
    assert isinstance(out, np.ndarray), out
    (free,) = GraphBatchModel(node_repo, 1, config(node_repo)).answer([python_request(g)])
    np.testing.assert_array_equal(out, free)
    (refused,) = GraphBatchModel(node_repo, 1, config(node_repo, gtcompress_max_attention_mib="3")).answer(
        [python_request(g)]
    )
    assert isinstance(refused, Failure) and refused.invalid
    assert "this request's 14,060 edges (what TEDDY kept of the 20,000 sent)" in refused.message


def test_gtc_profile_counts_a_teddy_models_configurations_as_the_server_does(exported) -> None:
    """Two random graphs of 100 nodes and 10,000 edges each: 4.5 MiB of edges and nodes as sent, 3.2 as kept,
    and 1.5 MiB of cells. The same model without TEDDY is refused at 5 MiB; with it, it is profiled, as the
    server answers such a request; past the limit the refusal names the edges kept, and TEDDY's own work is
    held to it too."""
    from runtime.errors import SessionError
    from runtime.profile_cost import check_costs

    teddy, plain = str(exported["teddy"].path), str(exported["node"].path)
    check_costs([teddy], [(100, 2)], 100.0, 0, max_attention_mib=5)
    with pytest.raises(SessionError, match=r"needs an estimated 4\.5 MiB of memory for its 20,000 edges and 200 nodes"):
        check_costs([plain], [(100, 2)], 100.0, 0, max_attention_mib=5)
    with pytest.raises(SessionError) as e:
        check_costs([teddy], [(100, 2)], 100.0, 0, max_attention_mib=3)
    assert str(e.value) == (
        f"profile: {teddy} at graph size 100 and batch size 2 needs an estimated 3.2 MiB of memory for its 14,059 "
        "edges (what TEDDY kept of the 20,000 sent) and 200 nodes (224 B per edge and 1152 B per node: its edge bias "
        "holds a row per edge, its layers' activations a row per node), above the limit of 3 MiB; choose smaller "
        "--sizes or --batch-sizes, or raise --max-attention-mib"
    )
    with pytest.raises(SessionError) as e:
        check_costs([teddy], [(100, 4)], 200.0, 0, max_attention_mib=4)
    assert str(e.value) == (
        f"profile: {teddy} at graph size 100 and batch size 4 needs an estimated 9.8 MiB of memory for TEDDY to score "
        "its 80,000 edges (128 B per edge), above the limit of 4 MiB; choose smaller --sizes or --batch-sizes, or "
        "raise --max-attention-mib"
    )
