"""``bench/kernel_sweep.py``: which variants the sweep times, in which order, and what it keeps.

The timing itself needs a GPU (``bench/gpu_check.sh``); here ``_time_variant`` is replaced by a
record of the calls, so that the order a sweep cut short relies on and the choice of winners are
checked without one."""

from __future__ import annotations

import argparse
import math
import time
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from bench import kernel_sweep
from bench.kernel_workloads import SPEC_DTYPE, power_law_graph, uniform_graph
from trt_plugins import spec


@pytest.mark.parametrize(("dtype", "heads", "head_dim"), kernel_sweep.SWEEP_FAMILIES)
def test_variants_start_with_the_rule_then_few_warps_and_are_distinct(dtype: str, heads: int, head_dim: int) -> None:
    variants = kernel_sweep.sweep_variants(heads, head_dim, SPEC_DTYPE[dtype])
    labels, configs = list(variants), list(variants.values())
    assert labels[0] == "rule" and configs[0] == spec.rule_config(heads, head_dim, SPEC_DTYPE[dtype])
    assert len(set(configs)) == len(configs) and len(labels) >= 10
    # any of them may be carried into spec.TUNED: none changes the chunk the TensorRT plugins size by
    assert {c.chunk for c in configs} == {spec.TARGET_CHUNK}
    for c in configs:
        spec.check_tuned(heads, head_dim, SPEC_DTYPE[dtype], c)
    assert all(kernel_sweep.variant_label(c) == label for label, c in variants.items() if label != "rule")
    # the statically cheapest per edge come first: one or two warps, tensor-core products leading,
    # per-head ones for wide 16-bit heads only, and a one-warp scan among the first eight
    assert all(c.num_warps <= 2 for c in configs[1:6]) and all(c.aggregate != "scan" for c in configs[1:3])
    assert any(c.aggregate == "scan" and c.num_warps == 1 for c in configs[1:9])
    assert any(c.aggregate == "mma" for c in configs) == (dtype == "fp16" and head_dim == 64)


def test_an_earlier_winner_is_timed_again_right_after_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    rule = spec.rule_config(4, 16, "float32")
    earlier = spec.KernelConfig(tile_e=32, tiles=16, block_h=4, block_d=16, num_warps=1, aggregate="dot")
    monkeypatch.setitem(spec.TUNED, (4, 16, "float32"), earlier)
    variants = kernel_sweep.sweep_variants(4, 16, "float32")
    assert list(variants.items())[:2] == [("rule", rule), (kernel_sweep.variant_label(earlier), earlier)]


def test_families_are_parsed_or_named() -> None:
    assert kernel_sweep.parse_families("fp32:4x16, fp16:8x64") == [("fp32", 4, 16), ("fp16", 8, 64)]
    with pytest.raises(argparse.ArgumentTypeError, match="a family looks like DTYPE:HEADSxHEAD_DIM"):
        kernel_sweep.parse_families("fp64:4x16")
    with pytest.raises(argparse.ArgumentTypeError, match="a family looks like DTYPE:HEADSxHEAD_DIM"):
        kernel_sweep.parse_families("fp32:4x1²")  # str.isdigit() took '²', then int() raised a ValueError
    with pytest.raises(
        argparse.ArgumentTypeError, match=r"family 'bf16:2x300': head_dim must be in \[1, 256\], got 300"
    ):
        kernel_sweep.parse_families("fp32:4x16,bf16:2x300")


