"""Peak memory and time of a training step of GPS and Graphormer on a batch that holds a dataset's
largest graph, with the batch whole vs cut where its padded attention exceeds ``MAX_TRAIN_CELLS``.

    python bench/train_memory.py                              # gps:tu:PROTEINS graphormer:tu:PROTEINS gps:tu:DD
    python bench/train_memory.py --runs gps:tu:DD --max-whole-gib 4

A model attending densely within each graph pads a batch's graphs to its largest, and training keeps
every layer's scores for the backward pass. Each (run, mode) runs ``gtcompress.train.loop.train`` for
one epoch of one step (batch 32: the dataset's largest graph and 31 others drawn with a fixed seed;
validation on one small graph) in a child process of its own, so its peak resident memory is its
own; the same seeded model in both modes. In training mode BatchNorm sees each micro-batch's own
statistics, so the two gradients differ by that alone: the relative difference of the whole
gradient vector is recorded. A whole-batch run whose one float32 scores tensor (batch x largest^2 x
heads) would exceed ``--max-whole-gib`` is not started; its estimate is recorded instead.

Writes ``bench/results/train_memory/train_memory.json`` (with the command, commit and machine) and
``train_memory.png``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import data_root
from bench._memory import MemoryBench, main

RUNS = ["gps:tu:PROTEINS", "graphormer:tu:PROTEINS", "gps:tu:DD"]
BATCH = 32
HEADS = 4
TITLE = "one training step, a batch of {batch} with the largest graph, 1 thread: whole vs cut"


def _batch(dataset: str) -> tuple[list[Any], Any, Any]:
    """The step's graphs (the largest first, then 31 drawn with seed 0), one validation graph, the info."""
    import torch

    from gtcompress.data import load_dataset

    ds = load_dataset(dataset, root=data_root() / "TU")
    graphs = [g for split in ("train", "val", "test") for g in ds.splits.get(split, [])]
    largest = max(range(len(graphs)), key=lambda i: graphs[i].num_nodes)
    rest = [i for i in range(len(graphs)) if i != largest]
    pick = torch.randperm(len(rest), generator=torch.Generator().manual_seed(0))[: BATCH - 1].tolist()
    smallest = min(range(len(graphs)), key=lambda i: graphs[i].num_nodes)
    return [graphs[largest]] + [graphs[rest[i]] for i in pick], graphs[smallest], ds.info


def child(arch: str, dataset: str, mode: str, out: str) -> None:
    """One training step in this process: prints its JSON row; the gradient goes to ``out`` (.npy)."""
    import resource

    import numpy as np
    import torch

    import gtcompress.train.loop as loop
    from gtcompress.data.base import GraphDataset
    from gtcompress.models import ModelConfig, build_model

    torch.set_num_threads(1)
    group, val, info = _batch(dataset)
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
    model = build_model(cfg)
    if mode == "whole":
        loop.MAX_TRAIN_CELLS = 2**62  # type: ignore[attr-defined]
    grads: list[np.ndarray] = []
    step = torch.optim.AdamW.step

    def record(self, *a, **k):  # type: ignore[no-untyped-def]
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]).numpy())
        return step(self, *a, **k)

    torch.optim.AdamW.step = record  # type: ignore[method-assign]
    cfg_train = loop.TrainConfig(epochs=1, batch_size=BATCH, warmup_epochs=1, lap_sign_flip=False)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    loop.train(model, GraphDataset(info, {"train": group, "val": [val]}), cfg_train, show_progress=False)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    np.save(out, grads[0])
    print(json.dumps({"seconds": seconds, "peak_mib": peak / 1024, "before_train_mib": before / 1024}))


def _grad_rel_diff(a: Any, b: Any) -> dict[str, float]:
    import numpy as np

    return {"grad_rel_diff": float(np.linalg.norm(a - b) / np.linalg.norm(a))}


def _row(dataset: str) -> dict[str, Any]:
    sizes = [g.num_nodes for g in _batch(dataset)[0]]
    cells = len(sizes) * max(sizes) ** 2
    return {
        "largest_graph": max(sizes),
        "batch_nodes": sum(sizes),
        "whole_cells": cells,
        "whole_scores_gib": cells * HEADS * 4 / 2**30,
    }


def _settings() -> dict[str, Any]:
    from gtcompress.train.steps import MAX_TRAIN_CELLS

    return {"max_train_cells": MAX_TRAIN_CELLS, "batch_size": BATCH, "heads": HEADS}


BENCH = MemoryBench(
    name="train_memory",
    script=__file__,
    description=__doc__.split("\n\n")[0],
    runs=RUNS,
    child=child,
    row_of=_row,
    key="grad",
    skipped="one scores tensor of the whole batch",
    compare=_grad_rel_diff,
    settings=_settings,
    title=TITLE.format(batch=BATCH),
    what="batch",
)


if __name__ == "__main__":
    sys.exit(main(BENCH))
