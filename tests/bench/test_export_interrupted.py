"""bench/export.py: a run stopped part-way leaves the previous result as it was (that a whole run leaves no
exported models behind is checked by the run of ``test_export_linearity.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench import export

#: the smallest run: one workload, GT only (scatter, padded, dense, plugin), one timed repeat
ARGV = ["--quick", "--repeat", "1", "--threads", "1", "--only", "gt", "--workloads", "sparse-1000"]


def test_a_run_stopped_after_its_first_row_leaves_the_previous_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every measured row rewrote --out with the rows so far: a run killed after its first row replaced an
    8-row result (with ``linearity``) by a 1-row file without it, beside the PNG of the old 8 rows, and
    nothing in the file said the run had not finished."""
    out = tmp_path / "export.json"
    old_row = {"workload": "sparse-1000", "arch": "gt", "lowering": "scatter", "edges": 1000, "ort_total_ms": 1.0}
    out.write_text(json.dumps({"command": "earlier run", "rows": [old_row], "linearity": {}}))
    before = out.read_bytes()
    exported = []
    real = export.export_onnx

    def second_export_is_interrupted(*args: object, **kwargs: object) -> object:
        exported.append(args[2])
        if len(exported) == 2:  # the scatter row is measured by now
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(export, "export_onnx", second_export_is_interrupted)
    threads = torch.get_num_threads()
    try:
        with pytest.raises(KeyboardInterrupt):
            export.main([*ARGV, "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert exported == ["scatter", "padded"]
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["export.json"]