def test_the_sweep_times_families_in_rounds_and_keeps_each_fastest(monkeypatch: pytest.MonkeyPatch) -> None:
    families = (("fp32", 4, 16), ("fp16", 8, 64))
    monkeypatch.setattr(spec, "TUNED", {})
    calls: list[tuple[str, str, str]] = []
    fastest = {"fp32": "tile 8 group 4 warps 1 chunk 512", "fp16": "tile 16 group 2 warps 2 chunk 512 mma"}

    def fake_time(b: Any, g: Any, d: str, h: int, hd: int, label: str, cfg: Any, qkv: Any) -> float:
        calls.append((d, label, g.name))
        if len(calls) > 12:  # the share runs out: later variants are skipped and cannot win
            return math.inf
        return 1.0 if label == fastest[d] else 2.0

    monkeypatch.setattr(kernel_sweep, "_time_variant", fake_time)
    # the variants as the sweep sees them: relative to the rule, before any winner is kept
    variants = {d: kernel_sweep.sweep_variants(h, hd, SPEC_DTYPE[d]) for d, h, hd in families}
    graphs = [uniform_graph(20, 60, torch.device("cpu"))]
    b = SimpleNamespace(doc={}, deadline=time.monotonic() + 60, skip_reason="", args=SimpleNamespace(max_minutes=5))
    kernel_sweep.sweep_and_tune(b, graphs, families)  # type: ignore[arg-type]

    # rounds: the rule of each family, then each family's second variant, ...
    assert [(d, label) for d, label, _ in calls[:4]] == [
        ("fp32", "rule"),
        ("fp16", "rule"),
        ("fp32", "tile 16 group 4 warps 2 chunk 512 dot"),
        ("fp16", "tile 16 group 2 warps 1 chunk 512 mma"),
    ]
    assert len(calls) == sum(len(v) for v in variants.values())
    for d, h, hd in families:
        key = (h, hd, SPEC_DTYPE[d])
        assert spec.TUNED[key] == variants[d][fastest[d]]
        assert b.doc["tuned"][f"{h}x{hd} {SPEC_DTYPE[d]}"]["variant"] == fastest[d]
        assert b.doc["tuned"][f"{h}x{hd} {SPEC_DTYPE[d]}"]["rule_ms"] == 2.0
        assert b.doc["tuned"][f"{h}x{hd} {SPEC_DTYPE[d]}"]["rejected_max_abs_diff"] == {}


def test_a_fast_variant_whose_output_differs_from_the_rule_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kept configs run every later row of the benchmark: one that is fast and wrong is refused and
    recorded, and the next fastest that agrees is kept."""
    from trt_plugins import kernels

    monkeypatch.setattr(spec, "TUNED", {})
    variants = kernel_sweep.sweep_variants(4, 16, "float32")
    wrong, right = list(variants)[1], list(variants)[2]
    speed = {wrong: 1.0, right: 1.5}
    monkeypatch.setattr(kernel_sweep, "_time_variant", lambda b, g, d, h, hd, label, *_: speed.get(label, 3.0))
    real = kernels.sparse_graph_attention

    def broken_for_one(*args: Any, config: Any = None, **kw: Any) -> torch.Tensor:
        out = real(*args, config=config, **kw)
        return out + 1e-3 if config == variants[wrong] else out

    monkeypatch.setattr(kernels, "sparse_graph_attention", broken_for_one)
    b = SimpleNamespace(doc={}, deadline=time.monotonic() + 60, skip_reason="", args=SimpleNamespace(max_minutes=5))
    kernel_sweep.sweep_and_tune(b, [uniform_graph(20, 60, torch.device("cpu"))], [("fp32", 4, 16)])  # type: ignore[arg-type]
    kept = b.doc["tuned"]["4x16 float32"]
    assert kept["variant"] == right and spec.TUNED[(4, 16, "float32")] == variants[right]
    assert kept["rejected_max_abs_diff"] == {wrong: pytest.approx(1e-3, rel=1e-3)}


def test_a_variant_wrong_only_where_a_hub_spans_chunks_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agreement check runs on every sweep graph: a variant that is right on the uniform graph
    but wrong on the power-law one (as a combine race would be) is refused."""
    from trt_plugins import kernels

    monkeypatch.setattr(spec, "TUNED", {})
    variants = kernel_sweep.sweep_variants(4, 16, "float32")
    wrong, right = list(variants)[1], list(variants)[2]
    speed = {wrong: 1.0, right: 1.5}
    monkeypatch.setattr(kernel_sweep, "_time_variant", lambda b, g, d, h, hd, label, *_: speed.get(label, 3.0))
    uniform = uniform_graph(20, 60, torch.device("cpu"))
    skewed = power_law_graph(20, 60, torch.device("cpu"))
    real = kernels.sparse_graph_attention

    def broken_on_the_hub(*args: Any, config: Any = None, **kw: Any) -> torch.Tensor:
        out = real(*args, config=config, **kw)
        return out + 1e-3 if config == variants[wrong] and args[3] is skewed.rowptr else out

    monkeypatch.setattr(kernels, "sparse_graph_attention", broken_on_the_hub)
    b = SimpleNamespace(doc={}, deadline=time.monotonic() + 60, skip_reason="", args=SimpleNamespace(max_minutes=5))
    kernel_sweep.sweep_and_tune(b, [uniform, skewed], [("fp32", 4, 16)])  # type: ignore[arg-type]
    kept = b.doc["tuned"]["4x16 float32"]
    assert kept["variant"] == right
    assert kept["rejected_max_abs_diff"] == {wrong: pytest.approx(1e-3, rel=1e-3)}


