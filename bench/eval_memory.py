"""Peak memory and time of evaluating GPS and Graphormer on real datasets of mixed graph sizes, with
evaluation batches whole vs cut where their padded attention exceeds ``MAX_EVAL_CELLS``.

    python bench/eval_memory.py                                   # gps:tu:PROTEINS graphormer:tu:PROTEINS gps:tu:DD
    python bench/eval_memory.py --runs gps:tu:PROTEINS --max-whole-gib 4

A model attending densely within each graph pads an evaluation batch's graphs to its largest, so a
batch of 128 graphs holding one of 620 nodes (PROTEINS) or 5,748 (DD) holds 128 x largest^2 cells
a head. Each (run, mode) evaluates every graph of the dataset (``gtcompress.train.loop.predict``,
batches of 128, one thread) in a child process of its own, so its peak resident memory is its own;
the same seeded, untrained model in both modes, and the answers are compared. A whole-batch run whose
largest batch would need more than ``--max-whole-gib`` of float32 scores (one tensor of batch x
largest^2 x heads) is not started, and its estimate is recorded instead.

Writes ``bench/results/eval_memory/eval_memory.json`` (with the command, commit and machine) and
``eval_memory.png``.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import data_root
from bench._memory import MemoryBench, main

RUNS = ["gps:tu:PROTEINS", "graphormer:tu:PROTEINS", "gps:tu:DD"]
BATCH = 128
HEADS = 4
TITLE = "evaluating every graph, batches of {batch}, 1 thread: whole vs cut at MAX_EVAL_CELLS"


@functools.cache  # the parent reads each dataset once for its runs' sizes
def _graphs(dataset: str) -> tuple[list[Any], Any]:
    from gtcompress.data import load_dataset

    ds = load_dataset(dataset, root=data_root() / "TU")
    return [g for split in ("train", "val", "test") for g in ds.splits.get(split, [])], ds.info


def _largest_batch_cells(sizes: list[int]) -> int:
    return max(len(sizes[i : i + BATCH]) * max(sizes[i : i + BATCH]) ** 2 for i in range(0, len(sizes), BATCH))


def child(arch: str, dataset: str, mode: str, out: str) -> None:
    """One evaluation in this process: prints its JSON row; the logits go to ``out`` (.npy)."""
    import resource

    import numpy as np
    import torch

    import gtcompress.train.loop as loop
    from gtcompress.models import ModelConfig, build_model

    torch.set_num_threads(1)
    graphs, info = _graphs(dataset)
    torch.manual_seed(0)
    cfg = ModelConfig(
        arch=arch,
        node_features=info.node_features,
        edge_features=info.edge_features,
        out_dim=info.out_dim,
        hidden=64,
        heads=HEADS,
        num_layers=2,
        task_level="graph",
    )
    model = build_model(cfg).eval()
    if mode == "whole":
        loop.MAX_EVAL_CELLS = 2**62
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with torch.no_grad():
        logits, _ = loop.predict(model, graphs, BATCH)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    np.save(out, logits.numpy())
    print(json.dumps({"seconds": seconds, "peak_mib": peak / 1024, "before_eval_mib": before / 1024}))


def _max_abs_diff(a: Any, b: Any) -> dict[str, float]:
    return {"max_abs_diff": float(abs(a - b).max())}


def _row(dataset: str) -> dict[str, Any]:
    sizes = [g.num_nodes for g in _graphs(dataset)[0]]
    cells = _largest_batch_cells(sizes)
    return {
        "graphs": len(sizes),
        "largest_graph": max(sizes),
        "largest_batch_cells": cells,
        "whole_scores_gib": cells * HEADS * 4 / 2**30,
    }


def _settings() -> dict[str, Any]:
    from gtcompress.preprocess.batching import MAX_EVAL_CELLS

    return {"max_eval_cells": MAX_EVAL_CELLS, "batch_size": BATCH, "heads": HEADS}


BENCH = MemoryBench(
    name="eval_memory",
    script=__file__,
    description=__doc__.split("\n\n")[0],
    runs=RUNS,
    child=child,
    row_of=_row,
    key="logits",
    skipped="one scores tensor of its largest batch",
    compare=_max_abs_diff,
    settings=_settings,
    title=TITLE.format(batch=BATCH),
    what="batches",
)


if __name__ == "__main__":
    sys.exit(main(BENCH))
