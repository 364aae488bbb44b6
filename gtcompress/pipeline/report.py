"""The pipeline's report: one row per exported model, with deltas against its dense parent and the
dense-ft control, written as ``report.json``, ``report.md`` and ``pareto.png`` (test metric vs latency).

The format is what the committed results (``bench/results``, the README table) were made with; a
change here changes how every earlier run reads.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from gtcompress.io import write_atomic, write_json

__all__ = ["build_report", "choose_for_serving", "int8_notes", "markdown", "tolerance_drop", "write_report"]


def build_report(rows: list[dict[str, Any]], cfg: dict[str, Any], trt_note: str, out: Path) -> dict[str, Any]:
    """The report of ``rows`` (one per exported model: metric, latency, file): each row gains
    ``metric_drop`` and ``speedup_vs_dense`` against its dense parent and ``delta_vs_dense_ft``
    against the dense-ft control, when those exist; plus the config, TensorRT note and machine.

    ``metric_drop`` is in the metric's own units, positive when the row is worse (a higher MAE, a
    lower accuracy). An MAE row also gains ``metric_drop_pct``, that rise in percent of the dense
    parent's MAE: MAE has the target's units, so "1.0" is no tolerance at all for one dataset and
    everything for another, while accuracy and ROC-AUC are already in points of a percentage
    (:func:`tolerance_drop`)."""
    import platform

    from gtcompress.train.metrics import higher_is_better  # torch: only where a report is made
    from runtime.profile import machine_info

    # the dense parent: its fastest export (a config may export it on several lowerings; the last one taken
    # made a 48 ms model 2.50x faster than the 120 ms scatter export, where the dense one took 68 ms)
    dense: dict[str, dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: r["latency_ms_p50"], reverse=True):  # the fastest written last
        if is_parent(r, "dense") and r["lowering"] != "plugin":
            dense[r["arch"]] = r
    control = {r["arch"]: r for r in rows if is_parent(r, "dense-ft")}
    for r in rows:
        sign = 1 if higher_is_better(r["metric"]) else -1
        d, c = dense.get(r["arch"]), control.get(r["arch"])
        if d:
            r["metric_drop"] = sign * (d["test"] - r["test"])
            if not higher_is_better(r["metric"]):  # an error in the target's units
                r["metric_drop_pct"] = _percent_of(r["metric_drop"], d["test"])
            r["speedup_vs_dense"] = d["latency_ms_p50"] / r["latency_ms_p50"]
        if c:  # what compression cost, with the extra training of the compressed models taken out
            r["delta_vs_dense_ft"] = sign * (r["test"] - c["test"])
    return {
        "config": cfg,
        "rows": rows,
        "tensorrt": trt_note,
        "machine": machine_info(),
        "python": platform.python_version(),
        "run_dir": str(out),
    }


def _percent_of(drop: float, dense: float) -> float:
    """``drop`` in percent of the dense model's ``dense`` MAE (a perfect dense model: any rise is
    infinitely many percent, none is 0)."""
    if dense > 0:
        return 100.0 * drop / dense
    return drop * math.inf if drop else 0.0  # NaN stays NaN: never within a tolerance


def tolerance_drop(row: dict[str, Any], default: float = 0.0) -> float:
    """The drop ``triton.max_metric_drop`` (and the report's "within 1 point") bounds: points for a
    metric reported in percent (accuracy, ROC-AUC), percent of the dense parent's MAE for MAE.
    Comparing a raw MAE rise with 1.0 served a model with 2.8 times its dense parent's MAE (0.5 ->
    1.4) as "within 1 point". ``default`` for a row with no dense parent."""
    return row.get("metric_drop_pct", row.get("metric_drop", default))


def is_parent(row: dict[str, Any], method: str) -> bool:
    """Whether ``row`` is the float32 model of ``method`` (``dense``, ``dense-ft``) that other rows are set
    against: a quantized dense model is one more compressed row, measured against its float32 parent."""
    return row["method"] == method and not _quantized(row)


def _quantized(row: dict[str, Any]) -> bool:
    return row.get("precision", "float32") != "float32"


def drop_between(metric: str, reference: float, value: float) -> float:
    """How far ``value`` falls short of ``reference`` (both as reported: percent for accuracy and ROC-AUC)
    in the units :func:`tolerance_drop` bounds: points, or percent of ``reference`` for an error (MAE)."""
    from gtcompress.train.metrics import higher_is_better

    if higher_is_better(metric):
        return reference - value
    return _percent_of(value - reference, reference)


def choose_for_serving(report: dict[str, Any], max_drop: float) -> dict[str, Any] | None:
    """The fastest exported model whose test metric is within ``max_drop`` of its dense parent
    (:func:`tolerance_drop`: points, or percent of the dense MAE)."""
    ok = [r for r in report["rows"] if tolerance_drop(r) <= max_drop and r["lowering"] != "plugin"]
    return min(ok, key=lambda r: r["latency_ms_p50"]) if ok else None


def _signed(value: float) -> str:
    """``value`` to two decimals with its sign, and a difference that rounds to zero as ``+0.00``: the
    dense rows' own Δ vs dense (``-0.0``) read ``-0.00``, a loss where there is none."""
    return f"{round(value, 2) + 0.0:+.2f}"


