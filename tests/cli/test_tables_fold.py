"""The CLI's tables show every value whole on a narrow terminal: a cell too wide folds onto more
lines, where rich's default cut it to an ellipsis (``gtc export`` printed its file as
``/very/long/…`` at 80 columns)."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from cli.common import table
from runtime.profile_report import report_tables

LONG_PATH = "/very/long/path/to/some/deeply/nested/runs/directory/gt-cluster-pruned-budget0.3.onnx"


def _render(renderable: Any, width: int = 80) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, legacy_windows=False)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def _column(text: str, index: int) -> str:
    """The cell text of column ``index`` over every body row line, joined: a folded value whole again."""
    return "".join(line.split("│")[index + 1].strip() for line in text.splitlines() if line.startswith("│"))


def test_a_long_path_in_a_result_table_is_folded_not_cut() -> None:
    row = {"file": LONG_PATH, "lowering": "dense", "max |ORT-torch|": "1.2e-06", "batches": 4, "TensorRT ops": "ok"}
    text = _render(table("export", [row]))
    assert "…" not in text
    assert _column(text, 0) == LONG_PATH
    assert _column(text, 1) == "dense" and _column(text, 3) == "4"


def _report() -> dict[str, Any]:
    latency = {"mean": 1.0, "std": 0.1, "p50": 1.0, "p90": 1.2, "p99": 1.3}
    return {
        "machine": {
            "cpu": "Intel(R) Xeon(R) Platinum 8480+ with a very long model string",
            "usable_cores": 2,
            "logical_cores": 224,
            "memory_gib": 2015.6,
            "os": "Linux 6.8.0-1020-very-long-kernel-release-name-x86_64",
            "python": "3.12.3",
            "onnxruntime": "1.22.0",
        },
        "settings": {"notes": []},
        "models": [
            {
                "name": "gt-cluster-pruned-budget0.3",
                "arch": "gt",
                "lowering": "dense",
                "providers": ["CPUExecutionProvider"],
                "results": [
                    {
                        "threads": 1,
                        "graph_nodes": 128,
                        "batch_size": 16,
                        "latency_ms": latency,
                        "graphs_per_s": 12345.6,
                        "preprocess_share": 0.25,
                        "peak_rss_mb": 321.0,
                    }
                ],
                "ops": {
                    "graph_nodes": 128,
                    "batch_size": 16,
                    "threads": 1,
                    "attention_share": 0.5,
                    "attention_method": "scope",
                    "by_op_type": [
                        {
                            "op_type": "gtcompress::SparseGraphAttentionFunction",
                            "ms_per_run": 0.5,
                            "share": 0.5,
                            "calls": 2,
                        }
                    ],
                },
            }
        ],
    }


def test_the_profile_tables_fold_names_and_machine_values() -> None:
    report = _report()
    texts = [_render(t, width=50) for t in report_tables(report)]
    assert not any("…" in t for t in texts), texts
    machine, _latency, ops = texts
    mi = report["machine"]

    def squashed(text: str) -> str:  # a value wrapped at its spaces: compared without them
        return "".join(text.split())

    assert squashed(f"{mi['cpu']} · 2/224 cores · 2015.6 GiB") in squashed(_column(machine, 1))
    assert squashed(mi["os"]) in squashed(_column(machine, 1))
    assert _column(ops, 0) == "gtcompress::SparseGraphAttentionFunction"
