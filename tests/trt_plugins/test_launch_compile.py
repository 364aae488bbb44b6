"""The kernels compile for the specializations a GPU launch makes, with no GPU.

The AOT tests (``test_aot.py``) compile the TensorRT signature: int32 ``rowptr``/``col`` and plain
int32 sizes. A launch from torch is specialized further by Triton's JIT: the torch op and the torch
serving backend pass int64 ``rowptr``/``col``, and an integer argument equal to 1 becomes a
compile-time constant (``n_nodes == 1``: a one-node graph; ``n_edges == 1``), which changes the
code Triton generates for the row searches and loops; kernel v1 (``bench/kernel.py``'s peer) is
launched the same way. A kernel that fails to compile for one of these fails only on the GPU, the
resource this project gets least of.

Each case goes through the real launcher with CPU tensors, the interpreter switched off, and the
``JITFunction`` asked to *warm up* (compile, not launch) against a stand-in driver that names an
sm_90 target: Triton's own binder specializes the arguments as it would on the GPU, and the
compile runs to a cubin with Triton's bundled ``ptxas``. Skipped, with the reason, where the
installed Triton has no NVIDIA backend or no ``ptxas``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from triton.runtime.jit import JITFunction

from trt_plugins import _kernel_v1, kernels, kernels_v1, spec
from trt_plugins.csr import edge_index_to_csr

CC = 90  # H100/H200, the GPU run's machines; sm_80's code paths are compiled by test_aot.py


class _OfflineDriver:
    """What ``JITFunction.run(warmup=True)`` asks of the active driver: a device, a stream, a target.
    Anything else raises, so a Triton that needs more fails loudly instead of compiling by accident."""

    def get_current_device(self) -> int:
        return CC

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_current_target(self) -> Any:
        from triton.backends.compiler import GPUTarget

        return GPUTarget("cuda", CC, 32)


class _Warm:
    """Stands for a ``JITFunction`` in the launcher: ``fn[grid](*args)`` compiles, and records."""

    def __init__(self, jit: Any, compiled: list[Any]) -> None:
        self.jit, self.compiled = jit, compiled

    def __getitem__(self, grid: Any) -> Any:
        return lambda *args, **kw: self.compiled.append(self.jit.warmup(*args, grid=grid, **kw))


@pytest.fixture
def compiled(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[list[Any]]:
    """The kernels the launchers compile during a test, for sm_90, with no GPU, into an empty
    Triton cache (so that each is compiled, not loaded)."""
    pytest.importorskip("triton.backends.nvidia.compiler", reason="this Triton has no NVIDIA backend")
    from triton.backends.nvidia.compiler import get_ptxas
    from triton.runtime.driver import driver

    try:
        assert get_ptxas(CC).path  # the binary the compile will run for this target (it differs by version)
    except Exception as err:  # which error depends on the Triton version
        pytest.skip(f"Triton's ptxas is not available ({err}): nothing can be compiled offline")
    out: list[Any] = []
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton"))
    # fresh JITFunctions: their per-device binders must be made under the stand-in driver
    jits = {name: JITFunction(kernels._SOURCES[name]) for name in spec.KERNELS}
    v1 = JITFunction(_kernel_v1.sparse_graph_attention_fwd)
    monkeypatch.setattr(kernels, "_use_interpreter", lambda device: False)
    monkeypatch.setattr(kernels, "jit_kernel", lambda name: _Warm(jits[name], out))
    monkeypatch.setattr(kernels_v1, "_interpreted", lambda: _Warm(v1, out))
    before = driver._active  # None until first used; reset_active() would create a driver, which needs a GPU
    driver.set_active(_OfflineDriver())  # type: ignore[arg-type]
    try:
        yield out
    finally:
        driver._active = before


def _inputs(n: int, e: int, heads: int, head_dim: int, dtype: torch.dtype, index: torch.dtype) -> tuple[Any, ...]:
    g = torch.Generator().manual_seed(n + e)
    edge_index = torch.randint(0, n, (2, e), generator=g)
    rowptr, col, _ = edge_index_to_csr(edge_index, n, index)
    q = torch.randn(n, heads, head_dim, generator=g).to(dtype)
    bias = torch.randn(e, heads, generator=g).to(dtype)
    return q, rowptr, col, bias


def _specialization(kernel: Any) -> dict[str, str]:
    """The signature Triton compiled ``kernel`` for, by argument name."""
    return {name: str(kernel.src.signature[name]) for name in ("rowptr", "n_nodes", "n_edges")}


F32, F16, BF16, I32, I64 = torch.float32, torch.float16, torch.bfloat16, torch.int32, torch.int64
#: (n_nodes, n_edges, dtype, index dtype): every dtype with both sizes 1 and int64 indices (the torch
#: op's one-node graph), each size alone equal to 1, no edges, and none specialized.
V2_CASES = [
    (1, 1, F32, I64),
    (1, 1, F16, I64),
    (1, 1, BF16, I64),
    (1, 1, F32, I32),
    (1, 0, F16, I64),
    (37, 1, F32, I32),
    (37, 45, BF16, I64),
    (37, 45, F16, I32),
]


@pytest.mark.parametrize(
    ("n", "e", "dtype", "index"), V2_CASES, ids=[f"n{n}-e{e}-{d}-{i}".replace("torch.", "") for n, e, d, i in V2_CASES]
)
def test_v2_compiles_for_each_launch_specialization(
    compiled: list[Any], n: int, e: int, dtype: torch.dtype, index: torch.dtype
) -> None:
    """Both kernels, with a bias, compile for the signature Triton derives from the launch."""
    q, rowptr, col, bias = _inputs(n, e, 4, 16, dtype, index)
    kernels.sparse_graph_attention(q, q, q, rowptr, col, bias)
    assert [k.metadata.name for k in compiled] == ["sga_partials", "sga_combine"]
    pointer = "*i64" if index == torch.int64 else "*i32"
    expected = {
        "rowptr": pointer,
        "n_nodes": "constexpr" if n == 1 else "i32",
        "n_edges": "constexpr" if e == 1 else "i32",
    }
    for k in compiled:
        assert _specialization(k) == expected
        assert k.asm["cubin"], "no cubin: ptxas did not assemble the kernel"


@pytest.mark.parametrize("aggregate", ["dot", "mma"])
def test_tensor_core_variants_compile_for_a_one_node_graph_with_int64_indices(
    compiled: list[Any], aggregate: str
) -> None:
    """The sweep's product variants (fp16 8x64, two warps) on the torch op's int64 indices, n == E == 1."""
    rule = spec.rule_config(8, 64, "float16")
    config = spec.KernelConfig(16, rule.chunk // 16, rule.block_h, rule.block_d, num_warps=2, aggregate=aggregate)
    q, rowptr, col, bias = _inputs(1, 1, 8, 64, torch.float16, torch.int64)
    kernels.sparse_graph_attention(q, q, q, rowptr, col, bias, config=config)
    assert [_specialization(k)["n_nodes"] for k in compiled] == ["constexpr", "constexpr"]
    assert all(k.asm["cubin"] for k in compiled)


@pytest.mark.parametrize("index", [torch.int32, torch.int64], ids=["int32", "int64"])
@pytest.mark.parametrize(("n", "e"), [(1, 1), (37, 45)])
def test_v1_compiles_for_each_launch_specialization(compiled: list[Any], n: int, e: int, index: torch.dtype) -> None:
    """Kernel v1, ``bench/kernel.py``'s peer, on the benchmark's int32 and the torch op's int64 indices."""
    q, rowptr, col, bias = _inputs(n, e, 4, 16, torch.float16, index)
    kernels_v1.sparse_graph_attention_v1(q, q, q, rowptr, col, bias)
    (k,) = compiled
    assert k.metadata.name == "sparse_graph_attention_fwd" and k.asm["cubin"]
    assert str(k.src.signature["rowptr"]) == ("*i64" if index == torch.int64 else "*i32")
    assert str(k.src.signature["n_nodes"]) == ("constexpr" if n == 1 else "i32")


