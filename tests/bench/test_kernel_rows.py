"""``bench/kernel.py``'s rows: a failure while a row checks its parity (our op against the PyG reference,
our model against PyG's) is recorded on that row, as a timed failure is, and the run goes on. On the
device run one exception there (an OOM of the float32 reference on a large graph, a kernel that does
not compile) would otherwise end the benchmark without its summary, on a GPU slot that cannot be rerun."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from bench import kernel
from bench.kernel_workloads import molecule_batch


def _bench(tmp_path: Path) -> kernel.Bench:
    args = argparse.Namespace(
        out=str(tmp_path / "kernel.json"), max_minutes=5.0, reps=10, warmup=1, slow_ms=500.0, cpu_dry_run=True
    )
    b = kernel.Bench(args)
    b.doc["copy_gbps"] = 1.0
    return b


def _raise_oom(*args: Any, **kwargs: Any) -> Any:
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def test_a_failing_op_parity_check_is_recorded_and_the_row_still_timed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gtcompress.nn.fused  # noqa: F401  (registers the op the row times)

    monkeypatch.setattr(kernel, "DEVICE", torch.device("cpu"))
    monkeypatch.setattr(kernel, "pyg_attention", _raise_oom)
    b = _bench(tmp_path)
    kernel.op_rows(b, molecule_batch(1, torch.device("cpu")), "fp32", 4, 16, {"pyg"})
    ours, pyg = b.rows
    assert ours["peer"] == "ours v2" and ours["ms"] > 0 and ours["max_abs_err_vs_pyg_fp32"] is None
    assert ours["parity_error"] == "OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB"
    assert pyg["peer"] == "PyG eager" and pyg["error"].startswith("OutOfMemoryError: CUDA out of memory")


def test_a_failing_model_parity_check_is_recorded_and_the_rows_still_timed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kernel, "DEVICE", torch.device("cpu"))
    b = _bench(tmp_path)

    class Models:
        dtype = torch.float32
        pyg = ours = staticmethod(_raise_oom)
        pyg_compiled = ours_compiled = staticmethod(lambda x, g: x)
        own = argparse.Namespace(compute=lambda *a: a[0])

    kernel.model_rows(b, Models(), molecule_batch(1, torch.device("cpu")), "fp32", small=False)  # type: ignore[arg-type]
    by_peer = {r["peer"]: r for r in b.rows}
    assert by_peer["ours eager"]["parity_error"].startswith("OutOfMemoryError: CUDA out of memory")
    assert by_peer["ours eager"]["max_abs_diff_vs_pyg"] is None
    assert by_peer["PyG eager"]["error"].startswith("OutOfMemoryError")
    assert by_peer["ours torch.compile"]["ms"] > 0 and by_peer["gtcompress GT eager"]["ms"] > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dtypes", "fp32,f16"], "--dtypes: 'f16' not among fp32, fp16, bf16 (comma-separated, no spaces)"),
        (["--levels", "op, model"], "--levels: ' model' not among op, model (comma-separated, no spaces)"),
        (["--model-sizes", "1M,1G"], "--model-sizes: '1G' is not an edge count such as 500K, 1M or 2000000"),
        (["--sizes", "1M,5"], "--sizes: '5' is below 10 edges (its graphs have E/10 nodes)"),
    ],
)
def test_list_options_are_checked_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """The list options were read only when their rows came up: on a GPU, ``--dtypes fp32,f16`` ended the
    run with a KeyError after the sweep and the fp32 rows (no summary, no PNG), ``--levels op,modle``
    skipped the model level without a word. Here they are one usage error before the GPU is touched
    (without a GPU, main used to print its no-GPU note and exit 0 whatever they said)."""
    with pytest.raises(SystemExit) as exc:
        kernel.main([*argv, "--out", str(tmp_path / "kernel.json")])
    assert exc.value.code == 2
    assert f"error: {message}" in capsys.readouterr().err
    assert not (tmp_path / "kernel.json").exists()


def test_an_error_outside_any_row_still_writes_the_summary_and_png(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Building a 50M-edge graph, the models or the sweep's bookkeeping run outside every row's ``try``:
    an exception there ended the device run with a traceback and no summary or PNG of the rows measured."""
    monkeypatch.setattr(kernel, "DEVICE", kernel.DEVICE)  # main sets both for the dry run; restored after
    monkeypatch.setattr(kernel, "COMPILE_BACKEND", kernel.COMPILE_BACKEND)
    monkeypatch.setattr(kernel.signal, "signal", lambda *a: None)  # keep pytest's own SIGTERM handling

    def one_row_then_fail(b: kernel.Bench, args: argparse.Namespace, dev: torch.device) -> None:
        row = {"level": "op", "workload": "uniform E=2k", "kind": "uniform", "N": 200, "E": 2000, "dtype": "fp32",
               "hd": "4x16", "peer": "ours v2"}  # fmt: skip
        b.measure(row, lambda: None)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 12.00 GiB\nmore")

    monkeypatch.setattr(kernel, "run_rows", one_row_then_fail)
    out = tmp_path / "kernel.json"
    assert kernel.main(["--cpu-dry-run", "--no-sweep", "--out", str(out)]) == 1
    doc = json.loads(out.read_text())
    assert doc["failed"] == (
        "OutOfMemoryError: CUDA out of memory. Tried to allocate 12.00 GiB: the rows after the last one recorded "
        "were not run"
    )
    assert [r["peer"] for r in doc["rows"]] == ["ours v2"] and doc["rows"][0]["ms"] >= 0
    assert doc["summary"]["lines"][0].endswith("(CPU dry run: no GPU figure, no target judged)")
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert "Traceback" in capsys.readouterr().err


def test_the_no_gpu_smoke_test_says_when_the_interpreter_cannot_run_here(monkeypatch, capsys) -> None:
    """Triton 3.6's interpreter fails under numpy >= 2.4 (upstream); the no-GPU path said so with a
    traceback and exit 1. It now says the parity was not checked, and why; any other error still raises."""
    import trt_plugins.kernels

    def upstream_bug(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError(f"InterpreterError: TypeError('{kernel.NUMPY_SCALAR_BUG}')")

    monkeypatch.setattr(trt_plugins.kernels, "sparse_graph_attention", upstream_bug)
    assert kernel.smoke_without_gpu() == 0
    out = capsys.readouterr().out
    assert "interpreter parity NOT checked: Triton " in out and "triton-lang/triton#9171" in out

    def other(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("something else")

    monkeypatch.setattr(trt_plugins.kernels, "sparse_graph_attention", other)
    with pytest.raises(RuntimeError, match="something else"):
        kernel.smoke_without_gpu()
