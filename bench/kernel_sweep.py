"""The tile sweep of ``bench/kernel.py``: kernel v2's rule config against variants of warps, tile
size, head group, prefetch and aggregation, timed on the run's graphs; the fastest whose output
equals the rule's becomes ``spec.TUNED`` for the rest of the run and is recorded in its results
(then carried into ``trt_plugins/tuned.py`` by ``bench/kernel_tuned.py``)."""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
import triton

from bench.kernel_precompile import jobs_for, precompile, variant_label
from bench.kernel_workloads import DTYPES, SPEC_DTYPE, Graph, min_bytes


class Bench(Protocol):
    """What the sweep needs of ``bench.kernel.Bench``: its clock, its results, its way of timing."""

    deadline: float
    skip_reason: str
    args: argparse.Namespace
    doc: dict[str, Any]

    def measure(self, row: dict[str, Any], fn: Callable[[], Any], slow_ms: float | None = None) -> None: ...


#: The head shapes and dtypes the targets read: fp32 and fp16 at 4x16 (op speed, fp32 bandwidth), fp16
#: at 8x64 (fp16 bandwidth). Every other shape runs the rule.
SWEEP_FAMILIES = (("fp32", 4, 16), ("fp16", 4, 16), ("fp16", 8, 64))
SWEEP_SHARE = 0.35
#: Of the sweep's share, at most this much for compiling its variants in parallel first.
PRECOMPILE_SHARE = 0.5


