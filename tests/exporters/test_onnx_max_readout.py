"""A max readout (PyG's ``global_max_pool``) exported and served: on every lowering, and NaN in every
backend where one of a graph's nodes is NaN.

torch's ``scatter_reduce(amax)`` propagates NaN; ONNX Runtime's ScatterElements ``max`` keeps or drops it
by the order it meets the rows in. A request whose finite features the model overflows on (one node NaN)
was answered from the other nodes' maximum: finite, so the check that refuses a non-finite answer let
a value through that the checkpoint does not give."""

import numpy as np
import onnx
import pytest
import torch

from exporters.onnx import _Traced, export_onnx, to_torch
from gtcompress.data.base import FeatureSpec
from gtcompress.graph import GraphBatch, collate
from gtcompress.models import ModelConfig, build_model
from gtcompress.preprocess import NumpyGraph
from gtcompress.preprocess.inputs import build_inputs
from gtcompress.preprocess.random_graphs import EDGE_CASES


def _max_model(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, node_features=FeatureSpec("categorical", 2, [5, 3]),
                      edge_features=FeatureSpec("float", 2), out_dim=3, hidden=32, heads=4, num_layers=2,
                      pe={"rwse": 4}, task_level="graph", readout="max")  # fmt: skip
    return build_model(cfg).eval()


@pytest.mark.parametrize(
    ("arch", "lowering"), [("gt", "scatter"), ("gt", "padded"), ("gt", "plugin"), ("gps", "dense")]
)
def test_a_max_readout_exports_on_every_lowering_and_serves_per_graph(tmp_path, arch: str, lowering: str) -> None:
    """``readout="max"`` (PyG's ``global_max_pool``) runs on the node rows after the layers of every lowering:
    ScatterElements with reduction max (opset 18), which ONNX Runtime runs and TensorRT's parser takes. The
    export checks parity on random batches and the edge cases; the runtime then answers each graph of a
    union as PyTorch does on that graph alone."""
    from runtime.session import GraphSession

    model = _max_model(arch)
    res = export_onnx(model, tmp_path / "max.onnx", lowering)
    assert res.max_abs_err <= 1e-4 and res.edge_cases == list(EDGE_CASES) and res.tensorrt_problems == []
    reductions = {
        a.s
        for n in onnx.load(str(res.path)).graph.node
        if n.op_type == "ScatterElements"
        for a in n.attribute
        if a.name == "reduction"
    }
    assert b"max" in reductions
    rng = np.random.default_rng(4)
    graphs = [
        NumpyGraph(
            x=np.stack([rng.integers(0, 5, n), rng.integers(0, 3, n)], axis=1),
            edge_index=rng.integers(0, n, (2, 2 * n)),
            edge_attr=rng.normal(size=(2 * n, 2)).astype(np.float32),
        )
        for n in (1, 4, 9)
    ]
    outs = GraphSession(res.path, ["CPUExecutionProvider"]).run(graphs)
    for g, out in zip(graphs, outs, strict=True):
        with torch.no_grad():
            ref = _Traced(model, res.spec)(*to_torch(build_inputs(g, res.spec))).numpy()[0]
        np.testing.assert_allclose(out, ref, atol=1e-4)


@pytest.fixture(scope="module")
def max_readout_gt(tmp_path_factory: pytest.TempPathFactory):
    """A 1-layer GT with a max readout and its scatter export, shared by the overflow cases."""
    torch.manual_seed(0)
    cfg = ModelConfig(arch="gt", node_features=FeatureSpec("float", 3), edge_features=None, out_dim=2, hidden=16,
                      num_layers=1, heads=2, task_level="graph", readout="max", norm="layer")  # fmt: skip
    model = build_model(cfg).eval()
    return model, export_onnx(model, tmp_path_factory.mktemp("max") / "max.onnx", "scatter")


@pytest.mark.parametrize("big", [0, 1, 4])
def test_a_node_the_model_overflows_on_makes_the_max_readout_nan_in_onnx_runtime(max_readout_gt, big: int) -> None:
    from runtime.session import GraphSession

    model, res = max_readout_gt
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    x[big] = 3e38  # finite: the request is valid, the node encoder overflows on it
    edges = np.array([[0, 1, 2, 3, 4], [1, 2, 3, 4, 0]])
    edges = edges[:, (edges != big).all(axis=0)]  # the node sends nothing: only its own row turns NaN
    with torch.no_grad():
        want = model(collate([GraphBatch(x=torch.from_numpy(x), edge_index=torch.from_numpy(edges))]))[0].numpy()
    assert np.isnan(want).all()
    (got,) = GraphSession(res.path, ["CPUExecutionProvider"]).run([NumpyGraph(x=x, edge_index=edges)])
    assert np.isnan(got).all(), got
