"""TEDDY's accuracy cost split into its halves: edges alone, weights alone, both, a random-edge control
and the dense model fine-tuned for the same time.

From one dense checkpoint, every variant gets the same fine-tuning (``sparsify_model``: KD from the
dense model, same seed, learning rate, batch size and wall-time budget), so the differences are what
each half removes:

* ``dense-ft`` — no compression, the same extra training (:func:`gtcompress.compress.finetune.finetune_dense`);
* ``edges`` — TEDDY's lowest-scoring ``--edges`` of each graph's edges removed, weights dense;
* ``weights`` — all edges kept, ``--weights`` of the weights ℓ0-projected;
* ``both`` — the two together (``gtc sparsify --edges E --weights W``);
* ``random-edges`` — as ``edges`` with the same number of edges (undirected pairs) removed at random:
  TEDDY's own selection with every pair given a random score, so only the choice of edges differs.

Usage::

    python bench/teddy_split.py runs/gt-nci1 --minutes 3 --out bench/results/teddy_split/gt_nci1.json
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from bench._common import RESULTS, at_least, in_interval, provenance, set_threads, unknown_names
from bench._json import write_json

VARIANTS = ("dense-ft", "edges", "weights", "both", "random-edges")


@contextmanager
def random_edge_scores(seed: int) -> Iterator[None]:
    """While active, TEDDY ranks edges by a random score per unordered pair instead of its degree score.

    Everything else of :func:`gtcompress.preprocess.teddy.teddy_keep_mask` stays: how many edges go per
    graph, pairs going together, self-loops kept. The scores are drawn anew for every call (every graph,
    every split), from one seeded generator, so a run repeats."""
    import gtcompress.preprocess.teddy as teddy

    rng = np.random.default_rng(seed)
    original = teddy.teddy_edge_scores

    def scores(edge_index: np.ndarray, num_nodes: int) -> np.ndarray:
        ei = np.asarray(edge_index, dtype=np.int64)
        pair = np.minimum(ei[0], ei[1]) * max(num_nodes, 1) + np.maximum(ei[0], ei[1])
        _, pair_id = np.unique(pair, return_inverse=True)
        return rng.random(int(pair_id.max()) + 1 if pair_id.size else 0)[pair_id]

    teddy.teddy_edge_scores = scores
    try:
        yield
    finally:
        teddy.teddy_edge_scores = original


def _run(variant: str, model: Any, ds: Any, args: argparse.Namespace, dense: dict[str, float]) -> dict[str, Any]:
    from gtcompress.compress.finetune import finetune_dense
    from gtcompress.compress.teddy import SparsifyConfig, sparsify_model

    t0 = time.perf_counter()
    if variant == "dense-ft":
        ft = finetune_dense(
            model, ds, 1000, lr=args.lr, batch_size=args.batch_size, seed=args.seed + 1, time_budget_s=args.minutes * 60
        )
        r = ft.report
        row = {"variant": variant, "test": 100 * r["test"], "val": 100 * r["val"], "epochs": r["epochs_run"]}
        return row | {"kept_start": r["kept_start"], "seconds": time.perf_counter() - t0}
    edges = args.edges if variant in ("edges", "both", "random-edges") else 0.0
    weights = args.weights if variant in ("weights", "both") else 0.0
    cfg = SparsifyConfig(
        edges=edges,
        weights=weights,
        epochs=1000,  # an upper bound: --minutes decides
        batch_size=args.batch_size,
        lr=args.lr,
        time_budget_s=args.minutes * 60,
        seed=args.seed,
    )
    if variant == "random-edges":
        with random_edge_scores(args.seed):
            res = sparsify_model(model, ds, cfg, show_progress=False, dense_metrics=dense)
    else:
        res = sparsify_model(model, ds, cfg, show_progress=False, dense_metrics=dense)
    rep = res.report
    counts = rep["removed"]["edges"]["counts"]["test"]
    return {
        "variant": variant,
        "edges": edges,
        "weights": weights,
        "test": 100 * rep["metric"]["after"]["test"],
        "val": 100 * rep["metric"]["after"]["val"],
        "test_one_shot": 100 * rep["metric_one_shot"]["test"],
        "epochs": rep["finetune"]["epochs_run"],
        "kept_start": rep["finetune"].get("kept_start", False),  # fine-tuning never beat the one-shot model
        "test_edges_kept": counts["after"] / counts["before"],
        "seconds": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path, help="dense checkpoint directory (gtc train)")
    ap.add_argument("--data-root", type=Path, default=None, help="folder of a file-based dataset (tu:NCI1: .../TU)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), help=f"any of {', '.join(VARIANTS)}")
    ap.add_argument("--edges", type=in_interval("[0, 1)"), default=0.3, help="fraction of edges removed")
    ap.add_argument("--weights", type=in_interval("[0, 1)"), default=0.5, help="fraction of weights zeroed")
    ap.add_argument("--minutes", type=float, default=3.0, help="fine-tuning wall time of every variant")
    ap.add_argument("--batch-size", type=at_least(1), default=64)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seed", type=at_least(0), default=0)
    ap.add_argument("--threads", type=at_least(0), default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    problem = unknown_names("--variants", args.variants, list(VARIANTS))
    if problem:
        ap.error(problem)
    if not (args.checkpoint / "config.json").is_file():
        ap.error(f"{args.checkpoint}: not a checkpoint directory (no config.json)")
    prov = provenance()
    set_threads(prov, args.threads)
    out = args.out or RESULTS / "teddy_split" / f"{args.checkpoint.name}.json"

    from gtcompress.checkpoint import load_checkpoint
    from gtcompress.checkpoint_data import checkpoint_data_spec
    from gtcompress.compress.distill import attach_teacher
    from gtcompress.train.loop import evaluate

    model, meta = load_checkpoint(args.checkpoint)
    spec = checkpoint_data_spec(meta, None, root=None if args.data_root is None else str(args.data_root))
    if spec is None:
        ap.error(f"{args.checkpoint}: no dataset recorded in the checkpoint")
    ds = spec.load_for(model.config)
    metric = ds.info.metric
    dense = {s: evaluate(model, ds[s], ds.info)[metric] for s in ("val", "test")}
    data_kd = attach_teacher(ds, copy.deepcopy(model).eval())  # the teacher's logits once, on the original graphs
    rows: list[dict[str, Any]] = [{"variant": "dense", "test": 100 * dense["test"], "val": 100 * dense["val"]}]
    for variant in args.variants:
        row = _run(variant, model, data_kd, args, dense)
        row["delta_test"] = row["test"] - rows[0]["test"]
        rows.append(row)
        kept = "  (fine-tuning lost to its start, kept)" if row["kept_start"] else ""
        print(
            f"{variant:13s} test {row['test']:.2f} ({row['delta_test']:+.2f})  val {row['val']:.2f}{kept}", flush=True
        )
        write_json(out, {**prov, "settings": {**vars(args), "metric": metric}, "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