def table_cells(r: dict[str, Any]) -> dict[str, str]:
    """One row of the report's table, by column, as written: report.md and ``gtc pipeline``'s closing
    table show the same digits (the console printed 4 decimals of everything, the dense rows' Δ as
    -0.0000)."""
    return {
        "model": r["model"],
        "lowering": r["lowering"],
        "test": f"{r['test']:.2f}",
        "Δ vs dense-ft": _signed(r["delta_vs_dense_ft"]) if "delta_vs_dense_ft" in r else "–",
        "Δ vs dense": _signed(-r.get("metric_drop", 0.0)),
        "latency p50 (ms)": f"{r['latency_ms_p50']:.1f}",
        "speed-up": f"{r.get('speedup_vs_dense', 1.0):.2f}x",
        "prep (ms)": f"{r['prep_ms_p50']:.1f}",
        "max abs err": f"{r['max_abs_err']:.1e}",
        "MB": f"{r['file_mb']:.2f}",
    }


def int8_notes(rows: list[dict[str, Any]]) -> list[str]:
    """What the int8 search (``export.mixed``, ``deploy_stages._quantize``) did, for each row where it did
    anything: the blocks it kept float32, or that no file came within ``export.quantize_max_drop`` of the
    float32 file on the val split (the row is then the closest file it found)."""
    from gtcompress.pipeline.quantize import drop_words, undefined_why

    notes = []
    for r in rows:
        q = r.get("quantized")
        if not q or (q["within"] and not q["float32_blocks"]):
            continue
        if math.isnan(q["val_float32"]):
            notes.append(
                f"`{r['model']}`: the val {r['metric']} of its float32 file is undefined (NaN: "
                f"{undefined_why(r['metric'])}), so no int8 drop was measured or searched: every block in int8."
            )
            continue
        kept = ", ".join(f"`{b}`" for b in q["float32_blocks"])
        n = q["evaluations"]
        below = f"{drop_words(r['metric'], q['val_drop'])} below it ({n} int8 file{'s' * (n != 1)} evaluated)"
        if q["within"]:
            notes.append(
                f"`{r['model']}` keeps {kept} float32 ({len(q['float32_blocks'])} of its {q['blocks']} blocks), the "
                f"fewest that bring it within `export.quantize_max_drop` of its float32 file on the val split: {below}."
            )
        else:
            notes.append(
                f"`{r['model']}`: no int8 file came within `export.quantize_max_drop` "
                f"({drop_words(r['metric'], q['max_drop'])}) of its float32 file on the val split; the row is the "
                f"closest, {f'keeping {kept} float32' if kept else 'every block in int8'}, {below}."
            )
    return notes


def _within(error: str | None) -> str:
    """How the report names its 1.0 tolerance for the metric (:func:`tolerance_drop`); ``error``: the
    name of an error metric in the target's units (MAE, RMSE), ``None`` for one in points."""
    return f"within 1 % of its dense parent's {error}" if error else "within 1 point of its dense parent"


