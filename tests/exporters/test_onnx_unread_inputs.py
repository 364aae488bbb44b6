"""A model whose layers read no edge features builds no edge encoder; its ONNX file still takes the
spec's ``edge_attr``, which deployments send."""

from __future__ import annotations

import numpy as np
import onnx
import torch

from exporters.onnx import export_onnx
from gtcompress.data.base import FeatureSpec
from gtcompress.models import LayerSpec, ModelConfig, build_model


def test_a_model_that_reads_no_edge_features_still_takes_edge_attr(tmp_path) -> None:
    """A GT left with no head builds no edge encoder (nothing reads it): its file still declares the
    spec's ``edge_attr`` input, which deployments send, and answers as the model does."""
    from gtcompress.graph import GraphBatch
    from gtcompress.preprocess.random_graphs import random_graph
    from runtime.session import GraphSession

    torch.manual_seed(0)
    layers = [LayerSpec(heads=0, ffn_dim=16), LayerSpec(heads=0, ffn_dim=8)]
    edge = FeatureSpec("categorical", 1, [3])
    cfg = ModelConfig(arch="gt", node_features=FeatureSpec("float", 3), edge_features=edge, out_dim=2, hidden=16,
                      layers=layers)  # fmt: skip
    model = build_model(cfg).eval()
    assert model.edge_encoder is None
    res = export_onnx(model, tmp_path / "m.onnx", "dense", verify_batches=2)
    assert "edge_attr" in res.spec.inputs
    assert "edge_attr" in [i.name for i in onnx.load(str(res.path)).graph.input]
    graph = random_graph(np.random.default_rng(0), 6, 12, res.spec.x, res.spec.edge_attr)
    (out,) = GraphSession(res.path).run([graph])
    with torch.no_grad():
        np.testing.assert_allclose(out, model(GraphBatch.from_numpy(graph)).numpy(), atol=1e-5)
