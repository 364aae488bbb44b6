"""A GT exports its bias with the logarithm taken per edge: a token-pruned GT's (per-head edge-feature bias,
or the edge-count bias) built on the kept pairs only, a dense GT's per-head edge-feature bias written at each
edge's pair."""

from __future__ import annotations

import onnx
import torch

from exporters.onnx import export_onnx
from gtcompress.data.base import FeatureSpec
from gtcompress.models import LayerSpec, ModelConfig, build_model


def _exported_ops(cfg: ModelConfig, path) -> tuple[list[str], list[int], list[str]]:
    """Export ``cfg``'s model on the dense lowering (checked against eager torch on the edge cases and 3
    random batches); the op producing each Log's input, the axis of each GatherElements, and the op
    producing each Softmax's input."""
    res = export_onnx(build_model(cfg).eval(), path, "dense", verify_batches=3)
    assert res.max_abs_err <= 1e-4 and res.edge_cases
    graph = onnx.load(str(res.path)).graph
    producer = {out: node.op_type for node in graph.node for out in node.output}
    logs = [producer[node.input[0]] for node in graph.node if node.op_type == "Log"]
    axes = [
        next((a.i for a in node.attribute if a.name == "axis"), 0)
        for node in graph.node
        if node.op_type == "GatherElements"
    ]
    softmax_inputs = [producer[node.input[0]] for node in graph.node if node.op_type == "Softmax"]
    return logs, axes, softmax_inputs


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
    logs, axes, _ = _exported_ops(cfg, tmp_path / "m.onnx")
    assert axes and max(axes) <= 1
    assert logs == ["GatherElements"] * len(layers)


def test_dense_gt_with_edge_features_takes_the_logarithm_of_its_edge_bias_per_edge(tmp_path) -> None:
    """A dense GT layer's ``[B, H, L, L]`` log-sum-exp edge bias took its Log, and the Where on the peaks
    and the Clip, over every cell (a Log on the ScatterElements of the exp sums): at 16 graphs of 16 to 128
    nodes, a quarter of the file's ONNX Runtime CPU time (``bench/HISTORY.md``). Each layer's Log runs on
    the sums gathered per edge, as does the count bias's, shared by the layers. Its answers are checked
    against eager torch by the export (edgeless graphs, lone nodes, duplicate edges and self-loops), with
    1, 2 and 4 heads, at graph level (the bias is built before the readout, so one level shows it)."""
    torch.manual_seed(0)
    layers = [LayerSpec(heads=h, ffn_dim=16) for h in (2, 1, 4)]
    cfg = ModelConfig(
        arch="gt", node_features=FeatureSpec("float", 3), edge_features=FeatureSpec("float", 2), out_dim=2,
        hidden=16, heads=2, layers=layers, task_level="graph",
    )  # fmt: skip
    logs, _, _ = _exported_ops(cfg, tmp_path / "graph.onnx")
    assert logs == ["GatherElements"] * 4  # one a layer and the count bias's, read by every layer as its mask


def test_token_pruned_gt_without_edge_features_writes_its_count_bias_at_the_kept_pairs(tmp_path) -> None:
    """Without edge features, each layer narrowed the whole ``[B, 1, L, L]`` count bias to its kept tokens by
    two GatherElements (axes 3 and 2) with expanded int64 indices, which with the selection kept the pruned
    model slower than its dense parent on ONNX Runtime CPU (``bench/HISTORY.md``). The file holds no such
    narrowing; its one Log runs on the counts gathered per edge, shared by the layers. Its answers are
    checked against eager torch by the export (edgeless graphs, lone nodes, duplicate edges, self-loops),
    at the kept widths 1 and up, with 1, 2 and 4 heads, at node level (graph level is the edge-feature
    test's above)."""
    torch.manual_seed(0)
    layers = [LayerSpec(heads=h, ffn_dim=16, token_keep=keep) for h, keep in ((2, 0.5), (1, 0.8), (4, 0.1))]
    cfg = ModelConfig(
        arch="gt", node_features=FeatureSpec("float", 3), out_dim=2, hidden=16, heads=2, layers=layers,
        task_level="node",
    )  # fmt: skip
    logs, axes, softmax_inputs = _exported_ops(cfg, tmp_path / "node.onnx")
    assert axes and max(axes) <= 1
    assert logs == ["GatherElements"]
    # the kept tokens attend over the input edges, most pairs masked: each Softmax is lifted
    # (test_onnx_export.py, test_token_pruned_layers_lift_masked_scores_where_the_bias_is_a_graph)
    assert softmax_inputs == ["Max"] * len(layers)


def test_the_exported_kept_pair_index_sends_edges_leaving_the_kept_tokens_to_the_spare_row() -> None:
    """An edge with an end not kept indexes ``spare * L'`` and up before it is sent to the spare row: for one
    1,425-token row that is past 2^31, where ONNX Runtime 1.31's int64 Clip (``clamp(max=spare)``) left it as
    it was, and the scatter by it failed ("indices element out of data bounds"), for GT and Graphormer alike
    (a 1,500-node graph at keep 0.95)."""
    import warnings

    import onnxruntime as ort

    from exporters.onnx import OPSET
    from gtcompress.nn.layout import DenseLayout

    class Pairs(torch.nn.Module):
        def forward(self, slot: torch.Tensor, pad_mask: torch.Tensor, edges: torch.Tensor, idx: torch.Tensor):
            return DenseLayout.from_slots(slot, pad_mask).kept_pair_index(edges, idx)

    n, lp = 1500, 1425
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:lp].unsqueeze(0)
    dropped = torch.ones(n, dtype=torch.bool).scatter(0, idx[0], False).nonzero().squeeze(1)
    kept = idx[0, :4]
    # kept -> kept, kept -> dropped, dropped -> kept, dropped -> dropped, self-loops of each
    edges = torch.tensor(
        [[kept[0], kept[1], dropped[0], dropped[1], kept[2], dropped[2]],
         [kept[1], dropped[0], kept[3], dropped[2], kept[2], dropped[2]]]
    )  # fmt: skip
    example = (
        torch.arange(9),
        torch.ones(1, 9, dtype=torch.bool),
        torch.tensor([[0, 1], [1, 2]]),
        torch.arange(5)[None],
    )
    dims = torch.export.Dim("n"), torch.export.Dim("length"), torch.export.Dim("edges"), torch.export.Dim("lp")
    shapes = ({0: dims[0]}, {1: dims[1]}, {1: dims[2]}, {1: dims[3]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proto = torch.onnx.export(Pairs(), example, dynamic_shapes=shapes, dynamo=True, opset_version=OPSET).model_proto
    inputs = (torch.arange(n), torch.ones(1, n, dtype=torch.bool), edges, idx)
    sess = ort.InferenceSession(proto.SerializeToString())
    feed = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), inputs, strict=True)}
    (out,) = sess.run(None, feed)
    spare = lp * lp
    rank = {int(t): r for r, t in enumerate(idx[0])}
    expected = [rank[int(kept[1])] * lp + rank[int(kept[0])], spare, spare, spare]
    expected += [rank[int(kept[2])] * lp + rank[int(kept[2])], spare]
    assert out.tolist() == expected
    assert torch.equal(Pairs()(*inputs), torch.from_numpy(out))
