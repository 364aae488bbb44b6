"""``bench/kernel.py --cpu-dry-run``: every code path of the GPU benchmark but the CUDA-only ones, on tiny
CPU graphs, so that the script a lent GPU runs for minutes cannot fail at its first row or its report.
(The tile sweep is left out here: it compiles under Triton's interpreter for about two minutes.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OP_PEERS = {"ours v2", "ours v1", "PyG eager", "PyG torch.compile", "gtcompress reference"}
MODEL_PEERS = {"PyG eager", "PyG torch.compile", "ours eager", "ours torch.compile", "gtcompress GT eager"}


def test_the_dry_run_writes_every_level_and_judges_no_target(tmp_path: Path) -> None:
    out = tmp_path / "kernel.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    env["TMPDIR"] = str(tmp_path)  # PyG renders its convs' propagate modules there and never removes them
    proc = subprocess.run(
        [sys.executable, "bench/kernel.py", "--cpu-dry-run", "--no-sweep", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    doc = json.loads(out.read_text())
    assert doc["cpu_dry_run"] is True
    assert {"command", "commit", "machine", "date"} <= doc.keys()
    rows = doc["rows"]
    peers = Counter((r["level"], r["peer"]) for r in rows)
    assert {p for lv, p in peers if lv == "op"} == OP_PEERS
    assert {p for lv, p in peers if lv == "model"} == MODEL_PEERS
    v1 = [r for r in rows if r["peer"] == "ours v1"]  # under the interpreter, v1's path is checked once
    assert len(v1) == 1 and v1[0]["E"] <= 200 and v1[0]["ms"] > 0, v1
    assert all(r["ms"] > 0 and (r["runs"] >= 10 or "note" in r) for r in rows), [r for r in rows if "ms" not in r]
    workloads = {r["workload"] for r in rows if r["level"] == "model"}
    assert {"molecule", "uniform E=2k", "power-law E=2k"} <= workloads
    # the rows the targets read come first: fp32 4x16 ops, then the model level, then 8x64 and small graphs
    order = [(r["level"], r["hd"], r["workload"]) for r in rows]
    last_model = max(i for i, (level, _, _) in enumerate(order) if level == "model")
    first_rest = min(i for i, (level, hd, w) in enumerate(order) if level == "op" and (hd == "8x64" or "E=" not in w))
    assert order[0][:2] == ("op", "4x16") and last_model < first_rest
    ours = [r for r in rows if r["peer"] == "ours v2"]
    assert ours and all(r["max_abs_err_vs_pyg_fp32"] < 1e-5 for r in ours)
    # where v2's time goes (partials vs combine on a GPU): the profiler path runs here on CPU ops
    for r in ours:
        assert r["kernels"]["source"] == "torch.profiler, CPU ops", r["kernels"]
        assert r["kernels"]["ms_per_call"] and all(ms > 0 for ms in r["kernels"]["ms_per_call"].values())
    summary = doc["summary"]
    assert summary["lines"][0].endswith("(CPU dry run: no GPU figure, no target judged)")
    verdicts = {e["verdict"] for entries in summary["results"].values() for e in entries}
    assert verdicts <= {"not judged"}
    assert out.with_suffix(".png").stat().st_size > 10_000


def test_a_run_stopped_by_sigterm_still_writes_its_summary_and_png(tmp_path: Path) -> None:
    """The device run ends the benchmark with ``timeout`` (SIGTERM): the rows so far, the summary and
    the PNG must still be written, since the device time is not there to run it again."""
    out = tmp_path / "kernel.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    env["TMPDIR"] = str(tmp_path)  # PyG renders its convs' propagate modules there and never removes them
    cmd = [sys.executable, "bench/kernel.py", "--cpu-dry-run", "--no-sweep", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # the first row written, then stopped during the next ones
        seen.append(line)
        if "ours v2" in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, "".join(seen) + rest[-3000:]
    doc = json.loads(out.read_text())
    assert doc["stopped"] == "stopped by signal SIGTERM: the rows after the last one recorded were not run"
    assert doc["rows"][0]["peer"] == "ours v2" and len(doc["rows"]) <= 2  # v2, perhaps PyG eager: then stopped
    assert doc["summary"]["lines"][0].endswith("(CPU dry run: no GPU figure, no target judged)")
    assert out.with_suffix(".png").stat().st_size > 10_000
