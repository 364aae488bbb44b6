"""The exported per-graph token top-k ranks as eager torch does on graphs past 65,536 nodes."""

from __future__ import annotations

import numpy as np
import torch

from exporters.opsupport import tensorrt_problems


def test_exported_token_topk_ranks_as_eager_past_65536_nodes() -> None:
    """The per-graph top-k alone (a full model at this size would need [B, L, L] attention), traced
    with a symbolic length: its sort key's position part is as wide as the padded length, and ONNX
    Runtime ranks a 65,546-node graph as eager torch does (the 16-bit part ranked node 65537, one grid
    step above node 0, below it), with only operators TensorRT takes."""
    import warnings

    import onnxruntime as ort

    from exporters.onnx import OPSET
    from gtcompress.nn.tokens import topk_per_graph

    class TopK(torch.nn.Module):
        def forward(self, scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
            return topk_per_graph(scores, valid, 0.5).order

    rows, length = torch.export.Dim("rows"), torch.export.Dim("length")
    example = (torch.randn(2, 9), torch.ones(2, 9, dtype=torch.bool))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proto = torch.onnx.export(
            TopK(), example, dynamic_shapes=({0: rows, 1: length},) * 2, dynamo=True, opset_version=OPSET
        ).model_proto
    assert tensorrt_problems(proto) == []
    n = 65536 + 10
    scores = np.full((1, n), -1.0, np.float32)
    scores[0, [0, 65537, 65540, n - 1]] = [0.0, 2.0**-12, 0.0, 3e38]
    valid = np.ones((1, n), bool)
    valid[0, 5] = False
    sess = ort.InferenceSession(proto.SerializeToString())
    got = sess.run(None, dict(zip((i.name for i in sess.get_inputs()), (scores, valid), strict=True)))[0]
    want = TopK()(torch.from_numpy(scores), torch.from_numpy(valid)).numpy()
    assert got[0, :4].tolist() == [n - 1, 65537, 0, 65540] and got[0, -1] == 5
    np.testing.assert_array_equal(got, want)
