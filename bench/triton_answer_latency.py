"""When each client of one Triton ``execute`` gets its answer: the python variant's per-call responses.

    python bench/triton_answer_latency.py                        # 32 requests of 1,900 nodes, LapPE
    python bench/triton_answer_latency.py --requests 8 --nodes 1000

A real Triton server (``runtime.tritonserver``, the nvidia-pytriton wheel's binary) serves the
python-variant repository ``gtc export --triton-repo`` writes for a small graph-level GT with
Laplacian PE (hidden 16, 1 layer, ``lap`` 2, padded lowering), with a queue delay long enough that
every request lands in one ``execute``, which packs them into merged calls of at most 8,192 nodes
(the default soft limit: 4 graphs of 1,900 nodes a call). All clients start together; the script
prints each one's seconds from start to answer, sorted, and how Triton grouped the requests. With
answers sent per merged call the first clients hear after one call; returned from ``execute``,
every client waited for the last. Prints only: the numbers go to bench/HISTORY.md by hand.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import at_least


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=at_least(1), default=32, help="concurrent clients, one graph each")
    p.add_argument("--nodes", type=at_least(2), default=1900, help="nodes per graph (3 edges a node)")
    args = p.parse_args(argv)

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
    with tempfile.TemporaryDirectory() as tmp:
        res = export_onnx(build_model(cfg).eval(), Path(tmp) / "m.onnx", "padded")
        opts = PythonModelOptions(max_batch_size=max(args.requests, 1), max_queue_delay_us=1_000_000)
        write_model_repository(Path(tmp) / "repo", "m", res.path, res.spec, backend="python", options=opts)
        with TritonServer(Path(tmp) / "repo") as srv:
            warm = triton.InferenceServerClient(srv.url)
            infer_graphs(warm, "m", graphs[0])  # the stub's first call loads ONNX Runtime's kernels
            time.sleep(1)  # Triton counts an execute's requests when it returns, after their answers
            before = warm.get_inference_statistics("m")["model_stats"][0]
            seconds = [0.0] * args.requests
            gate = threading.Barrier(args.requests)

            def one(k: int) -> None:
                c = triton.InferenceServerClient(srv.url, network_timeout=600)
                gate.wait()
                t0 = time.perf_counter()
                infer_graphs(c, "m", graphs[k])
                seconds[k] = time.perf_counter() - t0
                c.close()

            threads = [threading.Thread(target=one, args=(k,)) for k in range(args.requests)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            time.sleep(1)
            stats = warm.get_inference_statistics("m")["model_stats"][0]
            warm.close()
    counts = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in before.get("batch_stats", [])}
    sizes = {
        int(b["batch_size"]): int(b["compute_infer"]["count"]) - counts.get(int(b["batch_size"]), 0)
        for b in stats["batch_stats"]
    }
    got = sorted(seconds)
    shown = ", ".join(f"{c} of {size}" for size, c in sorted(sizes.items()) if c)
    print(f"{args.requests} requests of {n} nodes; execute calls by requests held: {shown}")
    print("seconds to answer, sorted:", " ".join(f"{s:.2f}" for s in got))
    print(f"first {got[0]:.2f}  median {float(np.median(got)):.2f}  last {got[-1]:.2f}")


if __name__ == "__main__":
    main()
