"""``bench/kernel_precompile.py``: the sweep's variants compiled by spawned workers before timing.

Compiling needs a GPU, so the pool is exercised with jobs that fail the same way on any machine
(a config too narrow for its head, an unknown dtype), with ``time.sleep`` for a timeout, and
``warm_up`` itself is checked against the launcher in ``tests/trt_plugins/test_warm_up.py``.
"""

from __future__ import annotations

import dataclasses
import time

from bench.kernel_precompile import job_label, jobs_for, precompile
from trt_plugins import spec

RULE = spec.rule_config(8, 64, "float16")
NARROW = dataclasses.replace(RULE, block_d=16)


def test_one_job_per_variant_and_distinct_graph_size() -> None:
    variants = [("fp16", 8, 64, RULE), ("fp32", 4, 16, spec.rule_config(4, 16, "float32"))]
    sizes = [(1_000_000, 10_000_000, "int32"), (1_000_000, 10_000_000, "int32"), (32, 48, "int64")]
    jobs = jobs_for(variants, sizes)
    assert len(jobs) == 4
    assert jobs[0] == ("fp16", 8, 64, dataclasses.asdict(RULE), 1_000_000, 10_000_000, "int32")
    assert spec.KernelConfig(**jobs[0][3]) == RULE
    assert job_label(jobs[1]) == "fp16 8x64 tile 8 group 2 warps 1 chunk 512 N=32 E=48"


def test_every_sweep_variant_has_its_own_label() -> None:
    """The report keys its errors by label: two variants of one family must not share one."""
    from bench.kernel_sweep import SWEEP_FAMILIES, sweep_variants, variant_label
    from bench.kernel_workloads import SPEC_DTYPE

    for d, h, hd in SWEEP_FAMILIES:
        variants = sweep_variants(h, hd, SPEC_DTYPE[d])
        jobs = jobs_for([(d, h, hd, cfg) for cfg in variants.values()], [(32, 48, "int32")])
        labels = [job_label(job) for job in jobs]
        assert len(set(labels)) == len(variants)
        for label, cfg in zip(labels, variants.values(), strict=True):
            assert label == f"{d} {h}x{hd} {variant_label(cfg)} N=32 E=48"


def test_failures_are_recorded_per_job_and_never_raised() -> None:
    jobs = jobs_for([("fp16", 8, 64, NARROW), ("fp64", 8, 64, RULE)], [(32, 48, "int32")])
    report = precompile(jobs, timeout_s=300, workers=2)
    assert {k: v for k, v in report.items() if k != "seconds"} == {
        "jobs": 2,
        "workers": 2,
        "compiled": 0,
        "errors": {
            job_label(jobs[0]): "PluginSpecError: config block_d 16 is smaller than head_dim 64: the kernels "
            "would skip dims 16..63 (block_d must be a power of two >= head_dim)",
            job_label(jobs[1]): "KeyError: 'fp64'",
        },
    }


def test_a_slow_pool_is_cut_at_its_timeout_and_its_workers_ended() -> None:
    report = precompile([60.0, 60.0], timeout_s=1, workers=2, work=time.sleep)
    assert report["error"] == "timed out after 1 s; the rest compile at their first launch"
    assert "compiled" not in report
    done = precompile([0.0, 0.0, 0.0], timeout_s=60, workers=2, work=time.sleep)
    assert (done["compiled"], done["errors"], done["workers"]) == (3, {}, 2)
    assert precompile([], timeout_s=1)["jobs"] == 0
