"""``bench/kernel_tuned.py``: a GPU run's sweep winners written into a copy of ``trt_plugins/tuned.py``.

The copy is imported afterwards and turned into configs as ``spec`` does, so what is checked is the
``TUNED`` the library would run.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bench.kernel_sweep import config_dict
from bench.kernel_tuned import TABLE_PATH, TunedError, _table, apply
from trt_plugins import spec

ROOT = Path(__file__).resolve().parents[2]
ONE_WARP = spec.KernelConfig(tile_e=16, tiles=32, block_h=4, block_d=16, num_warps=1, aggregate="dot")
MMA = spec.KernelConfig(tile_e=16, tiles=32, block_h=2, block_d=64, num_warps=1, head_group=2, aggregate="mma")


def result(tmp_path: Path, tuned: dict[str, Any], **top: Any) -> Path:
    doc = {"commit": "0123456789abcdef", "date": "2026-12-05T04:00:00Z", "machine": {"gpu": "NVIDIA H200"}}
    path = tmp_path / "kernel.json"
    path.write_text(json.dumps({**doc, **top, "tuned": tuned}))
    return path


def entry(config: spec.KernelConfig, ms: float = 1.25, rule_ms: float = 2.5) -> dict[str, Any]:
    return {"variant": "v", "config": config_dict(config), "summed_ms": ms, "rule_ms": rule_ms}


def outside_table(text: str, path: Path) -> list[str]:
    first, last, _ = _table(text, path)
    lines = text.splitlines()
    return lines[:first] + lines[last + 1 :]


def load(path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    module_spec = importlib.util.spec_from_file_location("table_copy", path)
    assert module_spec and module_spec.loader
    module = importlib.util.module_from_spec(module_spec)
    monkeypatch.setitem(sys.modules, "table_copy", module)  # dataclasses look their module up there
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture
def table_copy(tmp_path: Path) -> Path:
    path = tmp_path / "tuned.py"
    path.write_text(TABLE_PATH.read_text())
    return path


def test_winners_become_tuned_and_other_shapes_stay(
    tmp_path: Path, table_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = result(tmp_path, {"8x64 float16": entry(MMA)})
    apply(first, table_copy)
    second = result(tmp_path, {"4x16 float32": entry(ONE_WARP, ms=0.5, rule_ms=1.0)})
    written = apply(second, table_copy)
    assert written == {(4, 16, "float32"): ONE_WARP}
    copy = load(table_copy, monkeypatch)
    tuned = {key: spec.KernelConfig(**fields) for key, fields in copy.MEASURED.items()}  # as spec builds TUNED
    assert tuned == {(4, 16, "float32"): ONE_WARP, (8, 64, "float16"): MMA}
    monkeypatch.setattr(spec, "TUNED", tuned)
    assert spec.select_config(4, 16, "float32") == ONE_WARP
    text = table_copy.read_text()
    assert "    # v: 0.5 ms vs rule 1 ms\n    # (kernel.json: 0123456789, NVIDIA H200, 2026-12-05T04:00:00Z)\n" in text
    lint = [sys.executable, "-m", "ruff", "--config", str(ROOT / "pyproject.toml")]
    for check in (["check", "--no-cache"], ["format", "--check", "--no-cache"]):  # the file stays as CI wants it
        proc = subprocess.run([*lint, *check, str(table_copy)], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    # the rest of the module is untouched, and a second apply of the same result changes nothing
    assert outside_table(text, table_copy) == outside_table(TABLE_PATH.read_text(), TABLE_PATH)
    apply(second, table_copy)
    assert table_copy.read_text() == text
    assert not list(tmp_path.glob(".tuned.py.tmp"))


@pytest.mark.parametrize(
    ("top", "tuned", "message"),
    [
        ({"cpu_dry_run": True}, {"4x16 float32": entry(ONE_WARP)}, "kernel.json is a CPU dry run"),
        ({}, {}, "kernel.json has no 'tuned' section"),
        ({}, {"4x16 float64": entry(ONE_WARP)}, "has dtype 'float64', not one of"),
        ({}, {"4x32 float32": entry(ONE_WARP)}, "'4x32 float32': config block_d 16 is smaller than head_dim 32"),
        (
            {},
            {"4x16 float32": entry(ONE_WARP) | {"config": config_dict(ONE_WARP) | {"tile_e": 12}}},
            "'4x16 float32': tile_e must be a power of two",
        ),
        ({}, {"4by16 float32": entry(ONE_WARP)}, "tuned entry '4by16 float32' is not a kernel config"),
        (
            {},
            {"4x16 float32": entry(spec.KernelConfig(tile_e=16, tiles=16, block_h=4, block_d=16))},
            "'4x16 float32': tuned config for heads=4, head_dim=16, float32 has chunk 256, the rule 512",
        ),
    ],
)
def test_what_was_not_measured_right_is_refused(
    tmp_path: Path, table_copy: Path, top: dict[str, Any], tuned: dict[str, Any], message: str
) -> None:
    before = table_copy.read_text()
    with pytest.raises(TunedError, match=message):
        apply(result(tmp_path, tuned, **top), table_copy)
    assert table_copy.read_text() == before


def test_command_line_mistake_is_one_line(tmp_path: Path, table_copy: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "bench/kernel_tuned.py", str(tmp_path / "missing.json"), "--table", str(table_copy)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"error: {tmp_path / 'missing.json'}: cannot read")