def sweep_variants(heads: int, head_dim: int, dtype: str) -> dict[str, Any]:
    """The rule's config, the :data:`~trt_plugins.spec.TUNED` entry if there is one, plus variants of
    warps, tile size, head group, K/V prefetch, how a tile is worked (segmented scan, the sum as one
    tensor-core product, or scores and sums as per-head products: ``spec.AGGREGATES``). Every
    variant keeps the rule's chunk, which a tuned config must (``spec.check_tuned``: the TensorRT
    plugins size their ``part`` buffer by it before the dtype is known).

    ``bench/kernel_static.py`` gives each one's registers, gathers in flight and tile-loop
    instructions per edge (ptxas and SASS, no GPU). The per-edge work of a row (its search, scans and
    carry) is repeated by every thread that holds a piece of the row, so the rule runs one warp per
    program, and tensor-core products cut the per-element work (Triton 3.9, fp32 4x16: 96 warp
    instructions per edge for the rule and the one-warp products, 232 for four warps with prefetch,
    the rule before these counts; fp16 8x64: 565 for the rule, 390-500 for per-head products). The
    products come first, so that a sweep cut short by its time share still times them; whether the
    GPU hides the gathers' latency with one warp per program is what the four-warp variants, the old
    rule last, are timed against.
    """
    from trt_plugins import spec

    base = spec.rule_config(heads, head_dim, dtype)
    out = {"rule": base}
    tuned = spec.TUNED.get((heads, head_dim, dtype))
    if tuned is not None and tuned != base:  # an earlier run's winner (bench/kernel_tuned.py) is timed again
        out[variant_label(tuned)] = tuned
    g, half, double = base.head_group, max(1, base.head_group // 2), min(heads, base.head_group * 2)
    dot_tile = max(spec.MIN_DOT, base.tile_e)
    # per-head products pay where a head is wide and its rows arrive as 16-bit (fp16 8x64: 390-500
    # instructions per edge against 500-600 for the sum as one product); they lead those families
    wide_16bit = dtype != "float32" and base.block_d >= 2 * spec.MIN_DOT
    mma = [
        (dot_tile, g, 1, False, "mma"),
        (dot_tile, double, 2, False, "mma"),
        (dot_tile, g, 2, False, "mma"),
        (dot_tile, half, 1, False, "mma"),
    ]
    for tile, group, warps, prefetch, aggregate in (mma if wide_16bit else []) + [
        (dot_tile, g, 2, False, "dot"),
        (dot_tile, g, 1, False, "dot"),
        (base.tile_e, g, 1, False, "scan"),
        (base.tile_e // 2, g, 1, False, "scan"),
        (dot_tile, half, 1, False, "dot"),
        (dot_tile, double, 2, False, "dot"),
        (dot_tile, g, 2, True, "dot"),
        (base.tile_e, g, 1, True, "scan"),
        (dot_tile, g, 4, False, "dot"),
        (base.tile_e, g, 2, False, "scan"),
        (base.tile_e, g, 4, True, "scan"),  # the rule before the SASS counts
    ]:
        tile = max(4, tile)
        try:
            cfg = spec.KernelConfig(
                tile,
                max(1, base.chunk // tile),
                spec.next_pow2(group),
                base.block_d,
                base.block_r,
                base.block_p,
                warps,
                head_group=group,
                prefetch=prefetch,
                aggregate=aggregate,
            )
        except spec.PluginSpecError:  # a product needs 16 x 16 operands; tiny heads have none
            continue
        if cfg != base:
            out.setdefault(variant_label(cfg), cfg)
    return out


def parse_families(text: str) -> list[tuple[str, int, int]]:
    """``"fp32:4x16,fp16:8x64"`` -> ``[("fp32", 4, 16), ("fp16", 8, 64)]``: the head shapes and dtypes
    to sweep (``bench/kernel.py --sweep-families``, to tune a model's own shape) or to compile
    (``bench/kernel_static.py --families``). A shape the kernel does not take is refused by name."""
    from trt_plugins import spec

    out = []
    for item in text.split(","):
        dtype, _, shape = item.strip().partition(":")
        heads, _, head_dim = shape.partition("x")
        if dtype not in SPEC_DTYPE or not all(p.isascii() and p.isdigit() for p in (heads, head_dim)):
            raise argparse.ArgumentTypeError(
                f"a family looks like DTYPE:HEADSxHEAD_DIM with DTYPE in {sorted(SPEC_DTYPE)}, got {item!r}"
            )
        try:
            spec.select_config(int(heads), int(head_dim), SPEC_DTYPE[dtype])
        except spec.PluginSpecError as e:
            raise argparse.ArgumentTypeError(f"family {item.strip()!r}: {e}") from None
        out.append((dtype, int(heads), int(head_dim)))
    return out


def sweep_and_tune(b: Bench, graphs: list[Graph], families: Sequence[tuple[str, int, int]] = SWEEP_FAMILIES) -> None:
    """Time every variant of each family (dtype, heads, head_dim) on the given graphs; the fastest
    (summed over them) that agrees with the rule becomes ``spec.TUNED`` for its head shape and dtype
    for the rest of this run, and is recorded in the results."""

    b.doc["tuned"] = {}
    # each variant is a fresh JIT compile: the sweep gets a share of the run, so that the rows the
    # targets read are still reached; a variant past it is skipped (and cannot win)
    whole, reason = b.deadline, b.skip_reason
    b.deadline = min(whole, time.monotonic() + SWEEP_SHARE * b.args.max_minutes * 60)
    b.skip_reason = f"the sweep's share ({SWEEP_SHARE:.0%}) of --max-minutes {b.args.max_minutes} reached"
    try:
        _sweep_families(b, graphs, families)
    finally:
        b.deadline, b.skip_reason = whole, reason


def _sweep_families(b: Bench, graphs: list[Graph], family_names: Sequence[tuple[str, int, int]]) -> None:
    """Variants are timed in rounds, one per family at a time in the order of ``sweep_variants``,
    so that a sweep cut short by its share has timed each family's most promising variants alike."""

    families = [(d, h, hd, sweep_variants(h, hd, SPEC_DTYPE[d])) for d, h, hd in family_names]
    ordered = {(d, h, hd): list(variants.items()) for d, h, hd, variants in families}
    if graphs[0].rowptr.is_cuda and not triton.knobs.runtime.interpret:  # the interpreter compiles nothing
        to_compile = [(d, h, hd, cfg) for d, h, hd, vs in families for cfg in vs.values()]
        sizes = [(g.num_nodes, g.num_edges, str(g.rowptr.dtype).removeprefix("torch.")) for g in graphs]
        # most of the share, so that a slow pool still leaves the rounds time to time the first variants
        budget = max(10.0, PRECOMPILE_SHARE * (b.deadline - time.monotonic()))
        b.doc["sweep_precompile"] = report = precompile(jobs_for(to_compile, sizes), budget)
        print(f"  precompiled the sweep: {report}", flush=True)
    inputs = {(d, h, hd, g.name): _qkv(g, d, h, hd) for d, h, hd, _ in families for g in graphs}
    totals = {(d, h, hd): dict.fromkeys(variants, 0.0) for d, h, hd, variants in families}
    for rank in range(max(len(variants) for *_, variants in families)):
        for d, h, hd, variants in families:
            if rank >= len(variants):
                continue
            label, cfg = ordered[(d, h, hd)][rank]
            for g in graphs:
                totals[(d, h, hd)][label] += _time_variant(b, g, d, h, hd, label, cfg, inputs[(d, h, hd, g.name)])
    for d, h, hd, variants in families:
        cases = [(g, inputs[(d, h, hd, g.name)]) for g in graphs]
        _keep_fastest_that_agrees(b, d, h, hd, variants, totals[(d, h, hd)], cases)
    del inputs
    for g in graphs:
        empty_cache(g)


#: How far a variant's output may be from the rule's on each of the sweep's graphs (as in ``tests/gpu``).
AGREE_TOL = {"fp32": 2e-5, "fp16": 5e-3, "bf16": 3e-2}


def _keep_fastest_that_agrees(
    b: Bench,
    dtype_name: str,
    heads: int,
    head_dim: int,
    variants: dict[str, Any],
    totals: dict[str, float],
    cases: Sequence[tuple[Graph, tuple[torch.Tensor, ...]]],
) -> None:
    """The fastest variant whose output equals the rule's (within :data:`AGREE_TOL`) on every graph
    of ``cases`` (graph, q/k/v) becomes ``spec.TUNED`` for the rest of the run, so that no later row
    runs a config that was fast and wrong; a rejected one is recorded with its largest difference.
    Every graph counts: a power-law hub spans many chunks, where a uniform graph's rows span few.
    A run that raises (the rule not compiling, a variant out of memory) goes to ``doc["sweep_errors"]``
    and the benchmark goes on: nothing tuned for the family, or that variant not kept."""
    from trt_plugins import spec
    from trt_plugins.kernels import sparse_graph_attention

    dtype, key = SPEC_DTYPE[dtype_name], f"{heads}x{head_dim} {SPEC_DTYPE[dtype_name]}"
    tol = AGREE_TOL[dtype_name]

    def run(g: Graph, qkv: tuple[torch.Tensor, ...], config: Any) -> torch.Tensor:
        return sparse_graph_attention(*qkv, g.rowptr, g.col, None, config=config).float()

    try:
        expected = [run(g, qkv, variants["rule"]) for g, qkv in cases]
    except Exception as e:  # e.g. the rule does not compile on this Triton: its rows record the same error
        b.doc.setdefault("sweep_errors", {})[key] = f"rule: {_error_text(e)}: nothing tuned, every row runs the rule"
        print(f"  {key}: the rule's output could not be computed ({_error_text(e)}): nothing tuned")
        for g, _ in cases:
            empty_cache(g)
        return
    rejected = {}
    for label in sorted((lb for lb in totals if math.isfinite(totals[lb])), key=lambda lb: totals[lb]):
        if label != "rule":
            try:
                outs = [run(g, qkv, variants[label]) for g, qkv in cases]
            except Exception as e:  # ran when timed, fails now (an OOM): not kept, and the sweep goes on
                b.doc.setdefault("sweep_errors", {})[f"{key} {label}"] = _error_text(e)
                print(f"  {key}: {label} failed in the agreement check ({_error_text(e)}): not kept")
                continue
            diff = max(
                (float((o - x).abs().max()) for o, x in zip(outs, expected, strict=True) if o.numel()), default=0.0
            )
            if not all(torch.allclose(o, x, atol=tol, rtol=tol) for o, x in zip(outs, expected, strict=True)):
                rejected[label] = diff
                print(f"  {key}: {label} is fast but differs from the rule by {diff:.3g}: not kept")
                continue
        spec.TUNED[(heads, head_dim, dtype)] = variants[label]
        b.doc["tuned"][key] = {
            "variant": label,
            "config": config_dict(variants[label]),
            "summed_ms": totals[label],
            "rule_ms": totals["rule"],
            "rejected_max_abs_diff": rejected,
        }
        print(f"  tuned {key}: {label} ({totals[label]:.3f} ms vs rule {totals['rule']:.3f})")
        return


def _error_text(e: BaseException) -> str:
    """An exception as the sweep records it: its type and the first line of its message."""
    return f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"


def _qkv(g: Graph, dtype_name: str, heads: int, head_dim: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator(device=g.rowptr.device).manual_seed(1)
    dt = DTYPES[dtype_name]
    return tuple(
        torch.randn(g.num_nodes, heads, head_dim, device=g.rowptr.device, dtype=dt, generator=gen) for _ in range(3)
    )


def _time_variant(
    b: Bench,
    g: Graph,
    dtype_name: str,
    heads: int,
    head_dim: int,
    label: str,
    cfg: Any,
    qkv: tuple[torch.Tensor, ...],
) -> float:
    """Milliseconds of one variant on one graph (inf where it failed or was skipped)."""
    from trt_plugins.kernels import sparse_graph_attention

    q, k, v = qkv
    row = {
        "level": "sweep",
        "workload": g.name,
        "kind": g.kind,
        "N": g.num_nodes,
        "E": g.num_edges,
        "dtype": dtype_name,
        "hd": f"{heads}x{head_dim}",
        "peer": f"v2 {label}",
        "config": config_dict(cfg),
        "bytes": min_bytes(g.num_nodes, g.num_edges, heads, head_dim, q.element_size()),
    }
    b.measure(row, lambda: sparse_graph_attention(q, k, v, g.rowptr, g.col, None, config=cfg))
    return row.get("ms", math.inf)


def config_dict(cfg: Any) -> dict[str, int]:
    return {**cfg.__dict__, "chunk": cfg.chunk}


def empty_cache(g: Graph) -> None:
    if g.rowptr.is_cuda:
        torch.cuda.empty_cache()
