"""``trt_plugins.kernels.warm_up`` asks Triton for the binaries the launcher will launch.

A GPU benchmark compiles its kernel variants in parallel processes with ``warm_up`` and launches
them later from its own process, where Triton finds them in its on-disk cache only if both asked
with the same arguments: the same order, constants, warps and grid, and a dtype wherever the
launcher passes a tensor of that dtype (Triton's ``MockTensor`` stands for an aligned tensor).
Compiling needs a GPU; what is checked here is what each side hands Triton, recorded.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from trt_plugins import kernels, spec
from trt_plugins.csr import edge_index_to_csr


class Recorder:
    """Stands for a ``JITFunction``: records ``fn[grid](*args, **kw)`` and ``fn.warmup(...)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, tuple[Any, ...], dict[str, Any]]] = []

    def __getitem__(self, grid: Any) -> Any:
        return lambda *args, **kw: self.calls.append(("launch", grid, args, kw))

    def warmup(self, *args: Any, grid: Any, **kw: Any) -> None:
        self.calls.append(("warmup", grid, args, kw))


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize(("dtype", "heads", "head_dim"), [(torch.float16, 8, 64), (torch.float32, 3, 24)])
def test_warm_up_asks_for_what_the_launcher_launches(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, heads: int, head_dim: int, with_bias: bool
) -> None:
    recorders = {name: Recorder() for name in spec.KERNELS}
    monkeypatch.setattr(kernels, "jit_kernel", recorders.__getitem__)
    monkeypatch.setattr(kernels, "_use_interpreter", lambda device: False)
    n, e = 32, 48  # multiples of 16, as the benchmark's graphs
    g = torch.Generator().manual_seed(0)
    rowptr, col, _ = edge_index_to_csr(torch.randint(0, n, (2, e), generator=g), n)
    q = torch.randn(n, heads, head_dim, generator=g).to(dtype)
    bias = torch.randn(e, heads, generator=g).to(dtype) if with_bias else None
    config = spec.select_config(heads, head_dim, str(dtype).removeprefix("torch."))

    kernels.sparse_graph_attention(q, q, q, rowptr.int(), col.int(), bias, config=config)
    kernels.warm_up(dtype, torch.int32, heads, head_dim, n, e, config, has_bias=with_bias)

    for name, rec in recorders.items():
        (kind_l, grid_l, args_l, kw_l), (kind_w, grid_w, args_w, kw_w) = rec.calls
        assert (kind_l, kind_w) == ("launch", "warmup")
        assert grid_l == grid_w == spec.grid(name, n, e, heads, config)
        assert kw_l == kw_w and kw_l["num_warps"] == spec.kernel_warps(name, config)
        assert len(args_l) == len(args_w) == len(spec.KERNEL_ARGS[name])
        for arg, launch, warm in zip(spec.KERNEL_ARGS[name], args_l, args_w, strict=True):
            expected = launch.dtype if isinstance(launch, torch.Tensor) else launch
            assert warm == expected, (name, arg)


def test_warm_up_refuses_a_config_narrower_than_the_head() -> None:
    narrow = spec.KernelConfig(tile_e=16, tiles=32, block_h=2, block_d=32)
    with pytest.raises(spec.PluginSpecError, match="config block_d 32 is smaller than head_dim 64"):
        kernels.warm_up(torch.float16, torch.int32, 8, 64, 32, 48, narrow)


@pytest.mark.parametrize("default_fp_fusion", [None, "0", "1"])
def test_every_jit_launch_asks_for_the_fp_fusion_the_aot_ptx_has(
    monkeypatch: pytest.MonkeyPatch, default_fp_fusion: str | None
) -> None:
    """The AOT compile (the PTX TensorRT loads) asks for FP fusion; the launcher, warm-up and kernel v1
    asked for nothing, so Triton's default applied: TRITON_DEFAULT_FP_FUSION=0, or Triton 3.10's
    default, compiles the torch op's kernels without FMA contraction, rounding unlike the plugin."""
    from trt_plugins import kernels_v1

    if default_fp_fusion is None:
        monkeypatch.delenv("TRITON_DEFAULT_FP_FUSION", raising=False)
    else:
        monkeypatch.setenv("TRITON_DEFAULT_FP_FUSION", default_fp_fusion)
    recorders = {name: Recorder() for name in (*spec.KERNELS, "v1")}
    monkeypatch.setattr(kernels, "jit_kernel", recorders.__getitem__)
    monkeypatch.setattr(kernels, "_use_interpreter", lambda device: False)
    monkeypatch.setattr(kernels_v1, "_interpreted", lambda: recorders["v1"])  # CPU tensors take this path
    n, e, heads, head_dim = 32, 48, 2, 16
    g = torch.Generator().manual_seed(0)
    rowptr, col, _ = edge_index_to_csr(torch.randint(0, n, (2, e), generator=g), n)
    q = torch.randn(n, heads, head_dim, generator=g)
    config = spec.select_config(heads, head_dim, "float32")

    kernels.sparse_graph_attention(q, q, q, rowptr, col)
    kernels.warm_up(torch.float32, torch.int64, heads, head_dim, n, e, config)
    kernels_v1.sparse_graph_attention_v1(q, q, q, rowptr, col)

    asked = {name: [(kind, kw.get("enable_fp_fusion")) for kind, _, _, kw in r.calls] for name, r in recorders.items()}
    assert spec.FP_FUSION is True
    assert asked == {
        "partials": [("launch", True), ("warmup", True)],
        "combine": [("launch", True), ("warmup", True)],
        "v1": [("launch", True)],
    }
