"""The profile report of ``gtc profile``: validation, ``report.json``, the PNG plots and the tables.

Kept apart from :mod:`runtime.profile`, which measures: the report is what a person reads, and
its plots and tables change for reasons the measurement does not.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gtcompress.io import named_write_error, remove_stale_temps
from runtime.profile_failures import failure_line, is_short, unmeasured, unmeasured_label

#: The ``schema`` field of every report ``gtc profile`` writes.
SCHEMA = "gtcompress.profile/1"


def validate_report(report: dict[str, Any]) -> None:
    """Raise ``ValueError`` if ``report`` does not follow :data:`SCHEMA` (used by the tests and readers)."""
    if report.get("schema") != SCHEMA:
        raise ValueError(f"not a {SCHEMA} report")
    for key in ("created", "machine", "settings", "models"):
        if key not in report:
            raise ValueError(f"report lacks {key!r}")
    for m in report["models"]:
        for key in ("name", "path", "results"):
            if key not in m:
                raise ValueError(f"model entry lacks {key!r}")
        for r in m["results"]:
            for key in ("threads", "graph_nodes", "batch_size", "latency_ms", "graphs_per_s", "peak_rss_mb"):
                if key not in r:
                    raise ValueError(f"result lacks {key!r}")
            lat = r["latency_ms"]
            if not 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]:
                raise ValueError(f"latency percentiles out of order: {lat}")


def _reference(report: dict[str, Any]) -> tuple[int, int]:
    s = report["settings"]
    sizes = sorted(s["graph_sizes"])
    return sizes[len(sizes) // 2], min(s["batch_sizes"])


def write_report(report: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """``report.json`` and four PNGs (latency vs graph size, latency distribution, per-op
    breakdown, models side by side) in ``out_dir``; returns the paths written.

    Every file is rendered to a temp file first and the five are renamed into place only once all
    exist, ``report.json`` last: a run killed while plotting (seconds) leaves the previous report
    and its plots as they were, not new plots beside the old ``report.json``."""
    out = Path(out_dir)
    made = [p for p in (out, *out.parents) if not p.exists()]  # deepest first: removed again on failure
    out.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []  # (temp, final), renamed in this order
    done = False
    try:
        paths = _draw(report, out, staged)
        staged.append((_temp(paths[0]), paths[0]))
        staged[-1][0].write_text(json.dumps(report, indent=2))
        for tmp, path in staged:
            os.replace(tmp, path)
        done = True
    except OSError as e:
        # savefig and PIL write through a file object, so a full disk named no file: name the one being written
        if staged and (named := named_write_error(e, staged[-1][1])) is not None:
            raise named from e
        raise
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        if not done:  # a Ctrl-C or an error while plotting: no empty --out folder left behind
            for d in made:
                with contextlib.suppress(OSError):  # not empty (another writer): kept
                    d.rmdir()
    return paths


def _draw(report: dict[str, Any], out: Path, staged: list[tuple[Path, Path]]) -> list[Path]:
    """The four plots of :func:`write_report`, each rendered to a temp file added to ``staged``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [out / "report.json"]
    models = report["models"]
    s = report["settings"]
    ref_nodes, ref_batch = _reference(report)

    # 1. latency vs graph size: one panel per batch size, a line per (model, threads)
    fig, axes = plt.subplots(1, len(s["batch_sizes"]), figsize=(5.5 * len(s["batch_sizes"]), 4), squeeze=False)
    for ax, b in zip(axes[0], s["batch_sizes"], strict=True):
        for m in models:
            for t in dict.fromkeys(r["threads"] for r in m["results"]):  # a torch-CUDA model: one run, None
                rows = sorted(
                    (r for r in m["results"] if r["batch_size"] == b and r["threads"] == t),
                    key=lambda r: r["graph_nodes"],
                )
                if rows:
                    x = [r["graph_nodes"] for r in rows]
                    y = [r["latency_ms"]["p50"] for r in rows]
                    lo = [r["latency_ms"]["p50"] - r["latency_ms"]["min"] for r in rows]
                    hi = [r["latency_ms"]["p90"] - r["latency_ms"]["p50"] for r in rows]
                    ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, label=_run_label(m, t))
        ax.set(xscale="log", yscale="log", xlabel="nodes per graph", ylabel="latency p50 (ms), bars min–p90")
        ax.set_xticks(s["graph_sizes"], [str(n) for n in s["graph_sizes"]])
        ax.minorticks_off()
        _label_latency_axis(ax)
        ax.set_title(f"batch of {b} graph{'s' if b > 1 else ''}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "latency_vs_size.png")
    _save(fig, paths[-1], staged)

    # 2. latency distribution at the reference configuration
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(models) * len(s["threads"])), 4))
    data, labels = [], []
    for m in models:
        for r in m["results"]:
            if r["graph_nodes"] == ref_nodes and r["batch_size"] == ref_batch:
                data.append(r["samples_ms"])
                labels.append(_run_label(m, r["threads"], "\n"))
    if data:
        ax.boxplot(data, whis=(1, 99), showfliers=True)
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
    ax.set(ylabel="latency (ms), whiskers p1–p99", title=f"latency distribution · {ref_nodes} nodes × {ref_batch}")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    paths.append(out / "latency_distribution.png")
    _save(fig, paths[-1], staged)

    # 3. per-op breakdown: top op types per model, stacked shares
    fig, ax = plt.subplots(figsize=(8, 2.4 + 0.6 * len(models)))
    top_ops: list[str] = []
    for m in models:
        for row in ((m.get("ops") or {}).get("by_op_type") or [])[:6]:
            if row["op_type"] not in top_ops:
                top_ops.append(row["op_type"])
    cmap = plt.get_cmap("tab20")
    for i, m in enumerate(models):
        shares = {r["op_type"]: r["share"] for r in ((m.get("ops") or {}).get("by_op_type") or [])}
        if not shares:  # no breakdown measured: a full "other" bar would read as 100 % of an unseen kernel time
            ax.text(0.01, i, _no_breakdown(m), va="center", fontsize=8, color="0.4")
            continue
        left = 0.0
        for j, op in enumerate([*top_ops, "other"]):
            w = shares.get(op, 0.0) if op != "other" else max(0.0, 1.0 - sum(shares.get(o, 0.0) for o in top_ops))
            ax.barh(i, w, left=left, color=cmap(j % 20), label=op if i == 0 else None)
            left += w
        att = (m.get("ops") or {}).get("attention_share")
        if att is not None:
            ax.text(1.01, i, f"attention {att:.0%}", va="center", fontsize=8)
    ax.set_yticks(range(len(models)), [m["name"] for m in models])
    ax.set_ylim(-0.6, len(models) - 0.4)  # every model's row, those with a note instead of a bar too
    ax.set(xlim=(0, 1.25), xlabel="share of kernel time", title="per-op breakdown (ONNX Runtime profiler)")
    if any((m.get("ops") or {}).get("by_op_type") for m in models):  # else no bar, no legend
        fig.legend(ncol=5, fontsize=7, loc="lower center")
    fig.tight_layout(rect=(0, 0.18, 1, 1))
    paths.append(out / "op_breakdown.png")
    _save(fig, paths[-1], staged)

    # 4. models side by side (dense vs compressed…) at the reference configuration per thread count (+ GPU runs)
    groups = [*s["threads"], *([None] if any(r["threads"] is None for m in models for r in m["results"]) else [])]
    fig, ax = plt.subplots(figsize=(max(5, 1.5 * len(groups) * max(1, len(models)) / 2), 4))
    width = 0.8 / max(1, len(models))
    for i, m in enumerate(models):
        vals = []
        for t in groups:
            r = next(
                (
                    r
                    for r in m["results"]
                    if r["threads"] == t and r["graph_nodes"] == ref_nodes and r["batch_size"] == ref_batch
                ),
                None,
            )
            vals.append(r["latency_ms"]["mean"] if r else float("nan"))  # not measured: no bar (0 read as instant)
        xs = [k + (i - (len(models) - 1) / 2) * width for k in range(len(groups))]
        bars = ax.bar(xs, vals, width, label=m["name"])
        ax.bar_label(bars, labels=["" if v != v else f"{v:.2f}" for v in vals], fontsize=7)
    ax.set_xticks(range(len(groups)), [f"{t} thread{'s' if t > 1 else ''}" if t else "GPU" for t in groups])
    ax.set(ylabel="mean latency (ms)", title=f"models side by side · {ref_nodes} nodes × {ref_batch}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    paths.append(out / "models.png")
    _save(fig, paths[-1], staged)
    return paths


def _save(fig: Any, path: Path, staged: list[tuple[Path, Path]]) -> None:
    """Render ``fig`` to a temp file beside ``path`` (renamed by :func:`write_report`) and close it."""
    import matplotlib.pyplot as plt

    try:
        staged.append((_temp(path), path))
        fig.savefig(staged[-1][0], dpi=120, format="png")
    finally:
        plt.close(fig)


def _label_latency_axis(ax: Any) -> None:
    """Give a log latency axis at least two labelled ticks, as plain milliseconds.

    With minor ticks off, matplotlib labels only powers of ten: a panel whose latencies stay within
    one decade (20 to 90 ms, as most do) had no number on its y axis at all, and one spanning a
    little more had one. Ticks go at 1, then 1-2-5, then 1..9 times powers of ten, the first of these
    that puts two inside the view; a panel narrower than that (32 to 45 ms) turns linear, whose
    own ticks always number it."""
    lo, hi = ax.get_ylim()
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    for subs in ((1,), (1, 2, 5), range(1, 10)):
        ticks = [m * 10.0**e for e in decades for m in subs if lo <= m * 10.0**e <= hi]
        if len(ticks) >= 2:
            ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
            ax.set_ylim(lo, hi)
            return
    ax.set_yscale("linear")


def _temp(path: Path) -> Path:
    """The hidden temp file beside ``path`` a new version of it is written to before the rename.

    Named as :func:`gtcompress.io.atomic_path` names its temps (``.NAME.PID-RANDOM.tmp``), so that
    :func:`gtcompress.io.remove_stale_temps` removes those of a run that was killed while plotting
    (SIGTERM, SIGKILL): named ``.NAME.PID.tmp`` before, they stayed in ``--out`` for good."""
    remove_stale_temps(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _no_breakdown(m: dict[str, Any]) -> str:
    """Why a model has no per-op row in ``op_breakdown.png``."""
    if m.get("backend") == "torch":
        return "no per-op breakdown: a checkpoint runs with torch (ONNX Runtime's profiler only)"
    if m.get("backend") == "tensorrt":
        return "no per-op breakdown: a TensorRT engine (ONNX Runtime's profiler only)"
    return "no per-op breakdown (not profiled)"


def _run_label(m: dict[str, Any], threads: int | None, sep: str = " · ") -> str:
    """``name · 2T`` for a CPU run; ``name · cuda:0`` for a GPU run, where thread counts do not apply."""
    return f"{m['name']}{sep}{threads}T" if threads is not None else f"{m['name']}{sep}{m.get('device', 'gpu')}"


def _profiler_caption(m: dict[str, Any], ops: dict[str, Any]) -> str | None:
    """What the per-op milliseconds are: timed under ONNX Runtime's profiler, which slows every node,
    so they add up to more than the model call the latency rows measured (0.65 ms of kernels for a
    0.35 ms call): the caption puts the two side by side, so that the shares are read, not the ms."""
    run = ops.get("profiled_run_ms")
    where = (ops["threads"], ops["graph_nodes"], ops["batch_size"])
    row = next((r for r in m["results"] if (r["threads"], r["graph_nodes"], r["batch_size"]) == where), None)
    if not run or row is None or "model_ms" not in row:
        return None
    return (
        f"ms/run under ONNX Runtime's profiler: a run took {run:.3f} ms there, {row['model_ms']['mean']:.3f} ms "
        "unprofiled (model call, mean); read the shares, not the milliseconds"
    )


def compare_models(models: list[dict[str, Any]], failed: Sequence[dict[str, Any]] = ()) -> dict[str, Any] | None:
    """Every model's p50s against the first model's, configuration by configuration: the speed-up
    of the whole call (pre-processing included) and of the model call alone, which is what a
    compression changes (its pre-processing is the same; at 128 nodes x 16 it was 75-90 % of a call,
    so a 1.8x faster model read 1.1x on the whole call). Rows pair a configuration at one thread
    count with the first model's at the same count; a GPU row (no thread count) pairs with every one.
    ``None`` for fewer than two models.

    Where a pass failed (``failed``, :mod:`runtime.profile_failures`) the comparison is not computed from
    partial data without a word: a row with either side measured in fewer rounds than asked is
    ``partial``, ``failed_models`` names the models with a failure, and ``unmeasured`` the sizes a failed pass
    measured in no round, which no row here compares."""
    if len(models) < 2:
        return None
    base = models[0]
    rows = []
    for m in models[1:]:
        for r in m["results"]:
            for b in base["results"]:
                same_size = (r["graph_nodes"], r["batch_size"]) == (b["graph_nodes"], b["batch_size"])
                if not same_size or (r["threads"] != b["threads"] and None not in (r["threads"], b["threads"])):
                    continue
                call, base_call = r["latency_ms"]["p50"], b["latency_ms"]["p50"]
                model = r.get("model_ms", {}).get("p50")
                base_model = b.get("model_ms", {}).get("p50")
                rows.append(
                    {
                        "model": m["name"],
                        "threads": r["threads"],
                        "baseline_threads": b["threads"],
                        "graph_nodes": r["graph_nodes"],
                        "batch_size": r["batch_size"],
                        "p50_ms": call,
                        "baseline_p50_ms": base_call,
                        "speedup": base_call / call if call > 0 else math.inf,
                        "model_p50_ms": model,
                        "baseline_model_p50_ms": base_model,
                        "model_speedup": base_model / model if model and base_model else None,
                        "partial": is_short(m, r) or is_short(base, b),
                    }
                )
    return {
        "baseline": base["name"],
        "rows": rows,
        "failed_models": [m["name"] for m in models if m["name"] in {f["model"] for f in failed}],
        "unmeasured": unmeasured(models, failed),
    }


def _num(v: float) -> str:
    """A measured value in at most six characters, four significant digits below 1000 (1871, 804.5,
    19.96, 0.505): the latency table fits 80 columns without folding a number onto two lines."""
    if not math.isfinite(v):
        return str(v)
    for limit, digits in ((10, 3), (100, 2), (1000, 1)):
        if abs(v) < limit:
            return f"{v:.{digits}f}"
    return f"{v:.0f}"


def _precision(q: dict[str, Any]) -> str:
    """A quantized model's scheme, and how many blocks it keeps float32 (``gtc export --quantize int8
    --mixed``): a mixed file times differently from an all-int8 one, and the title is what tells them apart."""
    kept = q.get("float32_blocks") or []
    return f"{q.get('scheme', '?')}" + (f", {len(kept)} block{'s' * (len(kept) != 1)} float32" if kept else "")


def _rounds(m: dict[str, Any]) -> int:
    """The rounds a model's rows were asked for, its ``rounds``: the report's setting for an exported model,
    one for a checkpoint's (:func:`runtime.profile.profile_models`); counted in its rows (``rounds_p50_ms``)
    in a report without that field."""
    if "rounds" in m:  # asked for: a row measured in fewer (a pass failed) is marked ~, not the title
        return int(m["rounds"])
    return max((len(r.get("rounds_p50_ms") or [0]) for r in m["results"]), default=1)


def _threads_cell(threads: int | None, oversubscribed: bool = False) -> str:
    return "–" if threads is None else f"{threads}{'*' if oversubscribed else ''}"


def report_tables(report: dict[str, Any]) -> list[Any]:
    """Rich tables: machine, one latency table per model, the top ops, and the models against the first."""
    from rich.table import Table
    from rich.text import Text

    mi = report["machine"]
    # every column folds a value too long for the terminal onto more lines, where rich's default cut
    # it to an ellipsis: a CPU or model name, an op type, must be read whole
    head = Table(title="machine", title_justify="left", show_header=False)
    head.add_column(overflow="fold")
    head.add_column(overflow="fold")
    head.add_row("cpu", f"{mi['cpu']} · {mi['usable_cores']}/{mi['logical_cores']} cores · {mi['memory_gib']} GiB")
    head.add_row("os", f"{mi['os']} · Python {mi['python']} · onnxruntime {mi['onnxruntime']}")
    if mi.get("gpu"):
        g = mi["gpu"]
        head.add_row("gpu", f"{g['name']} · {g['memory_gib']} GiB · torch {mi['torch']} · CUDA {g['cuda']}")
    tables: list[Any] = [head]
    for m in report["models"]:
        over = any(r.get("oversubscribed") for r in m["results"])
        unsteady = any(r.get("rounds_unsteady") for r in m["results"])
        short = any(is_short(m, r) for r in m["results"])
        captions = [
            *(["* more threads than the cores it may use (oversubscribed)"] if over else []),
            *(["! its rounds disagree: see the note below"] if unsteady else []),
            *(["~ fewer rounds than asked (a pass failed): see the note below"] if short else []),
        ]
        t = Table(
            title=f"{m['name']} ({m.get('arch')}, {m.get('lowering')}"
            + (f", {_precision(q)}" if (q := m.get("quantization")) else "")
            + f", {(m.get('providers') or ['?'])[0]})"
            + (f" · {calls} timed calls a row" if (calls := report["settings"].get("iterations")) else "")
            + (f" in {n} rounds" if (n := _rounds(m)) > 1 else ""),
            title_justify="left",
            caption="; ".join(captions) or None,
            caption_justify="left",
        )
        # the mean and std are in report.json; the model call alone is what a compression changes
        for col in ("thr", "nodes×\nbatch", "p50\nms", "p90", "p99", "model\np50", "prep\n%", "graphs\n/s", "RSS\nMB"):
            t.add_column(col, justify="right", overflow="fold")
        for r in m["results"]:
            lat = r["latency_ms"]
            t.add_row(
                _threads_cell(r["threads"], bool(r.get("oversubscribed"))),
                f"{r['graph_nodes']}×{r['batch_size']}{'!' if r.get('rounds_unsteady') else ''}"
                + ("~" if is_short(m, r) else ""),
                _num(lat["p50"]),
                _num(lat["p90"]),
                _num(lat["p99"]),
                _num(r["model_ms"]["p50"]) if "model_ms" in r else "–",
                f"{100 * r.get('preprocess_share', 0):.0f}",
                _num(r["graphs_per_s"]),
                f"{r['peak_rss_mb']:.0f}",
            )
        tables.append(t)
        ops = m.get("ops")
        if ops and ops.get("by_op_type"):
            o = Table(
                title=f"{m['name']}: top ops ({ops['graph_nodes']}×{ops['batch_size']}, {ops['threads']}T) · "
                f"attention {ops['attention_share']:.0%} ({ops['attention_method']})",
                title_justify="left",
                caption=_profiler_caption(m, ops),
                caption_justify="left",
            )
            for col in ("op type", "ms/run", "share", "calls/run"):
                o.add_column(col, justify="right" if col != "op type" else "left", overflow="fold")
            for row in ops["by_op_type"][:8]:  # calls: over all profiled runs (Softmax 20 of a 2-layer model)
                per_run = row["calls"] / max(1, ops.get("runs", 1))
                o.add_row(row["op_type"], f"{row['ms_per_run']:.3f}", f"{row['share']:.1%}", f"{per_run:g}")
            tables.append(o)
    failed = report.get("failed") or []
    if (cmp := compare_models(report["models"], failed)) is not None and cmp["rows"]:
        partial = (
            ["~ a side measured in fewer rounds than asked (a pass failed)"]
            if any(r["partial"] for r in cmp["rows"])
            else []
        )
        if cmp["unmeasured"]:
            missing = ", ".join(unmeasured_label(u) for u in cmp["unmeasured"])
            partial.append(f"not compared, measured in no round (a pass failed): {missing}")
        c = Table(
            title=f"vs {cmp['baseline']}: its p50 / the model's (above 1x: faster), whole call and model call alone",
            title_justify="left",
            caption="; ".join(partial) or None,
            caption_justify="left",
        )
        for col in ("model", "thr", "nodes×\nbatch", "p50\nms", "speed-\nup", "model\np50", "model\nspeed-up"):
            c.add_column(col, justify="left" if col == "model" else "right", overflow="fold")
        for r in cmp["rows"]:
            threads = r["threads"] if r["threads"] is not None else r["baseline_threads"]
            c.add_row(
                r["model"] + (" (gpu)" if r["threads"] is None else ""),
                _threads_cell(threads),
                f"{r['graph_nodes']}×{r['batch_size']}{'~' if r['partial'] else ''}",
                _num(r["p50_ms"]),
                f"{r['speedup']:.2f}x",
                "–" if r["model_p50_ms"] is None else _num(r["model_p50_ms"]),
                "–" if r["model_speedup"] is None else f"{r['model_speedup']:.2f}x",
            )
        tables.append(c)
    # what makes rows not like for like (torch rows not pinned, RSS of a shared process): said where the
    # numbers are read, not only in report.json
    tables.extend(Text(f"note: {n}", style="dim") for n in report["settings"].get("notes") or [])
    # what was not measured, last, where it is read after the numbers (report.json: "failed")
    tables.extend(Text(f"failed: {failure_line(f)}", style="red") for f in failed)
    return tables
