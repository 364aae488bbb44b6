"""``bench/kernel_static.py``: the occupancy arithmetic, and one end-to-end run on two variants."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import kernel_static
from trt_plugins import spec


@pytest.mark.parametrize(
    ("registers", "warps", "shared", "cc", "expected"),
    [
        (80, 4, 4096, 90, (6, "registers")),  # 80 regs -> 2560 per warp -> 25 warps -> 6 programs
        (96, 4, 4096, 90, (5, "registers")),
        (24, 4, 0, 90, (16, "warps")),  # 64 warps per SM
        (32, 1, 0, 90, (32, "blocks")),
        (32, 4, 40 * 1024, 90, (5, "shared memory")),  # 228 KiB / 41 KiB
        (24, 4, 0, 75, (8, "warps")),  # Turing holds 32 warps
        (255, 4, 0, 80, (2, "registers")),  # 255 rounds up to 256 per thread
    ],
)
def test_programs_per_sm(registers: int, warps: int, shared: int, cc: int, expected: tuple[int, str]) -> None:
    assert kernel_static.programs_per_sm(registers, warps, shared, cc) == expected


def test_families_are_parsed_or_named() -> None:
    assert kernel_static.parse_families("fp32:4x16, fp16:8x64") == [("fp32", 4, 16), ("fp16", 8, 64)]
    with pytest.raises(Exception, match="a family looks like DTYPE:HEADSxHEAD_DIM"):
        kernel_static.parse_families("fp64:4x16")


def test_a_run_writes_rows_that_follow_from_ptxas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def two_variants(heads: int, head_dim: int, dtype: str) -> dict[str, Any]:
        rule = spec.select_config(heads, head_dim, dtype)
        plain = spec.KernelConfig(rule.tile_e, rule.tiles, rule.block_h, rule.block_d, head_group=rule.head_group)
        return {"rule": rule, "no prefetch": plain}

    monkeypatch.setattr(kernel_static, "sweep_variants", two_variants)
    out = tmp_path / "static.json"
    assert kernel_static.main(["--families", "fp32:4x16", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert {"command", "commit", "machine", "date", "triton"} <= doc.keys()
    rule, plain = doc["rows"]
    assert (rule["variant"], plain["variant"]) == ("rule", "no prefetch")
    for row in doc["rows"]:
        assert row["target"] == "sm_90a" and row["spill_bytes"] == 0 and row["scratch_bytes"] == 0
        assert row["vector_loads"] >= 3  # K, V and Q rows in 128-bit pieces
        assert 300 < row["instructions"] < 3000  # a tile loop of scans, not a stub and not unrolled away
        assert (row["programs_per_sm"], row["limited_by"]) == kernel_static.programs_per_sm(
            row["registers"], row["config"]["num_warps"], row["shared_bytes"], 90
        )
    row_bytes = 4 * 16 * 4  # four heads of 16 floats
    assert rule["kv_bytes_in_flight_per_sm"] == rule["programs_per_sm"] * 16 * 2 * row_bytes * 2
    assert plain["kv_bytes_in_flight_per_sm"] == plain["programs_per_sm"] * 16 * row_bytes * 2
    assert out.with_suffix(".png").stat().st_size > 10_000


def test_ptx_instructions_skip_directives_labels_comments_and_braces() -> None:
    ptx = ".version 8.0\n.target sm_90a\n// a comment\n\tadd.s32 \t%r1, %r2, 1;\n$L__BB0_1:\n\t{\n\tret;\n}\n"
    assert kernel_static.ptx_instructions(ptx) == 2
