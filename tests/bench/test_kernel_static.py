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


def test_a_run_writes_rows_that_follow_from_ptxas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def two_variants(heads: int, head_dim: int, dtype: str) -> dict[str, Any]:
        rule = spec.select_config(heads, head_dim, dtype)
        four = spec.KernelConfig(
            rule.tile_e, rule.tiles, rule.block_h, rule.block_d, num_warps=4, head_group=rule.head_group, prefetch=True
        )
        return {"rule": rule, "four warps, prefetch": four}

    monkeypatch.setattr(kernel_static, "sweep_variants", two_variants)
    out = tmp_path / "static.json"
    assert kernel_static.main(["--families", "fp32:4x16", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert {"command", "commit", "machine", "date", "triton"} <= doc.keys()
    rule, four = doc["rows"]
    assert (rule["variant"], four["variant"]) == ("rule", "four warps, prefetch")
    for row in doc["rows"]:
        assert row["target"] == "sm_90a" and row["spill_bytes"] == 0 and row["scratch_bytes"] == 0
        assert row["vector_loads"] >= 3  # K, V and Q rows in 128-bit pieces
        assert 300 < row["loop_instructions"] < 3000  # a tile loop of scans, not a stub and not unrolled away
        # every warp runs the loop, one head group, 16 edges per tile
        per_edge = row["loop_instructions"] * row["config"]["num_warps"] * 1 / 16
        assert row["warp_instructions_per_edge"] == round(per_edge, 1)
        assert row["warp_instructions_per_kv_byte"] == round(per_edge / (2 * 4 * 16 * 4), 3)
        # the costliest source lines are lines of the kernel, and there are the most kept
        kernel_lines = len(Path("trt_plugins/_kernel.py").read_text().splitlines())
        by_line = {int(k): v for k, v in row["loop_by_line"].items()}
        assert len(by_line) == kernel_static.BY_LINE and all(1 <= ln <= kernel_lines for ln in by_line)
        assert list(by_line.values()) == sorted(by_line.values(), reverse=True)
        assert (row["programs_per_sm"], row["limited_by"]) == kernel_static.programs_per_sm(
            row["registers"], row["config"]["num_warps"], row["shared_bytes"], 90
        )
    row_bytes = 4 * 16 * 4  # four heads of 16 floats
    assert rule["kv_bytes_in_flight_per_sm"] == rule["programs_per_sm"] * 16 * row_bytes * 2
    assert four["kv_bytes_in_flight_per_sm"] == four["programs_per_sm"] * 16 * 2 * row_bytes * 2
    # the rule's one-warp loop costs fewer warp instructions per edge than four warps' (SASS count)
    assert rule["warp_instructions_per_edge"] < four["warp_instructions_per_edge"]
    assert out.with_suffix(".png").stat().st_size > 10_000


SASS = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_0:
        //## File "/x/_kernel.py", line 150 inlined at "/x/_kernel.py", line 9
        //## File "/x/_kernel.py", line 150
        /*0010*/                   IADD3 R2, R2, 0x1, RZ ;
.L_x_1:
        //## File "/x/_kernel.py", line 172
        /*0020*/                   ISETP.GE.AND P0, PT, R2, R3, PT ;
        /*0030*/              @!P0 BRA `(.L_x_1) ;
        /*0040*/                   NOP ;
        //## File "/x/_kernel.py", line 191
        /*0050*/                   FADD R4, R4, R5 ;
        /*0060*/                   BRA `(.L_x_0) ;
        /*0070*/                   BRA `(.L_x_2) ;
.L_x_2:
        /*0080*/                   EXIT ;
"""


def test_sass_loop_is_the_widest_backward_branch() -> None:
    """The tile loop (``.L_x_0`` .. its ``BRA``) holds the inner search loop, which counts once; the
    forward branch is no loop, ``NOP`` padding is no work, and each instruction goes to its line."""
    loop = kernel_static.sass_loop(SASS)
    assert loop.instructions == 5
    assert loop.by_line == {172: 2, 191: 2, 150: 1}
    with pytest.raises(ValueError, match="no loop in the SASS"):
        kernel_static.sass_loop(SASS.replace("BRA `(.L_x_0)", "EXIT").replace("@!P0 BRA `(.L_x_1)", "EXIT"))


def test_the_grid_pairs_the_rule_with_four_warps_for_every_shape() -> None:
    for dtype in ("float32", "float16", "bfloat16"):
        for heads, head_dim in kernel_static.GRID_SHAPES:
            pair = kernel_static.grid_variants(heads, head_dim, dtype)
            rule, four = pair.values()
            assert next(iter(pair)) == "rule" and rule == spec.rule_config(heads, head_dim, dtype)
            assert (four.num_warps, four.prefetch, four.aggregate) == (4, True, "scan")
            assert (four.tile_e, four.head_group, four.chunk) == (rule.tile_e, rule.head_group, rule.chunk)


def test_a_grid_run_writes_its_own_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel_static, "GRID_SHAPES", ((2, 16),))
    out = tmp_path / "grid.json"
    assert kernel_static.main(["--grid", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert [(r["dtype"], r["hd"], r["variant"] == "rule") for r in doc["rows"]] == [
        (dtype, "2x16", is_rule) for dtype in ("float32", "float16", "bfloat16") for is_rule in (True, False)
    ]
    assert out.with_suffix(".png").stat().st_size > 10_000
