"""Export parity (ONNX Runtime vs PyTorch) for every model and lowering, dense and compressed."""

import json

import numpy as np
import onnx
import pytest
import torch

from exporters.onnx import ExportError, choose_lowering, estimate_costs, export_onnx, read_metadata
from exporters.opsupport import tensorrt_problems
from gtcompress.data.base import FeatureSpec
from gtcompress.errors import ConfigError
from gtcompress.models import LayerSpec, ModelConfig, build_model
from gtcompress.preprocess import NumpyGraph, union_graphs

CAT = FeatureSpec("categorical", 2, [5, 3])
FLOAT_EDGES = FeatureSpec("float", 2)


def _model(arch: str, compressed: bool, task_level: str = "node", edge=FLOAT_EDGES):
    torch.manual_seed(0)
    layers = [LayerSpec(heads=1, ffn_dim=24), LayerSpec(heads=0, ffn_dim=64), LayerSpec(heads=3, ffn_dim=0)]
    cfg = ModelConfig(
        arch=arch,
        node_features=CAT,
        edge_features=edge,
        out_dim=3,
        hidden=32,
        heads=4,
        num_layers=2,
        pe={"rwse": 4},
        task_level=task_level,
        layers=layers if compressed else [],
    )
    model = build_model(cfg)
    model.train()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


CASES = [
    ("gt", "scatter", False, "node"),
    ("gt", "padded", True, "graph"),
    ("gt", "dense", False, "graph"),
    ("gt", "dense", True, "node"),
    ("gt", "plugin", False, "node"),
    ("gt", "plugin", True, "graph"),
    ("gps", "dense", False, "graph"),
    ("gps", "dense", True, "node"),
    ("graphormer", "dense", False, "node"),
    ("graphormer", "dense", True, "graph"),
]


@pytest.mark.parametrize(("arch", "lowering", "compressed", "level"), CASES)
def test_export_parity_and_tensorrt_ops(tmp_path, arch: str, lowering: str, compressed: bool, level: str) -> None:
    model = _model(arch, compressed, level)
    path = tmp_path / "model.onnx"
    res = export_onnx(model, path, lowering, metadata={"compression": {"kept": 0.5}})
    assert res.batches_checked >= 10 and res.max_abs_err <= 1e-4
    assert res.tensorrt_problems == []
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    ops = {(n.domain, n.op_type) for n in proto.graph.node}
    assert ("", "ScatterND") not in ops or all(
        a.s in (b"", b"none")
        for n in proto.graph.node
        if n.op_type == "ScatterND"
        for a in n.attribute
        if a.name == "reduction"
    )
    if lowering == "plugin":
        assert ("gtcompress", "SparseGraphAttention") in ops or any(d == "gtcompress" for d, _ in ops)
        node = next(n for n in proto.graph.node if n.domain == "gtcompress")
        assert {a.name for a in node.attribute} >= {"plugin_namespace", "heads", "head_dim", "scale"}
        assert any(f.domain == "gtcompress" for f in proto.functions)  # ORT's fallback
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    assert dims["x"] == ["num_nodes", 2] and dims["edge_index"] == [2, "num_edges"]
    meta = read_metadata(path)
    assert json.loads(meta["model_config"])["layers"] == [vars(s) for s in model.config.layers]
    assert json.loads(meta["input_spec"])["lowering"] == lowering
    assert json.loads(meta["compression"]) == {"kept": 0.5}
    assert meta["gtcompress_version"]


