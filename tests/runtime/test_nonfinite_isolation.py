"""One graph whose (finite, valid) features overflow the model must not poison the graphs it is merged with,
and its own NaN answer is refused (400) rather than served as an answer.

GT's ``dense`` lowering packs small graphs into shared padded rows. A graph whose features are large
enough that the model overflows on it (1e30: its scores reach inf, its softmax NaN) had NaN keys and
values in those rows; ``0 * NaN`` is NaN, so every graph packed beside it came back NaN too. In
``gtc serve`` and the Triton python variant those are other clients' requests merged into the same
call; in ``GraphSession.run`` the other graphs of the list.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from exporters.onnx import export_onnx
from gtcompress.data.base import FeatureSpec
from gtcompress.models import ModelConfig
from gtcompress.preprocess import NumpyGraph
from runtime.errors import NonFiniteOutputError
from runtime.served import ServedModel, run_items
from runtime.session import GraphSession
from tests.runtime.conftest import seeded_model


def _ring(x: np.ndarray) -> NumpyGraph:
    n = x.shape[0]
    ei = np.array([np.arange(n), (np.arange(n) + 1) % n], dtype=np.int64)
    return NumpyGraph(x.astype(np.float32), ei, None, None, {})


@pytest.fixture(scope="module")
def packed_gt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = ModelConfig(
        arch="gt",
        node_features=FeatureSpec("float", 3),
        out_dim=2,
        hidden=16,
        heads=2,
        num_layers=2,
        task_level="node",
    )
    res = export_onnx(seeded_model(cfg), tmp_path_factory.mktemp("packed") / "gt.onnx", "dense", verify_batches=1)
    assert res.spec.packed  # small graphs share padded rows: the case this file is about
    return res.path


def _graphs() -> tuple[list[NumpyGraph], list[int]]:
    """A large graph (sets the row width), the overflowing one and two clean small ones packed beside it."""
    rng = np.random.default_rng(0)
    big = _ring(rng.normal(size=(8, 3)))
    bad = _ring(np.full((2, 3), 1e30))
    small = _ring(rng.normal(size=(2, 3)))
    mid = _ring(rng.normal(size=(4, 3)))
    return [big, bad, small, mid], [0, 2, 3]


def test_session_run_keeps_clean_graphs_clean(packed_gt: Path) -> None:
    sess = GraphSession(packed_gt)
    graphs, clean = _graphs()
    together = sess.run(graphs)
    assert not np.isfinite(together[1]).all()  # the model overflows on the 1e30 graph itself
    for k in clean:
        alone = sess.run([graphs[k]])[0]
        assert np.isfinite(alone).all()
        np.testing.assert_array_equal(together[k], alone)


def test_run_items_keeps_other_requests_clean(packed_gt: Path) -> None:
    """The model call of ``gtc serve``'s batcher and of the Triton python variant."""
    model = ServedModel("m", GraphSession(packed_gt))
    graphs, clean = _graphs()
    items = [SimpleNamespace(graph=g, num_graphs=1) for g in graphs]
    outs = run_items(model, items)
    assert isinstance(outs[1], NonFiniteOutputError)  # refused, not answered NaN (see the tests below)
    for k in clean:
        alone = run_items(model, [items[k]])[0]
        assert np.isfinite(alone).all()
        np.testing.assert_array_equal(outs[k], alone)


BAD_MESSAGE = (
    "input 'x': model 'm' answers this request with 4 NaN or infinite values of 4: its inputs are finite, but "
    "their largest magnitude, 1e+30 (here), is beyond what the model computes in float32; send features on the "
    "scale the model was trained on"
)


