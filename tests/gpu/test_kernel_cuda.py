"""Kernel v2 on a real GPU: parity, the torch op's CUDA registration, compile / CUDA graphs, AOT PTX.

Skipped on machines without a CUDA GPU (CI). The device run of the GPU issue executes these
(``bench/gpu_check.sh``); everything checkable without a GPU is tested in ``tests/trt_plugins``
under Triton's interpreter and by AOT compilation.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)")

from gtcompress.nn import fused  # noqa: E402  (registers the op and its CUDA kernel)
from gtcompress.nn.attention import sparse_attention  # noqa: E402
from trt_plugins import aot, spec  # noqa: E402
from trt_plugins.csr import edge_index_to_csr  # noqa: E402
from trt_plugins.kernels import sparse_graph_attention  # noqa: E402

TOL = {torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}


def graph(n: int, e: int, seed: int, hub: int = 0) -> torch.Tensor:
    """Random edges, duplicates, a self-loop, isolated last nodes, optionally a hub with ``hub`` in-edges."""
    g = torch.Generator().manual_seed(seed)
    if n == 0:
        return torch.zeros(2, 0, dtype=torch.long)
    keep = max(1, n - 2)
    ei = torch.stack([torch.randint(0, n, (e,), generator=g), torch.randint(0, keep, (e,), generator=g)])
    if e:
        parts = [ei, ei[:, :3], torch.tensor([[0], [0]])]
        if hub:
            parts.append(torch.stack([torch.randint(0, n, (hub,), generator=g), torch.full((hub,), 1)]))
        ei = torch.cat(parts, dim=1)
    return ei


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ei: torch.Tensor, bias: torch.Tensor | None):
    b = None if bias is None else bias.double().cpu()
    return sparse_attention(q.double().cpu(), k.double().cpu(), v.double().cpu(), ei.cpu(), b)


F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
CASES = [
    # n, e, heads, head_dim, dtype, bias
    (1, 0, 1, 16, F32, False),  # one node, no edges
    (1, 1, 4, 32, F32, True),  # one node, a self-loop
    (6, 0, 2, 64, F16, True),  # no edges at all
    (500, 3000, 4, 32, F32, True),  # a hub of 3000 in-edges (several chunks) in every case from here
    (500, 3000, 4, 32, F16, False),
    (500, 3000, 4, 32, BF16, True),
    (300, 2000, 2, 64, F32, False),
    (300, 2000, 2, 64, F16, True),
    (400, 2500, 1, 128, F32, True),
    (400, 2500, 1, 128, BF16, False),
    (700, 4000, 3, 24, F32, True),  # heads and head size not powers of two
    (700, 4000, 3, 24, F16, False),
    (5000, 40000, 4, 16, F32, False),
    (5000, 40000, 4, 16, F16, True),
    (5000, 40000, 4, 16, BF16, False),
    (4000, 30000, 8, 64, F16, False),
]


@pytest.mark.parametrize(("n", "e", "heads", "head_dim", "dtype", "with_bias"), CASES)
def test_v2_matches_reference(n: int, e: int, heads: int, head_dim: int, dtype: torch.dtype, with_bias: bool) -> None:
    ei = graph(n, e, seed=n + e, hub=3000 if e >= 2000 else 0)  # the hub spans several chunks
    g = torch.Generator().manual_seed(e)
    q, k, v = (torch.randn(n, heads, head_dim, generator=g).to(dtype).cuda() for _ in range(3))
    bias = torch.randn(ei.shape[1], heads, generator=g).to(dtype).cuda() if with_bias else None
    rowptr, col, perm = edge_index_to_csr(ei.cuda(), n)
    out = sparse_graph_attention(q, k, v, rowptr, col, None if bias is None else bias[perm])
    ref = reference(q, k, v, ei, bias)
    torch.testing.assert_close(out.double().cpu(), ref, atol=TOL[dtype], rtol=TOL[dtype])


#: One case per dtype and head shape family (each is a fresh JIT compile on the device run's clock).
DOT_CASES = [CASES[i] for i in (3, 5, 7, 10, 13, 15)]


@pytest.mark.parametrize("aggregate", ["dot", "mma"])
@pytest.mark.parametrize(("n", "e", "heads", "head_dim", "dtype", "with_bias"), DOT_CASES)
def test_tensor_core_products_match_reference(
    n: int, e: int, heads: int, head_dim: int, dtype: torch.dtype, with_bias: bool, aggregate: str
) -> None:
    """The sweep's tensor-core variants keep each dtype's tolerance: "dot" (the sum as TF32 products,
    two of them split at the TF32 mantissa for float32) and "mma" (scores and sums as per-head
    products: fp16 as loaded, bf16 and float32 in TF32, three products for float32). Float32 must
    not degrade to TF32's 10-bit mantissa."""
    ei = graph(n, e, seed=n + e, hub=3000)
    g = torch.Generator().manual_seed(e)
    q, k, v = (torch.randn(n, heads, head_dim, generator=g).to(dtype).cuda() for _ in range(3))
    bias = torch.randn(ei.shape[1], heads, generator=g).to(dtype).cuda() if with_bias else None
    rowptr, col, perm = edge_index_to_csr(ei.cuda(), n)
    rule = spec.select_config(heads, head_dim, spec_dtype(dtype))
    tile = max(spec.MIN_DOT, rule.tile_e)
    # two warps, as the sweep's first variant (the rule's one warp is covered above)
    config = dataclasses.replace(rule, tile_e=tile, tiles=max(1, rule.chunk // tile), num_warps=2, aggregate=aggregate)
    out = sparse_graph_attention(q, k, v, rowptr, col, None if bias is None else bias[perm], config=config)
    ref = reference(q, k, v, ei, bias)
    torch.testing.assert_close(out.double().cpu(), ref, atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.parametrize(("n", "e", "heads", "head_dim", "dtype", "with_bias"), [CASES[i] for i in (3, 13, 15)])
def test_four_warps_with_prefetch_match_reference(
    n: int, e: int, heads: int, head_dim: int, dtype: torch.dtype, with_bias: bool
) -> None:
    """The rule runs one warp per program; the sweep also times four warps with prefetch (the rule
    before), where the scans and reductions cross warps: they must agree as well."""
    ei = graph(n, e, seed=n + e, hub=3000)
    g = torch.Generator().manual_seed(e)
    q, k, v = (torch.randn(n, heads, head_dim, generator=g).to(dtype).cuda() for _ in range(3))
    bias = torch.randn(ei.shape[1], heads, generator=g).to(dtype).cuda() if with_bias else None
    rowptr, col, perm = edge_index_to_csr(ei.cuda(), n)
    config = dataclasses.replace(spec.rule_config(heads, head_dim, spec_dtype(dtype)), num_warps=4, prefetch=True)
    out = sparse_graph_attention(q, k, v, rowptr, col, None if bias is None else bias[perm], config=config)
    torch.testing.assert_close(out.double().cpu(), reference(q, k, v, ei, bias), atol=TOL[dtype], rtol=TOL[dtype])


def spec_dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def test_power_law_hub_of_a_million_edges() -> None:
    """One row holds most of the edges: split over thousands of chunks and merged by combine."""
    n, e = 2000, 1_200_000
    g = torch.Generator(device="cuda").manual_seed(0)
    dst = torch.where(torch.rand(e, device="cuda", generator=g) < 0.9, 7, torch.randint(0, n, (e,), device="cuda"))
    ei = torch.stack([torch.randint(0, n, (e,), device="cuda", generator=g), dst])
    q, k, v = (torch.randn(n, 4, 16, device="cuda", generator=g) for _ in range(3))
    rowptr, col, _ = edge_index_to_csr(ei, n)
    out = sparse_graph_attention(q, k, v, rowptr, col)
    ref = sparse_attention(q.double(), k.double(), v.double(), ei)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=2e-5)


def test_torch_op_runs_the_triton_kernel_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    import trt_plugins.kernels as kernels

    calls = []
    real = kernels.sparse_graph_attention
    monkeypatch.setattr(kernels, "sparse_graph_attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    ei = graph(300, 2000, seed=1)
    q, k, v = (torch.randn(300, 4, 16, device="cuda") for _ in range(3))
    rowptr, col, _ = fused.csr_from_edge_index(ei.cuda(), 300)
    out = torch.ops.gtcompress.sparse_graph_attention(q, k, v, rowptr, col, None, 0.25)
    assert calls == [1]
    torch.testing.assert_close(out.double().cpu(), reference(q, k, v, ei, None), atol=2e-5, rtol=2e-5)


def test_launcher_never_synchronises() -> None:
    """No device-to-host copy on the hot path: the op can be captured in a CUDA graph."""
    ei = graph(300, 2000, seed=2, hub=500).cuda()
    q, k, v = (torch.randn(300, 2, 32, device="cuda") for _ in range(3))
    rowptr, col, _ = fused.csr_from_edge_index(ei, 300)
    torch.ops.gtcompress.sparse_graph_attention(q, k, v, rowptr, col, None, 0.2)  # compile outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        torch.ops.gtcompress.sparse_graph_attention(q, k, v, rowptr, col, None, 0.2)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_csr_builder_never_synchronises() -> None:
    """The model's own CSR (built per call on the device) stays capturable too."""
    ei = graph(300, 2000, seed=2, hub=500).cuda()
    fused.csr_from_edge_index(ei, 300)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fused.csr_from_edge_index(ei, 300)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_op_under_torch_compile_and_cuda_graph() -> None:
    ei = graph(400, 3000, seed=3, hub=800).cuda()
    q, k, v = (torch.randn(400, 4, 16, device="cuda") for _ in range(3))
    rowptr, col, _ = fused.csr_from_edge_index(ei, 400)

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.ops.gtcompress.sparse_graph_attention(q * 2, k, v, rowptr, col, None, 0.25) + 1

    eager = attend(q, k, v)
    compiled = torch.compile(attend, fullgraph=True)(q, k, v)
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)

    static = [t.clone() for t in (q, k, v)]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        attend(*static)
    torch.cuda.current_stream().wait_stream(side)
    cuda_graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(cuda_graph):
        out = attend(*static)
    new = [torch.randn_like(t) for t in static]
    for s, t in zip(static, new, strict=True):
        s.copy_(t)
    cuda_graph.replay()
    torch.testing.assert_close(out, attend(*new), atol=1e-5, rtol=1e-5)


def test_a_variant_warmed_up_in_another_process_launches_from_triton_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``bench/kernel.py`` compiles its sweep's variants in worker processes (``kernels.warm_up``);
    a launch here must then load both kernels from Triton's on-disk cache, compiling none anew.
    A head shape no other test uses keeps this process's in-memory cache out of it."""
    from bench.kernel_precompile import jobs_for, precompile

    cache = tmp_path / "triton"
    monkeypatch.setenv("TRITON_CACHE_DIR", str(cache))  # read by Triton at each compile, and by the worker
    n, e, heads, head_dim = 2000, 16000, 5, 20
    config = spec.rule_config(heads, head_dim, "float32")
    report = precompile(jobs_for([("fp32", heads, head_dim, config)], [(n, e, "int32")]), timeout_s=120, workers=1)
    assert report.get("compiled") == 1, report

    def binaries() -> list[str]:
        return sorted(str(p.relative_to(cache)) for p in cache.rglob("sga_*.cubin"))

    warmed = binaries()
    assert len(warmed) == 2, warmed  # partials and combine
    g = torch.Generator().manual_seed(5)
    ei = torch.stack([torch.randint(0, n, (e,), generator=g), torch.randint(0, n, (e,), generator=g)])
    q, k, v = (torch.randn(n, heads, head_dim, generator=g).cuda() for _ in range(3))
    rowptr, col, _ = edge_index_to_csr(ei.cuda(), n)
    out = sparse_graph_attention(q, k, v, rowptr.int(), col.int(), config=config)
    assert binaries() == warmed
    torch.testing.assert_close(out.double().cpu(), reference(q, k, v, ei, None), atol=2e-5, rtol=2e-5)


def test_gtcompress_model_on_cuda_uses_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    import trt_plugins.kernels as kernels
    from gtcompress.data.base import FeatureSpec
    from gtcompress.models import ModelConfig, build_model

    cfg = ModelConfig(arch="gt", node_features=FeatureSpec("float", 8), out_dim=3, hidden=32, heads=4)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    ei = graph(200, 900, seed=4, hub=300)
    x = torch.randn(200, 8)
    batch = torch.zeros(200, dtype=torch.long)
    with torch.inference_mode():
        cpu = model.compute(x, ei, None, batch, {}, 1)
        calls = []
        real = kernels.sparse_graph_attention
        monkeypatch.setattr(kernels, "sparse_graph_attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
        gpu = model.cuda().compute(x.cuda(), ei.cuda(), None, batch.cuda(), {}, 1)
    assert len(calls) == cfg.num_layers
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_aot_ptx_runs_with_the_plugin_arguments(dtype: str, tmp_path: Path) -> None:
    """PTX from trt_plugins.aot (what TensorRT bakes into an engine), loaded with cupy and launched
    with exactly the plugins' argument lists and grids: partials, then combine in place."""
    cupy = pytest.importorskip("cupy", reason="cupy loads raw PTX here")
    major, minor = torch.cuda.get_device_capability()
    cc = 90 if major == 9 else major * 10 + minor
    n, heads, head_dim = 3000, 4, 32
    ei = graph(n, 20000, seed=5, hub=5000)
    tdt = getattr(torch, dtype)
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(n, heads, head_dim, generator=g).to(tdt).cuda() for _ in range(3))
    bias = torch.randn(ei.shape[1], heads, generator=g).to(tdt).cuda()
    rowptr, col, perm = edge_index_to_csr(ei.cuda(), n)
    bias_csr = bias[perm].contiguous()
    e = int(col.numel())
    out = torch.empty_like(q)
    compiled = {
        name: aot.compile_kernel(name, dtype, heads, head_dim, cc, None, True, cache_root=tmp_path)
        for name in spec.KERNELS
    }
    part = torch.empty(spec.part_shape(e, heads, head_dim, compiled["partials"].kernel_config), device="cuda")

    def ptr(t: torch.Tensor) -> np.uint64:
        return np.uint64(t.data_ptr())

    args = {
        "partials": [
            *(ptr(t) for t in (q, k, v, rowptr, col, bias_csr)),
            np.int32(n),
            np.int32(e),
            ptr(out),
            ptr(part),
        ],
        "combine": [ptr(out), ptr(part), ptr(rowptr), np.int32(n), np.int32(e), ptr(out)],
    }
    torch.cuda.synchronize()
    for name in spec.KERNELS:  # partials, then combine
        c = compiled[name]
        (tmp_path / f"{name}.ptx").write_text(c.ptx)
        fn = cupy.RawModule(path=str(tmp_path / f"{name}.ptx")).get_function(c.kernel_name)
        fn(c.launch_grid(n, e, heads), (c.threads_per_block, 1, 1), tuple(args[name]), shared_mem=c.shared_mem)
        cupy.cuda.runtime.deviceSynchronize()
    ref = reference(q, k, v, ei, bias)
    torch.testing.assert_close(out.double().cpu(), ref, atol=TOL[tdt], rtol=TOL[tdt])
    assert math.isfinite(float(out.float().abs().max()))


def test_backward_never_synchronises() -> None:
    """The op's gradient (the reference, recomputed) takes no host value either: a training step stays
    capturable and compiles without a graph break per layer (``repeat_interleave`` gets its size)."""
    ei = graph(300, 2000, seed=4, hub=500).cuda()
    q, k, v = (torch.randn(300, 2, 32, device="cuda", requires_grad=True) for _ in range(3))
    rowptr, col, _ = fused.csr_from_edge_index(ei, 300)
    torch.ops.gtcompress.sparse_graph_attention(q, k, v, rowptr, col, None, 0.2).sum().backward()  # warm
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        torch.ops.gtcompress.sparse_graph_attention(q, k, v, rowptr, col, None, 0.2).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize(("dtype", "head_dim"), [(torch.float64, 16), (torch.float32, 300)])
def test_inputs_the_kernel_does_not_take_run_the_reference(dtype: torch.dtype, head_dim: int) -> None:
    """A float64 model (from_pyg keeps a PyG model's dtype) or heads wider than the kernel's 256 pick the
    fused op on a GPU as any GT does; they get the reference's answer, not a PluginSpecError."""
    ei = graph(200, 1000, seed=5).cuda()
    q, k, v = (torch.randn(200, 2, head_dim, device="cuda", dtype=dtype) for _ in range(3))
    rowptr, col, _ = fused.csr_from_edge_index(ei, 200)
    out = torch.ops.gtcompress.sparse_graph_attention(q, k, v, rowptr, col, None, head_dim**-0.5)
    assert out.dtype == dtype and out.device.type == "cuda"
    torch.testing.assert_close(out.double().cpu(), reference(q, k, v, ei, None), atol=1e-4, rtol=1e-4)
