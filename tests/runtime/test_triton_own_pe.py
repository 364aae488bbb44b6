"""The python Triton variant takes a graph's own positional encodings (its optional ``pe_<kind>``
inputs) and answers with them, as ``GraphSession.run`` and ``gtc serve`` do: the model class without
a server, and the client's request for it. Through a real ``tritonserver``: test_tritonserver.py."""

from __future__ import annotations

import numpy as np
import pytest

from exporters.triton_repo import write_model_repository
from gtcompress.preprocess import NumpyGraph, union_graphs
from gtcompress.preprocess.pe import PE_GRAPH_WORK, laplacian_pe
from runtime.client import raw_request
from runtime.session import GraphSession
from runtime.triton_python import Failure, GraphBatchModel
from tests.runtime.conftest import python_request


@pytest.fixture(scope="module")
def repos(exported, tmp_path_factory):
    """Python-variant repositories of the ``node`` (RWSE), ``graph`` (LapPE) and ``teddy`` models."""
    root = tmp_path_factory.mktemp("own-pe-repo")
    return {
        key: write_model_repository(root, f"gt_{key}", exported[key].path, exported[key].spec, backend="python")
        for key in ("node", "graph", "teddy")
    }


def own_pe(spec, g: NumpyGraph, seed: int = 0) -> dict[str, np.ndarray]:
    """An encoding of ``g`` that the model would not compute itself: LapPE with every eigenvector's sign
    flipped (as valid as ours: eigenvectors have no sign), or a RWSE-like table of values in (0, 1)."""
    rng = np.random.default_rng(seed)
    ptr = np.array([0, g.num_nodes], dtype=np.int64)
    return {
        kind: -laplacian_pe(g.edge_index, ptr, k) if kind == "lap" else rng.random((g.num_nodes, k), dtype=np.float32)
        for kind, k in spec.pe.items()
    }


def with_pe(g: NumpyGraph, pe: dict[str, np.ndarray]) -> NumpyGraph:
    return NumpyGraph(g.x, g.edge_index, g.edge_attr, g.batch, pe, g.graphs)


