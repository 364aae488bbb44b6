"""A max readout answers NaN in every backend where one of a graph's nodes is NaN.

torch's ``scatter_reduce(amax)`` propagates NaN; ONNX Runtime's ScatterElements ``max`` keeps or drops it
by the order it meets the rows in. A request whose finite features the model overflows on (one node NaN)
was answered from the other nodes' maximum: finite, so the check that refuses a non-finite answer let
a value through that the checkpoint does not give."""

import numpy as np
import pytest
import torch

from exporters.onnx import export_onnx
from gtcompress.data.base import FeatureSpec
from gtcompress.graph import GraphBatch, collate
from gtcompress.models import ModelConfig, build_model
from gtcompress.preprocess import NumpyGraph


@pytest.mark.parametrize("big", [0, 1, 4])
def test_a_node_the_model_overflows_on_makes_the_max_readout_nan_in_onnx_runtime(tmp_path, big: int) -> None:
    from runtime.session import GraphSession

    torch.manual_seed(0)
    cfg = ModelConfig(arch="gt", node_features=FeatureSpec("float", 3), edge_features=None, out_dim=2, hidden=16,
                      num_layers=1, heads=2, task_level="graph", readout="max", norm="layer")  # fmt: skip
    model = build_model(cfg).eval()
    res = export_onnx(model, tmp_path / "max.onnx", "scatter")
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    x[big] = 3e38  # finite: the request is valid, the node encoder overflows on it
    edges = np.array([[0, 1, 2, 3, 4], [1, 2, 3, 4, 0]])
    edges = edges[:, (edges != big).all(axis=0)]  # the node sends nothing: only its own row turns NaN
    with torch.no_grad():
        want = model(collate([GraphBatch(x=torch.from_numpy(x), edge_index=torch.from_numpy(edges))]))[0].numpy()
    assert np.isnan(want).all()
    (got,) = GraphSession(res.path, ["CPUExecutionProvider"]).run([NumpyGraph(x=x, edge_index=edges)])
    assert np.isnan(got).all(), got
