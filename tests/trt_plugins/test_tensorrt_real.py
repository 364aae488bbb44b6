"""Against a real TensorRT (>= 10.9) and GPU: skipped wherever either is missing (everywhere we test today).

Registers the plugin, adds it to a network through ``tensorrt.plugin.op``, builds an engine with
the AOT (PTX) implementation and compares its output with the project's reference attention.
"""

from __future__ import annotations

import pytest
import torch

trt = pytest.importorskip(
    "tensorrt", reason="TensorRT is not installed: pip install 'gtcompress[tensorrt]' on a machine with an NVIDIA GPU"
)
trtp = pytest.importorskip("tensorrt.plugin", reason="TensorRT >= 10.9 (tensorrt.plugin with aot_impl) is needed")

from gtcompress.nn.attention import sparse_attention  # noqa: E402
from trt_plugins import spec  # noqa: E402
from trt_plugins.csr import edge_index_to_csr  # noqa: E402
from trt_plugins.tensorrt_plugin import register_plugin  # noqa: E402


def test_plugin_is_in_the_registry() -> None:
    register_plugin()
    creator = trt.get_plugin_registry().get_creator(spec.PLUGIN_NAME, spec.PLUGIN_VERSION, spec.PLUGIN_NAMESPACE)
    assert creator is not None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="building a TensorRT engine needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_engine_matches_reference(dtype: torch.dtype) -> None:
    register_plugin()
    n, e, h, d = 50, 300, 2, 32
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(n, h, d, generator=g).to(dtype) for _ in range(3))
    ei = torch.randint(0, n, (2, e), generator=g)
    bias = torch.randn(e, h, generator=g).to(dtype)
    rowptr, col, perm = edge_index_to_csr(ei, n)
    feeds = {"q": q, "k": k, "v": v, "rowptr": rowptr, "col": col, "bias": bias[perm].contiguous()}
    feeds = {name: t.cuda() for name, t in feeds.items()}

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    to_trt = {torch.float32: trt.float32, torch.float16: trt.float16, torch.int32: trt.int32}
    tensors = [network.add_input(name, to_trt[t.dtype], tuple(t.shape)) for name, t in feeds.items()]
    attrs = spec.validate_attributes(h, d, spec.default_scale(d), True).as_dict()
    op = getattr(getattr(trtp.op, spec.PLUGIN_NAMESPACE), spec.PLUGIN_NAME)
    layer = network.add_plugin(op(*tensors, **attrs), aot=True)
    layer.get_output(0).name = "out"
    network.mark_output(layer.get_output(0))
    engine_bytes = builder.build_serialized_network(network, builder.create_builder_config())
    assert engine_bytes is not None
    engine = trt.Runtime(logger).deserialize_cuda_engine(engine_bytes)
    context = engine.create_execution_context()
    out = torch.empty(n, h, d, dtype=dtype, device="cuda")
    for name, t in feeds.items():
        context.set_tensor_address(name, t.data_ptr())
    context.set_tensor_address("out", out.data_ptr())
    stream = torch.cuda.current_stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()

    ref = sparse_attention(q.double(), k.double(), v.double(), ei, bias.double())
    tol = 1e-5 if dtype == torch.float32 else 5e-3
    torch.testing.assert_close(out.cpu().double(), ref, atol=tol, rtol=tol)