def markdown(report: dict[str, Any]) -> str:
    """``report.md``: the table of every row, the notes (skipped budgets, TensorRT, machine,
    Triton), the compressed model with the largest speed-up over its dense parent within a point of
    it, and the plots."""
    from gtcompress.train.metrics import higher_is_better  # torch: only where a report is made

    rows = report["rows"]
    metric = rows[0]["metric"] if rows else "metric"
    # an error in the target's units (MAE, RMSE): its tolerance is in percent of the dense parent's
    error = None if higher_is_better(metric) else metric.upper()
    lines = [
        "# gtcompress pipeline report",
        "",
        f"Dataset: `{report['config']['data']['name']}` ({report['config']['data']['size']}). "
        f"Metric: {metric} on the test split, computed from the **exported ONNX model** under ONNX Runtime. "
        f"Latency: ONNX Runtime CPU, {rows[0]['threads'] if rows else '?'} threads, batches of "
        f"{rows[0]['graphs_per_batch'] if rows else '?'} test graphs, pre-processing "
        "(positional encodings, layouts) included; p50 of all models timed round-robin on the same batches.",
        "",
        "Δ vs dense-ft compares with the dense model trained for the same extra epochs, with the same "
        "distillation, as the compressed models (the `dense-ft` row): it is what compression cost; Δ vs dense "
        "also counts that extra training.",
        "",
        "| model | lowering | test | Δ vs dense-ft | Δ vs dense | latency p50 (ms) | speed-up | prep (ms) "
        "| max abs err | MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {' | '.join(table_cells(r).values())} |")
    m = report["machine"]
    lines += [
        "",
        *int8_notes(rows),
        *(f"Skipped: {note}." for note in report.get("skipped", [])),
        f"TensorRT: {report['tensorrt']}.",
        f"Machine: {m.get('cpu', '?')}, {m.get('logical_cores', '?')} cores, onnxruntime {m.get('onnxruntime', '?')}.",
    ]
    if report.get("triton"):
        t = report["triton"]
        lines.append(
            f"Triton model repository: `{t['repository']}` (model `{t['model']}` from `{t['source']}`: the lowest "
            "latency p50 within `triton.max_metric_drop` of its dense parent"
            + (f", in percent of its {error})." if error else ", in points).")
        )
    best = [
        r
        for r in rows
        if not (is_parent(r, "dense") or is_parent(r, "dense-ft"))
        and r["lowering"] != "plugin"
        and tolerance_drop(r, 9e9) <= 1.0
    ]
    if best:
        b = max(best, key=lambda r: r["speedup_vs_dense"])
        vs_ft = f" ({_signed(b['delta_vs_dense_ft'])} vs dense-ft)" if "delta_vs_dense_ft" in b else ""
        if error:
            pct = b["metric_drop_pct"]
            at = f"{error} {b['test']:.2f}, {abs(pct):.1f} % {'above' if pct > 0 else 'below'} its dense parent's"
        else:
            at = f"{_signed(-b['metric_drop'])} points"
        lines.append(  # against its own dense parent: not the serving pick, which is the lowest latency overall
            f"Largest speed-up of a compressed model {_within(error)}: `{b['model']}`, "
            f"{b['speedup_vs_dense']:.2f}x lower latency ({b['latency_ms_p50']:.1f} ms p50) at {at}{vs_ft}."
        )
    elif undefined := sorted({r["model"] for r in rows if math.isnan(r["test"])}):
        # NaN compares false with any tolerance: none qualified, but not for being too far from dense
        shown = {"rocauc": "ROC-AUC", "ap": "average precision"}.get(metric)
        # a NaN output leaves any metric undefined (train.metrics.compute_metric); ROC-AUC and AP also a one-class split
        nan = "a NaN among a model's test outputs"
        why = f": {shown} needs both classes among the test labels, and {nan} leaves it undefined too" if shown else ""
        why = why or f": {nan} leaves it undefined"
        lines.append(
            f"The test {metric} is undefined (NaN) for {', '.join(f'`{m}`' for m in undefined)}{why}; a model "
            "without a defined metric, or whose dense parent has none, is never compared, picked or served."
        )
    else:
        lines.append(f"No compressed model stayed {_within(error)}.")
    lines += ["", "![Pareto front](pareto.png)", ""]
    prof = report.get("profile")
    if prof and prof.get("failed"):
        lines += [
            f"The profile of {', '.join(prof['models'])} is incomplete: "
            + ("the rows measured are in `profile/report.json`, without" if prof["dir"] else "nothing was measured;")
            + f" {len(prof['failed'])} failed measurement{'s' if len(prof['failed']) > 1 else ''}"
            + " (measured again by the next run):",
            "",
            *(f"- {line}" for line in prof["failed"]),
            "",
        ]
    if prof and prof["dir"]:
        lines += [
            f"Profiled side by side ({', '.join(prof['models'])}; random graphs with the test set's "
            f"mean degree {prof['avg_degree']:.1f}, `profile/report.json`):",
            "",
            "![Latency vs graph size](profile/latency_vs_size.png)",
            "![Per-op breakdown](profile/op_breakdown.png)",
            "",
        ]
    return "\n".join(lines) + "\n"


def _plots(report: dict[str, Any], out: Path) -> None:
    """``pareto.png``: test metric vs latency per architecture and method, quantized files as one series
    per architecture (plugin rows left out)."""
    import matplotlib

    from gtcompress.train.metrics import higher_is_better  # torch: only where a report is made

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if r["lowering"] != "plugin"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)  # 12 series of two architectures: no colour twice
    markers = {"dense": "o", "dense-ft": "D", "teddy": "s", "gtsp": "^", "random": "x"}
    for arch in sorted({r["arch"] for r in rows}):
        mine = [r for r in rows if r["arch"] == arch]
        series = [
            (f"{arch} {m}", mk, [r for r in mine if r["method"] == m and not _quantized(r)])
            for m, mk in markers.items()
        ]
        series.append((f"{arch} int8 (any method)", "P", [r for r in mine if _quantized(r)]))
        for label, marker, pts in series:
            if pts:
                ax.scatter(
                    [p["latency_ms_p50"] for p in pts], [p["test"] for p in pts], marker=marker, s=60, label=label
                )
                for p in pts:
                    ax.annotate(str(p["budget"] or ""), (p["latency_ms_p50"], p["test"]), fontsize=7)
    # the dataset's metric, and which way is better: an MAE plot titled "Accuracy" read upside down
    metric = rows[0]["metric"] if rows else "metric"
    better = "higher" if higher_is_better(metric) else "lower"
    ax.set_xlabel("ONNX Runtime CPU latency p50 (ms, lower is better)")
    ax.set_ylabel(f"test {metric} ({better} is better, from the ONNX model)")
    ax.set_title(f"Test {metric} vs latency: what compression bought")
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_atomic(out / "pareto.png", lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)


def write_report(report: dict[str, Any], out: Path) -> None:
    """``report.json``, ``report.md`` and ``pareto.png`` in ``out``, each written atomically."""
    write_json(out / "report.json", report)
    write_atomic(out / "report.md", lambda p: p.write_text(markdown(report)))
    _plots(report, out)