def test_a_request_the_model_overflows_on_is_refused_alone_or_merged(packed_gt: Path) -> None:
    """A client reading ``[[nan, nan], [nan, nan]]`` from a 200 takes it for the model's answer (an argmax
    of NaN is class 0); the answer is a 400 naming the input and its scale, and only for that request."""
    model = ServedModel("m", GraphSession(packed_gt))
    graphs, clean = _graphs()
    items = [SimpleNamespace(graph=g, num_graphs=1) for g in graphs]
    alone = run_items(model, [items[1]])
    assert isinstance(alone[0], NonFiniteOutputError) and str(alone[0]) == BAD_MESSAGE
    merged = run_items(model, items)
    assert str(merged[1]) == BAD_MESSAGE
    assert all(isinstance(merged[k], np.ndarray) and np.isfinite(merged[k]).all() for k in clean)


def test_the_server_answers_400_and_the_triton_model_an_invalid_argument(packed_gt: Path) -> None:
    import httpx

    from runtime.server import BackgroundServer, create_app
    from runtime.triton_python import Failure, GraphBatchModel

    bad = _graphs()[0][1]
    body = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": list(bad.x.shape), "data": bad.x.ravel().tolist()},
            {"name": "edge_index", "datatype": "INT64", "shape": [2, 2], "data": bad.edge_index.ravel().tolist()},
        ]
    }
    app = create_app([ServedModel("m", GraphSession(packed_gt))], warmup=False)
    with BackgroundServer(app) as srv:
        r = httpx.post(f"http://{srv.url}/v2/models/m/infer", json=body, timeout=60)
    assert r.status_code == 400
    assert r.json() == {"error": BAD_MESSAGE}

    repo = packed_gt.parent / "repo" / "m"
    (repo / "1").mkdir(parents=True)
    (repo / "1" / "model.onnx").write_bytes(packed_gt.read_bytes())
    triton = GraphBatchModel(repo, 1, {"name": "m", "max_batch_size": 8})
    good = _graphs()[0][2]
    answers = triton.answer([{"x": g.x[None], "edge_index": g.edge_index[None]} for g in (good, bad)])
    assert isinstance(answers[0], np.ndarray) and np.isfinite(answers[0]).all()
    assert answers[1] == Failure(BAD_MESSAGE, invalid=True)


def test_a_duplicated_edge_whose_edge_bias_overflows_is_refused_on_the_dense_lowering(tmp_path: Path) -> None:
    """Edge 1 -> 0 comes twice, one copy with an edge feature at 3e37 that the edge encoder and the bias map
    to -inf. The scatter lowering answers NaN (refused); the dense one merged the copies by log-sum-exp, where
    the -inf copy weighed 0, and served a finite answer without that edge instance. Both now refuse it."""
    import torch

    cfg = ModelConfig(
        arch="gt",
        node_features=FeatureSpec("float", 3),
        edge_features=FeatureSpec("float", 2),
        out_dim=2,
        hidden=8,
        heads=2,
        num_layers=1,
        task_level="node",
    )
    model = seeded_model(cfg)
    with torch.no_grad():  # edge encoding 2x the feature; each head's bias -8x the encoding: 3e37 -> -inf
        model.edge_encoder.linear.weight.fill_(1.0)
        model.edge_encoder.linear.bias.zero_()
        model.layers[0].attn.edge_bias.weight.fill_(-1.0)
    rng = np.random.default_rng(0)
    edge_attr = rng.normal(size=(5, 2)).astype(np.float32)
    edge_attr[0] = 3e37
    g = NumpyGraph(
        rng.normal(size=(5, 3)).astype(np.float32),
        np.array([[1, 2, 3, 0, 1], [0, 0, 1, 2, 0]], dtype=np.int64),
        edge_attr,
        None,
        {},
    )
    for lowering in ("scatter", "dense"):
        path = export_onnx(model, tmp_path / f"{lowering}.onnx", lowering, verify_batches=1).path
        out = run_items(ServedModel("m", GraphSession(path)), [SimpleNamespace(graph=g, num_graphs=1)])[0]
        assert isinstance(out, NonFiniteOutputError), (lowering, out)
        assert str(out) == (
            "input 'edge_attr': model 'm' answers this request with 2 NaN or infinite values of 10: its inputs are "
            "finite, but their largest magnitude, 3e+37 (here), is beyond what the model computes in float32; send "
            "features on the scale the model was trained on"
        ), lowering