def test_a_rule_that_fails_in_the_agreement_check_tunes_nothing_and_the_run_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The agreement check runs the rule outside any row: a rule that raises there (one that does not
    compile on the GPU's Triton) ended the whole benchmark before its op rows and its summary."""
    from trt_plugins import kernels

    monkeypatch.setattr(spec, "TUNED", {})
    variants = kernel_sweep.sweep_variants(4, 16, "float32")
    monkeypatch.setattr(kernel_sweep, "_time_variant", lambda *_: 1.0)
    real = kernels.sparse_graph_attention

    def rule_fails(*args: Any, config: Any = None, **kw: Any) -> torch.Tensor:
        if config == variants["rule"]:
            raise RuntimeError("CompilationError at 12:4\nmore lines")
        return real(*args, config=config, **kw)

    monkeypatch.setattr(kernels, "sparse_graph_attention", rule_fails)
    b = SimpleNamespace(doc={}, deadline=time.monotonic() + 60, skip_reason="", args=SimpleNamespace(max_minutes=5))
    kernel_sweep.sweep_and_tune(b, [uniform_graph(20, 60, torch.device("cpu"))], [("fp32", 4, 16)])  # type: ignore[arg-type]
    assert b.doc["tuned"] == {} and spec.TUNED == {}
    assert b.doc["sweep_errors"] == {
        "4x16 float32": "rule: RuntimeError: CompilationError at 12:4: nothing tuned, every row runs the rule"
    }


def test_a_variant_that_fails_in_the_agreement_check_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    from trt_plugins import kernels

    monkeypatch.setattr(spec, "TUNED", {})
    variants = kernel_sweep.sweep_variants(4, 16, "float32")
    failing, right = list(variants)[1], list(variants)[2]
    speed = {failing: 1.0, right: 1.5}
    monkeypatch.setattr(kernel_sweep, "_time_variant", lambda b, g, d, h, hd, label, *_: speed.get(label, 3.0))
    real = kernels.sparse_graph_attention

    def one_fails(*args: Any, config: Any = None, **kw: Any) -> torch.Tensor:
        if config == variants[failing]:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, config=config, **kw)

    monkeypatch.setattr(kernels, "sparse_graph_attention", one_fails)
    b = SimpleNamespace(doc={}, deadline=time.monotonic() + 60, skip_reason="", args=SimpleNamespace(max_minutes=5))
    kernel_sweep.sweep_and_tune(b, [uniform_graph(20, 60, torch.device("cpu"))], [("fp32", 4, 16)])  # type: ignore[arg-type]
    assert b.doc["tuned"]["4x16 float32"]["variant"] == right and spec.TUNED[(4, 16, "float32")] == variants[right]
    assert b.doc["sweep_errors"] == {
        f"4x16 float32 {failing}": "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    }
