"""``gtc profile``: latency and memory of exported models on edge-class CPUs, side by side.

Checkpoint directories are profiled with torch on ``device`` (a GPU without TensorRT, optionally
with CUDA-graph replay) by :mod:`runtime.profile_torch`, next to the ONNX rows (then ONNX Runtime
CPU unless ``providers`` says otherwise); every entry carries ``backend`` and ``device``.

For every model (dense vs compressed, ONNX vs engine…), every intra-op thread count and every
(graph size, batch size): warm-up, then N timed iterations of the whole deployed path —
pre-processing (:meth:`GraphSession.prepare`: validation, TEDDY, union, PE, layout) and the model
call (:meth:`GraphSession.run_inputs`) timed separately — reported as mean, std, p50/p90/p99,
graphs/s, the pre-processing share and peak RSS. A TensorRT engine (``.plan``) has no intra-op
threads: it is measured once per (graph size, batch size), unpinned, with ``threads: null``
(:func:`thread_runs`), and ``settings.notes`` says why.

Small edge CPUs are emulated by running each thread count in a fresh process pinned with
``os.sched_setaffinity`` to that many cores (where the OS has it), so one measurement cannot
disturb the next; numpy's BLAS pool (used by PE pre-processing) gets the same thread count.
``isolate=False`` measures in the calling process (affinity restored afterwards, BLAS pool as it
is). ``peak_rss_mb`` is that process's high-water mark after the configuration
(interpreter + numpy + ONNX Runtime + this one model + the largest batch so far: configurations are
measured smallest first, nodes × batch, so it is the row's own or one no larger); ``model_rss_mb``
is the mark right after loading the model. Random graphs matching the model's input spec
come from :mod:`gtcompress.preprocess.random_graphs` (``avg_degree`` edges per node).

Per-op breakdown: ONNX Runtime's profiler (``enable_profiling``) on one configuration per model,
kernel time summed by op type. The profiler slows every node, so those milliseconds add up to more
than the model call the latency rows measured: ``profiled_run_ms`` (the whole profiled run) is kept
beside them and the table's caption compares it with the unprofiled call; read the shares.
*Attention share* heuristic: a node counts as attention when its
exporter scope (the ``namespace`` node metadata that ``torch.onnx`` writes) lies in an ``attn``/
``attention`` module, or it sits directly in a transformer layer's scope (not in its FFN/norm
children) and its op is one attention is made of (MatMul, Softmax, Exp, ReduceMax, ReduceSum,
Where, Div, Gather, GatherElements, ScatterElements), or its name says attention (plugin op
functions). Without the ``onnx`` package the fallback counts Softmax, ScatterElements,
GatherElements and non-Gemm MatMul ops; the report says which method was used.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from runtime import profile_failures as failures
from runtime.errors import SessionError
from runtime.measure import machine_info, make_graphs, peak_rss_mb, pinned, time_session
from runtime.profile_labels import model_entry as _model_entry
from runtime.profile_labels import model_labels
from runtime.profile_ops import op_profile
from runtime.profile_report import SCHEMA, compare_models, report_tables, validate_report, write_report
from runtime.profile_rounds import cold_note, merge_rounds, plan_rounds, unsteady_note

Progress = Callable[[int, int, str], None]

TENSORRT_NOTE = (
    "rows with threads null of a TensorRT engine (.plan): the engine runs on the GPU, where intra-op thread "
    "counts do not apply, so each configuration ran once a round, not once a thread count, in a process not "
    "pinned to cores"
)
NOT_ISOLATED_NOTE = (
    "ONNX rows measured in the calling process (isolate off): their peak_rss_mb and model_rss_mb are that "
    "process's high-water mark, which includes the models profiled before them and whatever the caller holds"
)


def thread_runs(path: str, threads: Sequence[int]) -> list[int | None]:
    """The thread counts a model is measured at: each of ``threads`` for an ONNX file (ONNX Runtime's
    intra-op threads, pinned to as many cores), one run (``None``) for a TensorRT engine, whose
    threads do not exist: measured per count, its rows repeated one measurement as many times."""
    from runtime.session import PLAN_SUFFIXES

    return [None] if Path(path).suffix in PLAN_SUFFIXES else [int(t) for t in threads]


def measure_model(
    path: str,
    threads: int | None,
    configs: Sequence[tuple[int, int]],
    iterations: int,
    warmup: int,
    avg_degree: float,
    seed: int,
    providers: list[str] | None,
    op_config: tuple[int, int] | None,
    op_iterations: int,
    emit: Callable[[dict[str, Any]], None],
) -> None:
    """Measure one model at one thread count (in this process, pinned; ``None``: a TensorRT engine,
    not pinned); ``emit`` gets each result."""
    from runtime.session import GraphSession

    pin = pinned(threads) if threads is not None else contextlib.nullcontext((None, False))
    with pin as (cpus, oversubscribed):
        sess = GraphSession(path, providers, threads=threads, inter_op_threads=1)
        base_rss = peak_rss_mb()
        for nodes, batch in configs:
            graphs = make_graphs(sess.spec, nodes, batch, avg_degree, seed)
            row = time_session(sess, graphs, iterations, warmup)
            emit(
                {
                    "kind": "result",
                    "threads": threads,
                    "graph_nodes": nodes,
                    "batch_size": batch,
                    **row,
                    "model_rss_mb": base_rss,
                    "cpus": cpus,
                    "oversubscribed": oversubscribed,
                    "providers": sess.providers,
                }
            )
        if op_config is not None:
            ops = op_profile(path, threads, providers, sess.spec, op_config, op_iterations, avg_degree, seed)
            emit({"kind": "ops", **ops})


#: Seconds a measuring child stopped by SIGTERM or Ctrl-C has to clean up before it is ended regardless
#: (:func:`runtime.children.exit_if_stop_is_not_heard`): its clean-up (the op profile's folder) takes
#: milliseconds once Python hears the signal, which a native call can delay past any bound (a folder left
#: then is the next op profile's to remove: :data:`runtime.profile_ops.OP_PROFILE_PREFIX`).
STOP_GRACE_S = 10.0


#: Seconds a measuring child has to exit after its last event before it is killed and its pass failed.
EXIT_WAIT_S = 60.0


class _ParentGone(Exception):
    """The parent closed the event stream: it stopped reading (Ctrl-C, or it gave up on an error)."""


def _child_main() -> None:
    """Entry of an isolated measurement process: kwargs as JSON on stdin, events as JSON lines.

    Ctrl-C reaches the whole process group, so the parent stops on its own ``KeyboardInterrupt``:
    the child then ends quietly, and so it does when the parent has stopped reading, instead of
    printing a ``KeyboardInterrupt``/``BrokenPipeError`` traceback under the parent's one error line.
    SIGTERM, which it gets when the parent dies (:func:`runtime.children.stop_with_parent`), ends it
    the same way: by default it ended the process outright, leaving the op profile's temporary folder
    (``gtc-ortprof-*``, ONNX Runtime's trace in it) in the system's temp directory."""
    terminated: list[int] = []

    def on_sigterm(signum: int, frame: object) -> None:
        # One is enough: a group kill (timeout(1), kill -- -PGID) sends a second one as the parent dies
        # (PR_SET_PDEATHSIG), which would interrupt the clean-up or print a traceback at exit.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        terminated.append(signum)
        raise KeyboardInterrupt  # the clean-up runs

    signal.signal(signal.SIGTERM, on_sigterm)
    from runtime.children import exit_if_stop_is_not_heard

    exit_if_stop_is_not_heard(STOP_GRACE_S)  # a long native call hears neither handler until it returns
    kwargs = json.loads(sys.stdin.read())
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing else may write to the event stream

    def emit(msg: dict[str, Any]) -> None:
        try:
            out.write(json.dumps(msg) + "\n")
            out.flush()
        except BrokenPipeError:
            raise _ParentGone from None

    try:
        try:
            measure_model(**kwargs, emit=emit)
        except (KeyboardInterrupt, _ParentGone):
            raise
        except BaseException as e:  # report to the parent instead of dying silently
            # our own errors are messages for the user; anything else keeps its type for a bug report
            emit({"kind": "error", "error": str(e) if isinstance(e, SessionError) else f"{type(e).__name__}: {e}"})
        emit({"kind": "done"})
    except (KeyboardInterrupt, _ParentGone):
        with contextlib.suppress(OSError):  # nobody reads fd 1 now: its last flush at exit must not fail
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        if terminated:  # a parent still reading says how the child ended: 143, as the signal itself would
            raise SystemExit(128 + terminated[0]) from None


def _run_isolated(kwargs: dict[str, Any], on_event: Callable[[dict[str, Any]], None]) -> None:
    """Run :func:`measure_model` in a fresh interpreter (works from scripts, notebooks and stdin)."""
    import subprocess

    from runtime.children import stop_with_parent

    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    if (n := kwargs["threads"]) is not None:  # numpy's BLAS (PE) too
        env.update(dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), str(n)))
    cmd = [sys.executable, "-c", "from runtime.profile import _child_main; _child_main()"]
    # The child ends with us (PR_SET_PDEATHSIG), or a ``gtc profile`` killed by PID alone leaves it measuring,
    # orphaned, loading a core under the next run's timings. errors: a native library may print any bytes.
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True, "errors": "replace"}
    with subprocess.Popen(cmd, **pipes, env=env, preexec_fn=stop_with_parent()) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        with contextlib.suppress(BrokenPipeError):  # it died at once: said below, as a death
            proc.stdin.write(json.dumps(kwargs))
            proc.stdin.close()
        finished, error, stray = False, None, []
        for line in proc.stdout:
            if (msg := _event(line)) is None:  # a native library's print on fd 1: kept for a death's message
                stray.append(line.strip())
            elif msg["kind"] == "done":
                finished = True
                break
            elif msg["kind"] == "error":  # read on to "done": closing the pipe now breaks the child's last write
                error = msg["error"]
            elif error is None:
                on_event(msg)
        try:
            proc.wait(EXIT_WAIT_S)
        except subprocess.TimeoutExpired:  # hung in its exit (a native library's teardown): its rows are in
            proc.kill()
            error = error or f"the measuring process did not exit within {EXIT_WAIT_S:g} s of its last event: killed"
    if error is not None:
        raise failures.pass_failed(kwargs["path"], kwargs["threads"], error)
    if not finished:
        raise failures.process_died(kwargs["path"], proc.returncode, stray)


def _event(line: str) -> dict[str, Any] | None:
    """The event a line of the child's stdout carries; ``None`` for a line that is none, printed by a native
    library to fd 1, which the child's ``sys.stdout`` swap cannot redirect: skipped, not a lost pass. Every
    event starts ``{"kind": ``, and a print without its newline may precede one on its line."""
    with contextlib.suppress(ValueError):  # no event on the line: its last character, not JSON or no object
        msg = json.loads(line[line.find('{"kind": ') :])
        return msg if isinstance(msg, dict) else None
    return None


def _in_process(kwargs: dict[str, Any], on_event: Callable[[dict[str, Any]], None]) -> None:
    """:func:`measure_model` in this process (``isolate=False``); its error as :func:`_run_isolated` reports a
    child's. A Ctrl-C is no error: it goes on up."""
    try:
        measure_model(**kwargs, emit=on_event)
    except Exception as e:
        raise failures.pass_failed(kwargs["path"], kwargs["threads"], failures.error_text(e)) from e


def _pass_name(threads: int | None, torch_device: str | None) -> str:
    """How the progress bar names a pass: its thread count, or ``TensorRT`` (an engine's one pass);
    a checkpoint's (``torch_device``) leads with its device."""
    count = None if threads is None else f"{threads} thread{'s' if threads > 1 else ''}"
    if torch_device is None:
        return count or "TensorRT"
    return " · ".join(filter(None, [torch_device, count]))


def profile_models(
    paths: Sequence[str | Path],
    graph_sizes: Sequence[int] = (32, 128, 512),
    batch_sizes: Sequence[int] = (1, 16),
    threads: Sequence[int] = (1, 2, 4),
    iterations: int = 50,
    warmup: int = 5,
    *,
    avg_degree: float = 4.0,
    seed: int = 0,
    providers: list[str] | None = None,
    op_profile: bool = True,
    op_iterations: int = 10,
    isolate: bool = True,
    names: Sequence[str] | None = None,
    progress: Progress | None = None,
    device: str | None = None,
    cuda_graphs: bool = False,
    max_attention_mib: float | None = None,
    max_pe_work: float | None = None,
    max_inflight_mib: float | None = None,
    rounds: int | None = None,
    on_failure: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Profile every model over threads × graph sizes × batch sizes; returns the report dict.

    ``isolate`` runs each (model, thread count) in its own pinned process (accurate RSS, no
    interference); ``isolate=False`` measures in this process and restores the CPU affinity.
    A configuration whose attention would take more than ``max_attention_mib`` a layer, whose positional
    encodings would take more than ``max_inflight_mib`` while computed, or whose encodings and
    shortest-path distances more than ``max_pe_work`` steps (``None``: ``gtc serve``'s default limits),
    counted as the server counts a request, is refused before any model is measured
    (:func:`runtime.profile_cost.check_costs`).

    ``iterations`` are shared out over ``rounds`` (``None``: :func:`runtime.profile_rounds.default_rounds`):
    round after round, each model measures its share of every configuration (after ``warmup`` untimed calls:
    each round is a fresh process or session, a checkpoint's a fresh load in this process; an exported model's
    ``warmup`` 0 is one round, and refused with more, which would each time a cold first call:
    :func:`runtime.profile_rounds.cold_rounds_refusal`), so that the models are timed in turn, and rows whose
    rounds disagree are named in ``settings.notes`` (:mod:`runtime.profile_rounds`).
    ``progress`` is first called with ``(0, total, ...)`` once every check has passed, then once a step.

    A pass that fails stops, and every other goes on (:mod:`runtime.profile_failures`): ``on_failure`` gets
    each failure's record as it happens, and :class:`~runtime.profile_failures.ProfileIncomplete` is raised
    at the end with the report of what was measured (``report["failed"]`` names what was not)."""
    from runtime.session import is_checkpoint, resolve_model_path

    if iterations < 2 or warmup < 0:
        raise SessionError("profile: need at least 2 iterations and a non-negative warm-up")
    exported = not all(is_checkpoint(p) for p in paths)  # a torch row always warms up: no cold rounds
    shares = plan_rounds(int(iterations), int(warmup), None if rounds is None else int(rounds), exported)
    if not paths:
        raise SessionError("profile: no model given")
    if not graph_sizes or not batch_sizes or not threads or min(*graph_sizes, *batch_sizes, *threads) < 1:
        raise SessionError("profile: graph sizes, batch sizes and thread counts must be positive")
    for what, values in (("graph sizes", graph_sizes), ("batch sizes", batch_sizes), ("thread counts", threads)):
        if len({int(v) for v in values}) != len(values):  # each configuration measured twice, rows duplicated
            raise SessionError(f"profile: {what} {[int(v) for v in values]} repeat a value")
    resolved = [str(resolve_model_path(p)) for p in paths]
    labels = list(names) if names else model_labels(resolved)
    if len(labels) != len(resolved) or not all(labels) or len(set(labels)) != len(labels):
        raise SessionError(f"profile: names {labels} must be {len(resolved)} distinct non-empty labels, one per model")
    configs = [(int(n), int(b)) for n in graph_sizes for b in batch_sizes]
    # measured smallest first, reported in the order given: peak_rss_mb is the process's high-water mark so far,
    # so with --sizes 512,32 the 32-node rows read 337 MB, what the 512-node ones had left (86 MB measured first)
    measured = sorted(configs, key=lambda c: (c[0] * c[1], c))
    order = {c: i for i, c in enumerate(configs)}
    op_config = (int(sorted(graph_sizes)[len(graph_sizes) // 2]), int(max(batch_sizes)))
    ckpts, tp = {p for p in resolved if is_checkpoint(p)}, None
    if (device is not None or cuda_graphs) and not ckpts:
        raise SessionError("profile: device/cuda_graphs apply to checkpoint directories (torch); none was given")
    if providers is not None and len(ckpts) == len(resolved):  # else ignored: torch rows, 'providers: cuda' saved
        raise SessionError(
            "profile: providers apply to exported models (ONNX Runtime); every model given is a checkpoint "
            "directory, which runs with torch: choose its device instead"
        )
    providers = ["CPUExecutionProvider"] if ckpts and providers is None else providers  # torch rows vs ORT CPU
    if ckpts:  # torch rows (runtime.profile_torch imports torch)
        from runtime.profile_torch import CheckpointProfiler

        tp = CheckpointProfiler(device, cuda_graphs, threads, warmup, avg_degree, seed)
        tp.check([p for p in resolved if p in ckpts])
    from runtime import profile_cost as cost  # not in the children

    def limit(value: float | None, default: float) -> float:
        return default if value is None else float(value)

    cost.check_costs(
        resolved,
        configs,
        float(avg_degree),
        int(seed),
        limit(max_attention_mib, cost.DEFAULT_MAX_ATTENTION_MIB),
        limit(max_pe_work, cost.DEFAULT_MAX_PE_WORK),
        limit(max_inflight_mib, cost.DEFAULT_MAX_INFLIGHT_MIB),
    )
    # by position, not path: a model given twice (an A/A run, to see the noise) is two models; a pass a thread
    # count (None: a GPU's one), each round
    runs = {k: tp.threads if tp and p in ckpts else thread_runs(p, threads) for k, p in enumerate(resolved)}
    ops_due = {k: op_profile and p not in ckpts for k, p in enumerate(resolved)}  # ONNX Runtime's profiler only
    total = sum(len(r) * len(configs) * len(shares) + ops_due[k] for k, r in runs.items())
    done = 0
    if progress is not None:  # every refusal above comes before this first call (the CLI opens its bar on it)
        progress(0, total, "profiling")

    def tick(what: str, steps: int = 1, skipped: int = 0) -> None:
        nonlocal done, total
        done, total = done + steps, total - skipped
        if progress is not None:
            progress(done, total, what)

    failed: list[dict[str, Any]] = []
    messages: list[str] = []

    def fail(record: dict[str, Any], message: str) -> None:  # the pass is over; the others go on
        failed.append(record)
        messages.append(message)
        if on_failure is not None:
            on_failure(record)

    entries = [
        {**(tp.entry(label, path) if tp and path in ckpts else _model_entry(label, path)), "rounds": len(shares)}
        for label, path in zip(labels, resolved, strict=True)
    ]
    rows: dict[int, dict[tuple[int | None, int, int], list[dict[str, Any]]]] = {k: {} for k in runs}
    # Round after round, and in a round a thread count at a time, every model, checkpoints (torch, in this
    # process) too: the models of one thread count are timed minutes apart at most (runtime.profile_rounds).
    passes = sorted(((k, t) for k in runs for t in runs[k]), key=lambda kt: (runs[kt[0]].index(kt[1]), kt[0]))
    stopped: set[tuple[int, int | None]] = set()  # passes that failed at a size: their later rounds are not run
    for i, share in enumerate(shares):
        for k, t in passes:
            if (k, t) in stopped:
                continue
            entry, path = entries[k], resolved[k]
            op_asked = ops_due[k] and i == 0 and t == runs[k][0]
            kwargs = {
                "path": path,
                "threads": t,
                "configs": measured,
                "iterations": share,
                "warmup": int(warmup),
                "avg_degree": float(avg_degree),
                "seed": int(seed),
                "providers": providers,
                "op_config": op_config if op_asked else None,
                "op_iterations": int(op_iterations),
            }
            what = _pass_name(t, entry["device"] if path in ckpts else None) + (
                f" · round {i + 1}/{len(shares)}" if len(shares) > 1 else ""
            )

            got: list[str] = []  # the events of this pass so far

            def on_event(
                msg: dict[str, Any], entry: dict[str, Any] = entry, k: int = k, what: str = what, got: list[str] = got
            ) -> None:
                kind = msg.pop("kind")
                got.append(kind)
                if kind == "model":  # a checkpoint loaded for its pass: what loading it tells
                    entry.update(msg)
                    return
                if kind == "result":
                    if "providers" in msg:  # an exported model's (a checkpoint's come with its model event)
                        entry["providers"] = msg.pop("providers")
                        entry["device"] = "cpu" if entry["providers"] == ["CPUExecutionProvider"] else "gpu"
                    rows[k].setdefault((msg["threads"], msg["graph_nodes"], msg["batch_size"]), []).append(msg)
                elif kind == "ops":
                    entry["ops"] = msg
                tick(f"{entry['name']} · {what}")

            try:
                if tp and path in ckpts:
                    tp.run_pass(path, t, measured, share, on_event)
                else:
                    (_run_isolated if isolate else _in_process)(kwargs, on_event)
            except failures.PassFailed as e:
                left = measured[got.count("result") :]  # a pass measures its sizes in this order
                ops_left = kwargs["op_config"] is not None and "ops" not in got  # asked, and not given
                fail(failures.failure(entry["name"], path, t, i + 1, len(shares), left, e.detail, ops_left), str(e))
                if left:
                    stopped.add((k, t))
                later = (len(shares) - i - 1) * len(configs) if left else 0  # its later rounds' steps
                tick(f"{entry['name']} · {what}: failed", 0, len(left) + ops_left + later)
    for k, by_config in rows.items():
        entry = entries[k]
        if op_profile and "ops" not in entry:
            entry["ops"] = None
        runs_t = {t: i for i, t in enumerate(runs[k])}
        entry["results"] = sorted(
            (merge_rounds(r) for r in by_config.values()),
            key=lambda r: (runs_t[r["threads"]], order[(r["graph_nodes"], r["batch_size"])]),
        )
    models = entries
    for m in models:
        for r in m["results"]:
            r["rounds_completed"] = len(r["rounds_p50_ms"])
    if progress is not None:
        progress(total, total, f"done, {len(failed)} failed" if failed else "done")
    report = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {**machine_info(), **(tp.machine() if tp is not None else {})},
        "settings": {
            "graph_sizes": [int(n) for n in graph_sizes],
            "batch_sizes": [int(b) for b in batch_sizes],
            "threads": [int(t) for t in threads],
            "iterations": int(iterations),
            "warmup": int(warmup),
            "rounds": len(shares),
            "avg_degree": float(avg_degree),
            "seed": int(seed),
            "providers": providers,
            "isolated_processes": bool(isolate),
            "op_profile_config": {"graph_nodes": op_config[0], "batch_size": op_config[1]} if op_profile else None,
            "device": device,
            "cuda_graphs": bool(cuda_graphs),
            "notes": [
                *(tp.notes(models) if tp is not None else []),
                *([TENSORRT_NOTE] if any(runs[k] == [None] for k, p in enumerate(resolved) if p not in ckpts) else []),
                *([NOT_ISOLATED_NOTE] if not isolate and len(ckpts) < len(resolved) else []),
                *filter(None, [cold_note(int(warmup), len(ckpts) < len(resolved), bool(ckpts))]),
                *filter(None, [unsteady_note(models), failures.short_rows_note(models)]),
            ],
        },
        "models": models,
        "comparison": compare_models(models, failed),
        "failed": failed,  # passes that failed (runtime.profile_failures): the rows are what the others measured
    }
    if failed:
        raise failures.ProfileIncomplete(report, messages)
    return report


__all__ = [
    "SCHEMA",
    "machine_info",
    "profile_models",
    "report_tables",
    "validate_report",
    "write_report",
]
