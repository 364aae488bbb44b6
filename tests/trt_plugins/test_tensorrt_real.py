"""Against a real TensorRT (>= 10.9) and GPU: skipped wherever either is missing (everywhere we test today).

Registers the two plugins, chains them in a network through ``tensorrt.plugin.op`` (``Partials``,
then ``Combine`` completing ``Partials``' output in place), builds an engine with the AOT (PTX)
implementations and compares its output with the project's reference attention; then does the same
through the ONNX path ``gtc build`` takes (:func:`trt_plugins.engine.build_serialized_engine`,
which parses the model split by :func:`trt_plugins.onnx_op.split_for_tensorrt`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

trt = pytest.importorskip(
    "tensorrt", reason="TensorRT is not installed: pip install 'gtcompress[tensorrt]' on a machine with an NVIDIA GPU"
)
trtp = pytest.importorskip("tensorrt.plugin", reason="TensorRT >= 10.9 (tensorrt.plugin with aot_impl) is needed")

import onnx  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from gtcompress.nn.attention import sparse_attention  # noqa: E402
from trt_plugins import onnx_op, spec  # noqa: E402
from trt_plugins.csr import edge_index_to_csr  # noqa: E402
from trt_plugins.engine import build_serialized_engine  # noqa: E402
from trt_plugins.tensorrt_plugin import register_plugin  # noqa: E402

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="building a TensorRT engine needs a CUDA GPU")
N, E, H, D = 50, 1300, 2, 32  # E > CHUNK: rows are cut by chunk borders, so Combine merges partial states
TO_TRT = {torch.float32: trt.float32, torch.float16: trt.float16, torch.int32: trt.int32}


def test_plugins_are_in_the_registry() -> None:
    register_plugin()
    registry = trt.get_plugin_registry()
    for name in (spec.PARTIALS_PLUGIN_NAME, spec.COMBINE_PLUGIN_NAME):
        assert registry.get_creator(name, spec.PLUGIN_VERSION, spec.PLUGIN_NAMESPACE) is not None, name


def _inputs(dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """CUDA feeds in plugin input order (CSR, bias in CSR order) and the reference output (float64, CPU)."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(N, H, D, generator=g).to(dtype) for _ in range(3))
    ei = torch.randint(0, N - 2, (2, E), generator=g)  # the last two nodes get no edge: zero rows
    ei = torch.cat([ei, torch.stack([torch.randint(0, N, (600,), generator=g), torch.full((600,), 3)])], 1)  # a hub
    bias = torch.randn(ei.shape[1], H, generator=g).to(dtype)
    rowptr, col, perm = edge_index_to_csr(ei, N)
    feeds = {"q": q, "k": k, "v": v, "rowptr": rowptr, "col": col, "bias": bias[perm].contiguous()}
    ref = sparse_attention(q.double(), k.double(), v.double(), ei, bias.double())
    return {name: t.cuda() for name, t in feeds.items()}, ref


def _run(engine_bytes: bytes, feeds: dict[str, torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(engine_bytes)
    context = engine.create_execution_context()
    out = torch.empty(N, H, D, dtype=dtype, device="cuda")
    for name, t in feeds.items():
        context.set_input_shape(name, tuple(t.shape))
        context.set_tensor_address(name, t.data_ptr())
    context.set_tensor_address("out", out.data_ptr())
    stream = torch.cuda.current_stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return out


def _check(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    tol = 1e-5 if dtype == torch.float32 else 5e-3
    torch.testing.assert_close(out.cpu().double(), ref, atol=tol, rtol=tol)


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_plugin_chain_matches_reference(dtype: torch.dtype) -> None:
    register_plugin()
    feeds, ref = _inputs(dtype)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    tensors = {name: network.add_input(name, TO_TRT[t.dtype], tuple(t.shape)) for name, t in feeds.items()}
    attrs = spec.validate_attributes(H, D, spec.default_scale(D), True).as_dict()
    ns = getattr(trtp.op, spec.PLUGIN_NAMESPACE)
    partials_op = getattr(ns, spec.PARTIALS_PLUGIN_NAME)
    combine_op = getattr(ns, spec.COMBINE_PLUGIN_NAME)
    partials = network.add_plugin(partials_op(*tensors.values(), **attrs), aot=True)
    out_in, part = partials.get_output(0), partials.get_output(1)
    combine = network.add_plugin(combine_op(out_in, part, tensors["rowptr"], heads=H, head_dim=D), aot=True)
    combine.get_output(0).name = "out"
    network.mark_output(combine.get_output(0))
    engine_bytes = builder.build_serialized_network(network, builder.create_builder_config())
    assert engine_bytes is not None
    _check(_run(bytes(engine_bytes), feeds, dtype), ref, dtype)


def _onnx_file(path: Path) -> Path:
    """One ``SparseGraphAttention`` node with dynamic N and E, as the exporter writes it."""

    def vi(name: str, elem: int, shape: list) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, elem, shape)

    node = onnx_op.make_node(["q", "k", "v", "rowptr", "col", "bias"], ["out"], H, D, has_bias=True, name="att")
    inputs = [vi(x, TensorProto.FLOAT, ["N", H, D]) for x in "qkv"]
    inputs += [vi("rowptr", TensorProto.INT32, ["N1"]), vi("col", TensorProto.INT32, ["E"])]
    inputs += [vi("bias", TensorProto.FLOAT, ["E", H])]
    graph = helper.make_graph([node], "g", inputs, [vi("out", TensorProto.FLOAT, ["N", H, D])])
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid(onnx_op.DOMAIN, onnx_op.OPSET_VERSION)]
    onnx.save(helper.make_model(graph, opset_imports=opsets, ir_version=10), str(path))
    return path


@needs_gpu
def test_engine_from_onnx_matches_reference(tmp_path: Path) -> None:
    feeds, ref = _inputs(torch.float32)
    e = feeds["col"].shape[0]
    shapes = {  # min: one node, one edge; opt = max: this graph
        **{x: ((1, H, D), (N, H, D), (N, H, D)) for x in "qkv"},
        "rowptr": ((2,), (N + 1,), (N + 1,)),
        "col": ((1,), (e,), (e,)),
        "bias": ((1, H), (e, H), (e, H)),
    }
    plan = build_serialized_engine(_onnx_file(tmp_path / "att.onnx"), tmp_path / "att.plan", shapes, plugin=True)
    _check(_run(plan.read_bytes(), feeds, torch.float32), ref, torch.float32)
