"""The plugin lowering's ONNX Runtime fallback (the model-local function) on its own: total on any CSR,
``E = 0`` and ``N = 1`` included, and equal to the reference attention. No torch export: milliseconds."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from exporters.plugin_op import add_plugin_function
from gtcompress.nn.attention import sparse_attention
from trt_plugins import onnx_op
from trt_plugins.csr import edge_index_to_csr

HEADS, HEAD_DIM = 2, 4


def _session(has_bias: bool) -> ort.InferenceSession:
    """One ``SparseGraphAttention`` node with symbolic N and E, run through the fallback function."""

    def vi(name: str, elem: int, shape: list) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, elem, shape)

    inputs = ["q", "k", "v", "rowptr", "col", "bias"]
    node = onnx_op.make_node(inputs, ["out"], HEADS, HEAD_DIM, scale=0.5, has_bias=has_bias)
    graph = helper.make_graph(
        [node],
        "g",
        [vi(x, TensorProto.FLOAT, ["N", HEADS, HEAD_DIM]) for x in "qkv"]
        + [vi("rowptr", TensorProto.INT32, ["N1"]), vi("col", TensorProto.INT32, ["E"])]
        + [vi("bias", TensorProto.FLOAT, ["B", HEADS])],
        [vi("out", TensorProto.FLOAT, ["N", HEADS, HEAD_DIM])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    add_plugin_function(model)
    onnx.checker.check_model(model, full_check=True)
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("has_bias", [False, True])
def test_fallback_function_is_total(has_bias: bool) -> None:
    """Before the fix ONNX Runtime failed on every ``E = 0`` input (its ReduceSum ignores a negative
    axis on an empty tensor, then the bias Add or the ScatterElements rejects the unreduced shape)."""
    sess = _session(has_bias)
    g = torch.Generator().manual_seed(0)
    cases = {
        "5 nodes, no edge": (5, torch.zeros((2, 0), dtype=torch.long)),
        "1 node, no edge": (1, torch.zeros((2, 0), dtype=torch.long)),
        "1 node, a self-loop": (1, torch.zeros((2, 1), dtype=torch.long)),
        "duplicates, self-loops, isolated nodes": (6, torch.tensor([[0, 0, 2, 2, 1, 3], [1, 1, 2, 2, 1, 2]])),
        "random": (9, torch.randint(0, 8, (2, 30), generator=g)),
    }
    for case, (n, ei) in cases.items():
        q, k, v = (torch.randn(n, HEADS, HEAD_DIM, generator=g) for _ in range(3))
        e = ei.shape[1]
        bias = torch.randn(e, HEADS, generator=g) if has_bias else torch.zeros(0, HEADS)
        rowptr, col, perm = edge_index_to_csr(ei, n)
        csr_bias = bias[perm] if has_bias else bias
        feeds = {"q": q, "k": k, "v": v, "rowptr": rowptr.int(), "col": col.int(), "bias": csr_bias}
        (out,) = sess.run(None, {name: t.numpy() for name, t in feeds.items()})
        ref = sparse_attention(q, k, v, ei, bias if has_bias else None, scale=0.5)
        assert out.shape == (n, HEADS, HEAD_DIM), case
        np.testing.assert_allclose(out, ref.numpy(), atol=1e-5, err_msg=case)


def _run_with_values(
    sess: ort.InferenceSession, q: torch.Tensor, k: torch.Tensor, ei: torch.Tensor, has_bias: bool, seed: int
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """The function's output and the reference for ``q``, ``k`` and seeded values (and biases): both, and
    the values."""
    n, e = q.shape[0], ei.shape[1]
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, HEADS, HEAD_DIM, generator=g)
    bias = torch.randn(e, HEADS, generator=g) if has_bias else torch.zeros(0, HEADS)
    rowptr, col, perm = edge_index_to_csr(ei, n)
    feeds = {"q": q, "k": k, "v": v, "rowptr": rowptr.int(), "col": col.int(), "bias": bias[perm] if has_bias else bias}
    (out,) = sess.run(None, {name: t.numpy() for name, t in feeds.items()})
    return out, sparse_attention(q, k, v, ei, bias if has_bias else None, scale=0.5), v


@pytest.mark.parametrize("has_bias", [False, True])
def test_fallback_function_softmaxes_scores_below_minus_1e30(has_bias: bool) -> None:
    """A destination whose every incoming score lies below -1e30 (finite float32 scores: features of
    1e16 give q·k near -1e32) still gets its softmax, as in the reference and the kernel, whose running
    maximum starts at -inf. The function's maximum started at -1e30 instead: every exp underflowed
    to 0, and 0 / 0 made the node's output NaN (a server refused the request the model answers)."""
    sess = _session(has_bias)
    ei = torch.tensor([[0, 1, 2, 2], [2, 2, 0, 1]])  # node 2: two in-edges; nodes 0 and 1: one each
    n = 3
    q = torch.full((n, HEADS, HEAD_DIM), 1e16)
    k = torch.full((n, HEADS, HEAD_DIM), -1e16)
    k[1] *= 1.5  # node 2's two scores differ: -2e32 and -3e32 at scale 0.5
    out, ref, v = _run_with_values(sess, q, k, ei, has_bias, seed=1)
    assert torch.isfinite(ref).all()
    np.testing.assert_allclose(out, ref.numpy(), atol=1e-5)
    np.testing.assert_allclose(out[2], v[0].numpy(), atol=1e-6)  # the higher score takes all the weight


@pytest.mark.parametrize("has_bias", [False, True])
def test_fallback_function_makes_a_node_with_an_overflowed_score_nan(has_bias: bool) -> None:
    """Node 2's edge from node 0 scores q·k = -1e40 x 0.5, past float32's range: its value is lost, so node 2
    answers NaN, as in the reference (``gtcompress.nn.attention.overflow_to_nan``), where the softmax
    weighed the -inf as 0 and answered node 1's value. Nodes 0 and 1 keep theirs."""
    sess = _session(has_bias)
    ei = torch.tensor([[0, 1, 2, 2], [2, 2, 0, 1]])
    n = 3
    q = torch.ones(n, HEADS, HEAD_DIM)
    q[2] = 1e20
    k = torch.ones(n, HEADS, HEAD_DIM)
    k[0] = -1e20
    out, ref, _ = _run_with_values(sess, q, k, ei, has_bias, seed=2)
    assert torch.isnan(ref[2]).all() and np.isnan(out[2]).all()
    np.testing.assert_allclose(out[:2], ref[:2].numpy(), atol=1e-6)