def test_verify_parity_reports_error_and_output_scale(tmp_path) -> None:
    """Export checks the error against atol x max(1, |output|): verify_parity reports both."""
    from exporters.onnx import _Traced, to_torch, verify_parity
    from gtcompress.preprocess.inputs import build_inputs
    from gtcompress.preprocess.random_graphs import random_batches

    model = _model("gt", False).eval()
    res = export_onnx(model, tmp_path / "m.onnx", "dense", verify_batches=2)
    batches = random_batches(res.spec["x"], res.spec["edge_attr"], 3)
    err, scale, n = verify_parity(res.path, model, res.spec, batches)
    traced = _Traced(model, res.spec["inputs"])
    with torch.no_grad():
        ref = max(float(traced(*to_torch(build_inputs(g, res.spec))).abs().max()) for g in batches)
    assert n == 3 and 0.0 <= err <= 1e-4
    assert scale == pytest.approx(ref, rel=1e-6)


def test_failed_verification_writes_nothing(tmp_path) -> None:
    path = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_onnx(_model("gt", False), path, "scatter", atol=-1.0, verify_batches=2)
    assert list(tmp_path.iterdir()) == []


def test_lowering_errors() -> None:
    with pytest.raises(ConfigError, match="unknown attention lowering 'sparse'"):
        export_onnx(_model("gt", False), "/tmp/never.onnx", "sparse")
    with pytest.raises(ConfigError, match="only the 'dense' lowering"):
        export_onnx(_model("gps", False), "/tmp/never.onnx", "scatter")


def _sbm_like(rng) -> NumpyGraph:
    gs = []
    for _ in range(32):
        n = int(rng.integers(100, 140))
        a = rng.random((n, n)) < 0.3
        src, dst = np.nonzero(a)
        gs.append(NumpyGraph(np.zeros((n, 2), np.int64), np.stack([src, dst])))
    return union_graphs(gs)


def test_auto_picks_dense_for_small_dense_graphs_and_padded_for_big_sparse_ones() -> None:
    rng = np.random.default_rng(0)
    model = _model("gt", False)
    assert choose_lowering(model, _sbm_like(rng)) == "dense"
    n = 100_000
    big = NumpyGraph(np.zeros((n, 2), np.int64), rng.integers(0, n, (2, 10 * n)))
    costs = estimate_costs(big)
    assert costs["padded"] < costs["scatter"] < costs["dense"]
    assert choose_lowering(model, big) == "padded"
    assert choose_lowering(_model("gps", False), big) == "dense"


def test_op_support_check_flags_scatternd_reduction() -> None:
    from onnx import helper

    node = helper.make_node("ScatterND", ["a", "i", "u"], ["o"], reduction="add", name="bad")
    graph = helper.make_graph([node], "g", [], [])
    problems = tensorrt_problems(helper.make_model(graph))
    assert problems == ["node 'bad': ScatterND with a reduction is rejected by TensorRT (use scatter_add)"]
    unknown = helper.make_graph([helper.make_node("Foo", [], ["o"], domain="x", name="f")], "g", [], [])
    assert "custom op x::Foo has no TensorRT plugin" in tensorrt_problems(helper.make_model(unknown))[0]


@pytest.mark.parametrize("arch", ["gt", "gps"])
def test_token_pruned_models_export_with_ties(tmp_path, arch: str) -> None:
    """Token selection must match after export: ties among identical nodes, and k_b computed in
    integer arithmetic (float32 vs float64 once disagreed on 5 · 0.7 + 0.5)."""
    torch.manual_seed(1)
    layers = [LayerSpec(heads=2, ffn_dim=16, token_keep=0.5), LayerSpec(heads=4, ffn_dim=16, token_keep=0.7)]
    cfg = ModelConfig(
        arch=arch, node_features=FeatureSpec("categorical", 1, [2]), out_dim=2, hidden=16, heads=4, layers=layers
    )
    model = build_model(cfg).eval()
    res = export_onnx(model, tmp_path / "m.onnx", "auto", verify_batches=10)
    assert res.lowering == "dense" and res.max_abs_err <= 1e-4
    if arch == "gt":
        with pytest.raises(ConfigError, match="token-pruned model exports with the 'dense' lowering only"):
            export_onnx(model, tmp_path / "n.onnx", "plugin")