def test_the_jit_compiles_with_fp_fusion_whatever_triton_default_fp_fusion_says(
    compiled: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """TRITON_DEFAULT_FP_FUSION=0 (Triton 3.10's default) turned FMA contraction off for launches that
    named no option, so the torch op's kernels rounded unlike the AOT PTX the TensorRT plugin runs. The
    launchers pin it: the binaries Triton compiles for them have it on. The same launches without the
    option (the control) compile without it under this variable, with fewer FMAs in the PTX."""
    monkeypatch.setenv("TRITON_DEFAULT_FP_FUSION", "0")
    q, rowptr, col, bias = _inputs(37, 45, 4, 16, torch.float32, torch.int32)
    kernels.sparse_graph_attention(q, q, q, rowptr, col, bias)
    kernels_v1.sparse_graph_attention_v1(q.half(), q.half(), q.half(), rowptr, col, bias.half())
    assert [(k.metadata.name, k.metadata.enable_fp_fusion) for k in compiled] == [
        ("sga_partials", True),
        ("sga_combine", True),
        ("sparse_graph_attention_fwd", True),
    ]
    # the control: the same launches with the option taken out compile without fusion here
    jits = {name: JITFunction(kernels._SOURCES[name]) for name in spec.KERNELS}
    unpinned: list[Any] = []

    class _Unpinned:
        def __init__(self, jit: Any) -> None:
            self.jit = jit

        def __getitem__(self, grid: Any) -> Any:
            def warm(*args: Any, **kw: Any) -> None:
                kw.pop("enable_fp_fusion")
                unpinned.append(self.jit.warmup(*args, grid=grid, **kw))

            return warm

    monkeypatch.setattr(kernels, "jit_kernel", lambda name: _Unpinned(jits[name]))
    kernels.sparse_graph_attention(q, q, q, rowptr, col, bias)
    assert [k.metadata.enable_fp_fusion for k in unpinned] == [False, False]
    fmas = [k.asm["ptx"].count("fma.rn.f32") for k in (compiled[0], unpinned[0])]
    assert fmas[0] > fmas[1], fmas  # the two round differently: contracted a * b + c, or not
