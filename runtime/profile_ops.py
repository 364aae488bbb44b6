"""Per-op breakdown of an ONNX model's time from ONNX Runtime's profiler, and its attention share.

Used by ``gtc profile`` on one configuration per model (:mod:`runtime.profile`): kernel time summed
by op type, plus the share of attention by the scope heuristic below (see that module's docstring).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gtcompress.preprocess.spec import InputSpec

ATTENTION_OPS = {
    "MatMul",
    "Softmax",
    "Exp",
    "ReduceMax",
    "ReduceSum",
    "Where",
    "Div",
    "Gather",
    "GatherElements",
    "ScatterElements",
}
FALLBACK_ATTENTION_OPS = {"Softmax", "ScatterElements", "GatherElements", "MatMul"}


# ---------------------------------------------------------------------------------- the machine


def _node_scopes(path: str) -> dict[str, tuple[str, str]] | None:
    """``{node name: (exporter scope, op type)}`` from the ONNX file (``None`` without ``onnx``)."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception:
        return None
    scopes = {}
    for n in proto.graph.node:
        meta = {p.key: p.value for p in n.metadata_props}
        scopes[n.name] = (meta.get("namespace", ""), n.op_type)
    return scopes


def _base_node(name: str) -> str:
    """The exported node behind an ONNX Runtime kernel: ``fused node_linear_6`` and
    ``node_matmul/MatMulScaleFusion/`` are graph-optimiser renames of ``node_linear_6``/``node_matmul``."""
    if name.startswith("fused "):
        name = name[len("fused ") :]
    return name.split("/", 1)[0]


def _is_attention(name: str, op: str, scope: str) -> bool:
    """The attention-share heuristic of the module docstring, for one node."""
    if "attention" in name.lower():
        return True
    modules = [m for m in (part.split(":")[0].strip() for part in scope.split("/")) if m]
    if any(m.split(".")[-1] in ("attn", "attention", "self_attn") or ".attn." in f"{m}." for m in modules):
        return True
    layers = [i for i, m in enumerate(modules) if re.search(r"(^|\.)layers\.\d+$", m)]
    if not layers or op not in ATTENTION_OPS:
        return False
    layer = modules[layers[-1]]
    return not any(m.startswith(layer + ".") for m in modules[layers[-1] + 1 :])  # not in ffn/norm/… children


def op_breakdown(profile_json: str, model_path: str, skip_first_run: bool = True) -> dict[str, Any]:
    """Kernel time by op type from an ONNX Runtime profile file, plus the attention share."""
    events = json.loads(Path(profile_json).read_text())
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    start = runs[0]["ts"] + runs[0]["dur"] if skip_first_run and len(runs) > 1 else -1
    scopes = _node_scopes(model_path)
    by_op: dict[str, list[float]] = {}
    attention = 0.0
    total = 0.0
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time") or e["ts"] < start:
            continue
        op = e.get("args", {}).get("op_name", "?")
        node = e["name"][: -len("_kernel_time")]
        dur = e["dur"] / 1000.0
        total += dur
        acc = by_op.setdefault(op, [0.0, 0])
        acc[0] += dur
        acc[1] += 1
        if scopes is not None:
            scope, base_op = scopes.get(_base_node(node), ("", op))
            if _is_attention(node, base_op, scope):
                attention += dur
        elif op in FALLBACK_ATTENTION_OPS or "attention" in node.lower():
            attention += dur
    timed_runs = max(1, len(runs) - (1 if start >= 0 else 0))
    timed = [r["dur"] / 1000.0 for r in runs if r["ts"] >= start] or [0.0]
    rows = [
        {"op_type": op, "ms_per_run": v[0] / timed_runs, "share": v[0] / total if total else 0.0, "calls": v[1]}
        for op, v in sorted(by_op.items(), key=lambda kv: -kv[1][0])
    ]
    return {
        "runs": timed_runs,
        "kernel_ms_per_run": total / timed_runs,
        # the whole run as the profiler saw it: timing every node slows it (measured here 1.5-1.8x a tiny
        # model's unprofiled call), so the breakdown's milliseconds are not the rows' milliseconds
        "profiled_run_ms": sum(timed) / len(timed),
        "by_op_type": rows,
        "attention_share": attention / total if total else 0.0,
        "attention_method": "scope" if scopes is not None else "op_type",
    }


# ---------------------------------------------------------------------------------- measuring


#: The op profile's scratch folders in the temp directory (ONNX Runtime's trace; :mod:`runtime.scratch`).
OP_PROFILE_PREFIX = "gtc-ortprof-"


def op_profile(
    path: str,
    threads: int | None,
    providers: list[str] | None,
    spec: InputSpec,
    config: tuple[int, int],
    iterations: int,
    avg_degree: float,
    seed: int,
) -> dict[str, Any]:
    """The per-op breakdown of one configuration (:func:`op_breakdown`), from a session of its own with
    ONNX Runtime's profiler on: the profiler slows every node, so the timed rows are never measured with it."""
    from runtime.measure import make_graphs
    from runtime.scratch import OwnedScratch
    from runtime.session import GraphSession

    # Owned, not a TemporaryDirectory: a child ended without clean-up (SIGKILL, the OOM killer, the stop
    # grace of _child_main) leaves its folder, and the next op profile removes it once its lock is free.
    scratch = OwnedScratch(OP_PROFILE_PREFIX)
    try:
        prefix = str(scratch.path / "ort")
        sess = GraphSession(path, providers, threads=threads, inter_op_threads=1, profile_prefix=prefix)
        if "onnxruntime" not in sess.platform:
            return {"threads": threads, "graph_nodes": config[0], "batch_size": config[1], "available": False}
        prepared = sess.prepare(make_graphs(spec, config[0], config[1], avg_degree, seed))
        for _ in range(iterations + 1):
            sess.run_inputs(prepared.inputs)
        prof = sess.end_profiling()
        res = op_breakdown(prof, path) if prof else {}
    finally:
        scratch.cleanup()
    return {"threads": threads, "graph_nodes": config[0], "batch_size": config[1], "available": bool(res), **res}