def request(g: NumpyGraph, batch: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``g`` as ``execute`` receives it, its own encodings as ``pe_<kind> [1, N, k]``."""
    return {**python_request(g, batch), **{f"pe_{kind}": v[None] for kind, v in g.pe.items()}}


@pytest.mark.parametrize("key", ["graph", "node"])
def test_a_requests_own_pe_is_answered_with_as_graph_session_answers(config, repos, exported, key) -> None:
    """The python variant computed every encoding from the edges, so the same graph and encoding got
    another answer from Triton than from GraphSession.run and gtc serve (LapPE's signs are arbitrary)."""
    spec = exported[key].spec
    model = GraphBatchModel(repos[key], 1, config(repos[key]))
    sess = GraphSession(exported[key].path)
    graphs = exported[key].graphs(4, seed=21, lo=5, hi=15)
    own = [with_pe(g, own_pe(spec, g, seed=i)) for i, g in enumerate(graphs)]
    union = union_graphs(own[2:])
    # one execute: a graph with its own PE, one without, and a union carrying its graphs' PE (Triton's batcher
    # does not put requests with different inputs together, README; a direct caller may)
    outs = model.answer([request(own[0]), python_request(graphs[1]), request(union, union.batch)])
    assert model.calls == 1
    assert not any(isinstance(o, Failure) for o in outs), outs
    np.testing.assert_allclose(outs[0][0], sess.run(own[0])[0].reshape(outs[0][0].shape), rtol=0, atol=1e-6)
    np.testing.assert_allclose(outs[1][0], sess.run(graphs[1])[0].reshape(outs[1][0].shape), rtol=0, atol=1e-6)
    want = np.concatenate([o.reshape(-1, spec.output.dim) for o in sess.run(own[2:])])
    np.testing.assert_allclose(outs[2][0], want, rtol=0, atol=1e-6)
    recomputed = sess.run(graphs[0])[0].reshape(outs[0][0].shape)
    assert np.abs(outs[0][0] - recomputed).max() > 1e-4  # 100x the tolerance: the recomputed PE answers otherwise


BAD_PE = {
    "rows": lambda pe: pe[:-1],
    "nan": lambda pe: np.where(np.arange(pe.size).reshape(pe.shape) == 1, np.nan, pe).astype(np.float32),
    "width": lambda pe: np.zeros((pe.shape[0], pe.shape[1] + 1), np.float32),
    "float64": lambda pe: pe.astype(np.float64),
}


@pytest.mark.parametrize("case", list(BAD_PE))
def test_a_bad_own_pe_gets_the_error_gtc_serve_gives(config, repos, exported, case) -> None:
    """Wrong rows, width, dtype or a NaN: the same 400 text as gtc serve gives for that encoding in a
    pre-processed request, and the other requests of the execute are answered."""
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    from runtime.client import make_inputs, triton_inputs
    from runtime.server import BackgroundServer, create_app

    spec = exported["graph"].spec
    sess = GraphSession(exported["graph"].path)
    g, other = exported["graph"].graphs(2, seed=22, lo=6, hi=12)
    bad = BAD_PE[case](own_pe(spec, g)["lap"])
    with BackgroundServer(create_app({"gt_graph": sess})) as ours:
        client = triton.InferenceServerClient(ours.url)
        with pytest.raises(InferenceServerException) as err:
            client.infer("gt_graph", triton_inputs({**make_inputs(g, spec), "pe_lap": bad}))
        client.close()
    assert err.value.status() == "400"
    model = GraphBatchModel(repos["graph"], 1, config(repos["graph"]))
    refused, answered = model.answer([{**python_request(g), "pe_lap": bad[None]}, python_request(other)])
    assert refused == Failure(err.value.message(), invalid=True)
    assert refused.message.startswith("input 'pe_lap': ")
    np.testing.assert_allclose(answered[0], sess.run(other)[0][None], rtol=0, atol=1e-6)


def test_teddy_recomputes_an_own_pe_and_charges_its_work(config, repos, exported) -> None:
    """A TEDDY model computes its encodings again on the sparsified graph (GraphSession.run does), so a
    request's own ones are replaced, and their work is charged: counted as carried, a request with a
    token pe_rwse had its RWSE computed past gtcompress_max_pe_work."""
    spec = exported["teddy"].spec
    g = exported["teddy"].graphs(1, seed=6, lo=10, hi=11)[0]
    own = with_pe(g, own_pe(spec, g))
    sess = GraphSession(exported["teddy"].path)
    model = GraphBatchModel(repos["teddy"], 1, config(repos["teddy"]))
    (out,) = model.answer([request(own)])
    np.testing.assert_allclose(out[0], sess.run(own)[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(out[0], sess.run(g)[0], rtol=0, atol=1e-6)  # TEDDY's recompute_pe: every kind
    need = 3 * 10**3 + PE_GRAPH_WORK["rwse"]  # RWSE k = 4 of one 10-node graph
    strict = GraphBatchModel(repos["teddy"], 1, config(repos["teddy"], gtcompress_max_pe_work=str(int(need) - 1)))
    (refused,) = strict.answer([request(own)])
    assert isinstance(refused, Failure), "answered: its own pe_rwse was counted as free, then computed again"
    assert refused == Failure(
        f"input 'x': computing pe_rwse for this request's 1 graph(s) (the largest, graph 0, has 10 nodes) takes "
        f"{need:.4g} steps of work, above this server's max_pe_work {need - 1:.4g}; send fewer or smaller graphs, "
        "or raise the model's gtcompress_max_pe_work parameter in its config.pbtxt",
        invalid=True,
    )  # not "send pe_rwse": TEDDY would compute it again


def test_a_refusal_for_pe_work_suggests_the_graphs_own_encoding(config, repos, exported) -> None:
    """Without TEDDY, sending the graphs' own encoding is a way past gtcompress_max_pe_work, which the
    refusal names now that the python variant takes it; a request carrying it is not charged."""
    g = exported["node"].graphs(1, seed=6, lo=10, hi=11)[0]
    need = 3 * 10**3 + PE_GRAPH_WORK["rwse"]
    root = repos["node"]
    model = GraphBatchModel(root, 1, config(root, gtcompress_max_pe_work=str(int(need) - 1)))
    own = with_pe(g, own_pe(exported["node"].spec, g))
    refused, answered = model.answer([python_request(g), request(own)])
    assert isinstance(refused, Failure) and refused.invalid
    assert refused.message.endswith(
        "send fewer or smaller graphs, the graphs' own pe_rwse with them, or raise the model's "
        "gtcompress_max_pe_work parameter in its config.pbtxt"
    )
    np.testing.assert_allclose(answered[0], GraphSession(exported["node"].path).run(own)[0], rtol=0, atol=1e-6)


def test_raw_request_sends_the_kinds_the_model_takes_computing_them_for_graphs_without(exported) -> None:
    """One request is one union, so a kind some graphs carry is computed for the others (as
    GraphSession.run does); a kind no graph carries is left to the server, and without ``pe`` none is sent."""
    spec = exported["graph"].spec
    graphs = exported["graph"].graphs(3, seed=23)
    own = with_pe(graphs[1], own_pe(spec, graphs[1]))
    inputs, nodes, counts = raw_request([graphs[0], own, graphs[2]], spec, pe=["lap"])
    assert list(inputs) == ["x", "edge_index", "batch", "pe_lap"] and counts == [1, 1, 1]
    parts = np.split(inputs["pe_lap"], np.cumsum(nodes)[:-1])
    np.testing.assert_array_equal(parts[1], own.pe["lap"])
    for i in (0, 2):
        ptr = np.array([0, nodes[i]], dtype=np.int64)
        np.testing.assert_allclose(parts[i], laplacian_pe(graphs[i].edge_index, ptr, 2), rtol=0, atol=1e-6)
    assert "pe_lap" not in raw_request(graphs, spec, pe=["lap"])[0]
    assert "pe_lap" not in raw_request([own], spec)[0]
    one = NumpyGraph(own.x, own.edge_index, None, None, {"pe": own.pe["lap"]})  # one array: the model's one kind
    np.testing.assert_array_equal(raw_request([one], spec, pe=["lap"])[0]["pe_lap"], own.pe["lap"])
