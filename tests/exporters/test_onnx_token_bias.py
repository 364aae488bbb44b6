"""A token-pruned GT with edge features exports its per-head edge bias built on the kept pairs only."""

from __future__ import annotations

import onnx
import torch

from exporters.onnx import export_onnx
from gtcompress.data.base import FeatureSpec
from gtcompress.models import LayerSpec, ModelConfig, build_model


def test_token_pruned_gt_builds_its_edge_bias_on_kept_pairs_with_a_logarithm_per_edge(tmp_path) -> None:
    """Built whole on per-graph padding and narrowed, a layer's ``[B, H, L, L]`` log-sum-exp bias cost
    ONNX Runtime CPU more than attention over the kept tokens saved (a Log, a Where and IsNaN/IsInf/Clip
    over every pair, two GatherElements on axes 3 and 2 with expanded int64 indices; ``bench/HISTORY.md``).
    The file holds no such narrowing, and each layer's Log runs on values gathered per edge. Its answers
    are checked against eager torch by the export (edge cases: edgeless graphs, lone nodes, duplicate
    edges and self-loops), at the kept widths 1 and up, with 1, 2 and 4 heads (a 1-head bias, permuted
    into heads, once made ``torch.export`` refuse the model)."""
    torch.manual_seed(0)
    layers = [LayerSpec(heads=h, ffn_dim=16, token_keep=keep) for h, keep in ((2, 0.5), (1, 0.8), (4, 0.1))]
    cfg = ModelConfig(
        arch="gt",
        node_features=FeatureSpec("float", 3),
        edge_features=FeatureSpec("float", 2),
        out_dim=2,
        hidden=16,
        heads=2,
        layers=layers,
        task_level="graph",
    )
    res = export_onnx(build_model(cfg).eval(), tmp_path / "m.onnx", "dense", verify_batches=3)
    assert res.max_abs_err <= 1e-4 and res.edge_cases
    graph = onnx.load(str(res.path)).graph
    producer = {out: node.op_type for node in graph.node for out in node.output}
    axes = [
        next((a.i for a in node.attribute if a.name == "axis"), 0)
        for node in graph.node
        if node.op_type == "GatherElements"
    ]
    assert axes and max(axes) <= 1
    logs = [producer[node.input[0]] for node in graph.node if node.op_type == "Log"]
    assert logs == ["GatherElements"] * len(layers)
