"""The Python-backend model's logic without a Triton server: validation, packing, failure isolation."""

from __future__ import annotations

import json

import numpy as np
import pytest

import runtime.triton_python as tp
from exporters.triton_repo import PythonModelOptions, write_model_repository
from runtime.errors import SessionError
from runtime.session import GraphSession
from runtime.triton_python import Failure, GraphBatchModel


@pytest.fixture(scope="module")
def config(model_config_pb2):
    """``config(root, **parameters)``: the model configuration as Triton hands it to ``initialize``
    (JSON, from the repository's ``config.pbtxt``), with parameters overridden."""
    from google.protobuf import json_format, text_format

    def make(root, **params: str) -> dict:
        text = (root / "config.pbtxt").read_text()
        cfg = json.loads(
            json_format.MessageToJson(
                text_format.Parse(text, model_config_pb2.ModelConfig()), preserving_proto_field_name=True
            )
        )
        cfg.setdefault("parameters", {}).update({k: {"string_value": v} for k, v in params.items()})
        return cfg

    return make


def _request(g, batch: np.ndarray | None = None) -> dict[str, np.ndarray]:
    r = {"x": g.x[None], "edge_index": g.edge_index[None]}
    if g.edge_attr is not None:
        r["edge_attr"] = g.edge_attr[None]
    if batch is not None:
        r["batch"] = batch[None]
    return r


@pytest.fixture(scope="module")
def node_repo(exported, tmp_path_factory):
    repo = tmp_path_factory.mktemp("py-repo")
    opts = PythonModelOptions(max_batch_size=8)
    return write_model_repository(repo, "gt_node", exported["teddy"].path, exported["teddy"].spec, options=opts)


def test_answers_match_graph_session_and_a_bad_request_fails_alone(config, node_repo, exported) -> None:
    model = GraphBatchModel(node_repo, 1, config(node_repo))
    sess = GraphSession(exported["teddy"].path)
    graphs = exported["teddy"].graphs(4, seed=3)
    bad = _request(graphs[1])
    bad["edge_index"] = bad["edge_index"].copy()
    bad["edge_index"][0, 0, 0] = graphs[1].num_nodes
    union = graphs[2:]
    from gtcompress.preprocess import union_graphs

    merged = union_graphs(union)
    outs = model.answer([_request(graphs[0]), bad, _request(merged, merged.batch)])
    assert model.calls == 1  # the two valid requests ran as one union
    np.testing.assert_allclose(outs[0], sess.run(graphs[0])[0][None], atol=1e-6)
    assert isinstance(outs[1], Failure) and outs[1].invalid
    assert outs[1].message.startswith("input 'edge_index': ")
    want = np.concatenate(sess.run(union))[None]
    np.testing.assert_allclose(outs[2], want, atol=1e-6)


def test_a_request_needs_a_batch_dimension_of_one(config, node_repo, exported) -> None:
    model = GraphBatchModel(node_repo, "1", config(node_repo))
    g = exported["teddy"].graphs(1)[0]
    two = {k: np.concatenate([v, v]) for k, v in _request(g).items()}
    (out,) = model.answer([two])
    assert out == Failure(
        "input 'x': batch dimension is 2; send one graph, or one union of graphs with 'batch', per request, "
        f"with a leading dimension of 1 (shape [1, {g.num_nodes}, 2])",
        invalid=True,
    )


def test_soft_limits_split_the_queue_into_several_calls(config, node_repo, exported) -> None:
    model = GraphBatchModel(node_repo, 1, config(node_repo, gtcompress_batch_nodes="20"))
    graphs = exported["teddy"].graphs(6, seed=4, lo=6, hi=12)
    outs = model.answer([_request(g) for g in graphs])
    assert model.calls >= 3  # 6 graphs of 6-11 nodes, at most 20 nodes per call
    want = GraphSession(exported["teddy"].path).run(graphs)
    for got, w in zip(outs, want, strict=True):
        np.testing.assert_allclose(got[0], w, atol=1e-6)


def test_a_failing_merged_call_is_retried_request_by_request(config, node_repo, exported, monkeypatch) -> None:
    model = GraphBatchModel(node_repo, 1, config(node_repo))
    real = tp.run_items

    def flaky(served, items):  # the merged call fails; each request alone succeeds
        if len(items) > 1:
            raise RuntimeError("out of memory")
        return real(served, items)

    monkeypatch.setattr(tp, "run_items", flaky)
    graphs = exported["teddy"].graphs(3, seed=5)
    outs = model.answer([_request(g) for g in graphs])
    assert model.calls == 4  # one merged attempt, then three alone
    for got, w in zip(outs, GraphSession(exported["teddy"].path).run(graphs), strict=True):
        np.testing.assert_allclose(got[0], w, atol=1e-6)


def test_bad_parameters_and_a_missing_model_file_name_what_is_wrong(config, node_repo, tmp_path) -> None:
    with pytest.raises(
        SessionError, match=r"^model 'gt_node': parameter gtcompress_threads is 'many'; expected an integer$"
    ):
        GraphBatchModel(node_repo, 1, config(node_repo, gtcompress_threads="many"))
    with pytest.raises(
        SessionError, match=r"^model 'gt_node': parameter gtcompress_max_nodes is 0; expected at least 1$"
    ):
        GraphBatchModel(node_repo, 1, config(node_repo, gtcompress_max_nodes="0"))
    with pytest.raises(SessionError, match=r"/2: holds no model\.onnx or model\.plan \(the model this Python-backend"):
        GraphBatchModel(node_repo, 2, config(node_repo, gtcompress_model_file=""))
