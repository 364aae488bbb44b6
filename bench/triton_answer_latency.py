"""When each client of one Triton ``execute`` gets its answer: per-call answers vs all at the end, side by side.

    python bench/triton_answer_latency.py                        # 32 requests of 1,900 nodes, LapPE, 3 rounds
    python bench/triton_answer_latency.py --requests 8 --nodes 1000 --rounds 2

One real Triton server (``runtime.tritonserver``, the nvidia-pytriton wheel's binary) serves two models
of the python variant ``gtc export --triton-repo`` writes, from the same ONNX file of a small graph-level
GT with Laplacian PE (hidden 16, 1 layer, ``lap`` 2, padded lowering): ``on`` answers each request
through its response sender as its merged call ends (the default), ``off`` has the ``config.pbtxt``
parameter ``gtcompress_answer_each_call`` 0 and returns every answer at the end of ``execute`` (the
behaviour before a392102). Both have a queue delay long enough that every request lands in one
``execute``, which packs them into merged calls of at most ``--batch-nodes`` nodes
(``gtcompress_batch_nodes``, 8,192 by default: 4 graphs of 1,900 nodes a call, 8 calls).

Each round sends the same ``--requests`` graphs, all clients starting together, to one model and then
to the other, the order alternating from round to round so that the machine's load falls on both
alike. Writes ``answer_latency.json`` (command, commit, machine, date; per mode and round every client's
seconds from start to answer, first/median/last, how Triton grouped the requests into executes; the
ratios off/on) and ``answer_latency.png`` (each client's answer time, sorted, a line per mode and
round) under ``--out``, and prints the ratios.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS, at_least, provenance
from bench._json import write_json
from gtcompress.io import write_atomic

#: the two models the server holds: name -> gtcompress_answer_each_call
MODES = {"on": "1", "off": "0"}
STEM = "answer_latency"


def _stats(seconds: list[float]) -> dict[str, float]:
    got = sorted(seconds)
    return {"first": got[0], "median": float(np.median(got)), "last": got[-1]}


def _executes(client: Any, model: str) -> dict[int, int]:
    """Triton's count of executes by requests held, for ``model`` so far."""
    stats = client.get_inference_statistics(model)["model_stats"][0]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}


def _round(url: str, model: str, graphs: list[Any]) -> tuple[list[float | None], list[np.ndarray | None], list[str]]:
    """Every graph sent at once by its own client: each client's seconds from the common start to its
    answer (``None``: it got an error, listed in the third value) and its answer."""
    import tritonclient.http as triton

    from runtime.client import infer_graphs

    n = len(graphs)
    seconds: list[float | None] = [None] * n
    outputs: list[np.ndarray | None] = [None] * n
    errors: list[str] = []
    gate = threading.Barrier(n)

    def one(k: int) -> None:
        c = triton.InferenceServerClient(url, network_timeout=600)
        try:
            gate.wait()
            t0 = time.perf_counter()
            try:
                (outputs[k],) = infer_graphs(c, model, graphs[k])
            except Exception as e:  # recorded: the run goes on, and the JSON says which client failed
                errors.append(f"client {k}: {type(e).__name__}: {e}")
                return
            seconds[k] = time.perf_counter() - t0
        finally:
            c.close()

    threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return seconds, outputs, errors


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Export the model, serve it twice from one server, and time ``args.rounds`` alternated rounds."""
    import torch
    import tritonclient.http as triton

    from exporters.onnx import export_onnx
    from exporters.triton_repo import PythonModelOptions, write_model_repository
    from gtcompress.data.base import FeatureSpec
    from gtcompress.models import ModelConfig, build_model
    from gtcompress.preprocess.random_graphs import random_graph
    from runtime.client import infer_graphs
    from runtime.tritonserver import TritonServer

    torch.manual_seed(0)
    cfg = ModelConfig(
        arch="gt",
        node_features=FeatureSpec("float", 3),
        out_dim=2,
        hidden=16,
        heads=2,
        num_layers=1,
        pe={"lap": 2},
        task_level="graph",
    )
    rng = np.random.default_rng(0)
    n = args.nodes
    graphs = [random_graph(rng, n, 3 * n, FeatureSpec("float", 3), None) for _ in range(args.requests)]
    delay_us = 1_000_000
    modes: dict[str, dict[str, Any]] = {m: {"answer_each_call": flag == "1", "rounds": []} for m, flag in MODES.items()}
    agree = True
    with tempfile.TemporaryDirectory() as tmp:
        res = export_onnx(build_model(cfg).eval(), Path(tmp) / "m.onnx", "padded")
        opts = PythonModelOptions(max_batch_size=args.requests, max_queue_delay_us=delay_us)
        for model, flag in MODES.items():
            folder = write_model_repository(
                Path(tmp) / "repo", model, res.path, res.spec, backend="python", options=opts
            )
            with open(folder / "config.pbtxt", "a") as f:  # a temporary repository: appended in place
                for key, value in (("gtcompress_answer_each_call", flag), ("gtcompress_batch_nodes", args.batch_nodes)):
                    f.write(f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}\n')
        with TritonServer(Path(tmp) / "repo") as srv:
            admin = triton.InferenceServerClient(srv.url)
            for model in MODES:  # the stub's first call loads ONNX Runtime's kernels
                infer_graphs(admin, model, graphs[0])
            time.sleep(1)  # Triton counts an execute's requests when it returns, after their answers
            for r in range(args.rounds):
                order = list(MODES) if r % 2 == 0 else list(reversed(MODES))
                answers: dict[str, list[np.ndarray | None]] = {}
                for model in order:
                    before = _executes(admin, model)
                    seconds, answers[model], errors = _round(srv.url, model, graphs)
                    time.sleep(1)
                    after = _executes(admin, model)
                    grouped = {size: c - before.get(size, 0) for size, c in sorted(after.items())}
                    timed = [s for s in seconds if s is not None]
                    modes[model]["rounds"].append(
                        {
                            "round": r,
                            "position": order.index(model),  # 0: this mode ran first in the round
                            "seconds": seconds,  # by client (graph) index; None: that client got an error
                            "answered": len(timed),
                            "errors": errors,
                            "executes_by_requests": {str(k): v for k, v in grouped.items() if v},
                            **(_stats(timed) if timed else {}),
                        }
                    )
                agree = agree and all(
                    a is not None and b is not None and np.allclose(a, b, atol=1e-5)
                    for a, b in zip(answers["on"], answers["off"], strict=True)
                )
            admin.close()
    for mode in modes.values():
        done = [r for r in mode["rounds"] if r["answered"]]
        for stat in ("first", "median", "last"):  # the median round's, per statistic
            mode[stat] = float(np.median([r[stat] for r in done])) if done else None
    ratios: dict[str, Any] = {}
    for stat in ("first", "median", "last"):
        on, off = modes["on"][stat], modes["off"][stat]
        ratios[stat] = off / on if on and off is not None else None
    ratios["by_round"] = [
        {
            stat: (b[stat] / a[stat] if a.get(stat) and b.get(stat) is not None else None)
            for stat in ("first", "median", "last")
        }
        for a, b in zip(modes["on"]["rounds"], modes["off"]["rounds"], strict=True)
    ]
    return {
        "settings": {
            "requests": args.requests,
            "nodes": n,
            "edges": 3 * n,
            "rounds": args.rounds,
            "batch_nodes": args.batch_nodes,
            "max_queue_delay_us": delay_us,
            "model": "graph-level GT, hidden 16, 2 heads, 1 layer, LapPE k=2, padded lowering, 3 float features",
            "modes": {
                "on": "gtcompress_answer_each_call 1 (default): each request answered as its merged call ends",
                "off": "gtcompress_answer_each_call 0: every answer returned at the end of execute",
            },
        },
        "modes": modes,
        "answers_agree": agree,
        "ratios": ratios,  # off / on: above 1 where answering each call is faster
    }


def plot(report: dict[str, Any], path: Path) -> None:
    """Each client's seconds to its answer, sorted, a line per mode and round; renamed into place."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours = {"on": "tab:blue", "off": "tab:orange"}
    styles = ["-", "--", ":", "-."]
    for mode, doc in report["modes"].items():
        for r in doc["rounds"]:
            got = sorted(s for s in r["seconds"] if s is not None)
            ax.plot(
                range(1, len(got) + 1),
                got,
                styles[r["round"] % len(styles)],
                color=colours.get(mode),
                marker=".",
                label=f"{mode}, round {r['round'] + 1}",
            )
    s = report["settings"]
    ax.set(
        xlabel="clients, by answer time",
        ylabel="seconds from the common start to the answer",
        title=f"{s['requests']} requests of {s['nodes']} nodes in one Triton execute (python variant)",
    )
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, title="gtcompress_answer_each_call", title_fontsize=7)
    fig.tight_layout()
    try:  # renamed into place: a run killed while saving leaves the previous plot, not half a PNG
        write_atomic(path, lambda p: fig.savefig(p, format="png", dpi=120))
    finally:
        plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=at_least(1), default=32, help="concurrent clients, one graph each")
    p.add_argument("--nodes", type=at_least(2), default=1900, help="nodes per graph (3 edges a node)")
    p.add_argument("--rounds", type=at_least(1), default=3, help="rounds, each mode once per round, order alternating")
    p.add_argument(
        "--batch-nodes",
        type=at_least(1),
        default=8192,
        help="gtcompress_batch_nodes: the nodes of one merged call (fewer: more calls per execute)",
    )
    p.add_argument("--out", type=Path, default=RESULTS / "triton_answer", help="folder for the JSON and PNG")
    args = p.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():  # else a traceback after minutes of measuring
        p.error(f"argument --out: {args.out} is a file; expected a folder")
    # taken first, while the tree is clean (this run's own writes would make it look dirty)
    prov = provenance(None if argv is None else ["bench/triton_answer_latency.py", *argv])
    report = {**prov, **run(args)}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{STEM}.json", report)
    plot(report, args.out / f"{STEM}.png")
    s, ratios = report["settings"], report["ratios"]
    for mode in MODES:
        m = report["modes"][mode]
        shown = "  ".join(f"{k} {m[k]:.2f}" if m[k] is not None else f"{k} n/a" for k in ("first", "median", "last"))
        answered = ", ".join(f"{r['answered']}/{s['requests']}" for r in m["rounds"])
        print(f"{mode:>3} (median of {s['rounds']} rounds, s): {shown}   answered: {answered}")
    for stat in ("first", "median", "last"):
        value = ratios[stat]
        print(f"off / on, {stat} answer: {value:.2f}x" if value is not None else f"off / on, {stat} answer: n/a")
    if not report["answers_agree"]:
        print("warning: the two modes' answers differ (or a client got an error): see the JSON")
    print(f"wrote {args.out / (STEM + '.json')} and {STEM}.png")


if __name__ == "__main__":
    main()
