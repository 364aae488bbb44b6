r"""TEDDY (Seo et al., ICLR 2024) on graph transformers: edge sparsification + ℓ0-projected weights
+ distillation from the dense model.

1. **Edges** — :class:`TeddyEdges`, a dataset transform built on the numpy pre-processing step
   :func:`gtcompress.preprocess.teddy.teddy_keep_mask` (the same code a deployed model runs on every
   incoming graph). Per graph by default; ``per_graph=False`` is TEDDY's global rule, which for a
   dataset of many graphs means one score threshold: the ``ratio``-quantile of the training
   split's edge scores, then applied unchanged to every graph (also at deployment). Positional
   encodings are recomputed on the sparsified graphs, as the deployed pipeline will compute them.
2. **Weights** — projected gradient descent on the ℓ0 ball: one-shot magnitude projection to
   ``k = (1 − weights) · |W|`` entries, then :func:`gtcompress.compress.sparsity.l0_project_` after
   every optimiser step (global over the weight matrices; biases and norms excluded by default).
   The paper's code instead trains a freshly initialised model under the projection, over every
   parameter; starting from the trained dense model is what a compression tool is given, and
   ``include_1d`` projects the 1-D parameters too. On NCI1 this half costs little and the edges
   nearly all of TEDDY's accuracy (``bench/HISTORY.md``, "TEDDY's cost split").
3. **Attention edges** (full-attention GPS, ``attention_topk``) — global attention restricted to the
   input edges, self-loops and each graph's top-k nodes by a calibrated score
   (:mod:`gtcompress.compress.attention_graph`). It changes what the attention attends to, not what
   it costs: on the padded layout it runs as the dense attention with the other pairs masked (same
   FLOPs, plus building the mask: 1.0-1.3x the dense model's time on CPU, ``bench/HISTORY.md``).
   Run over its pairs as gathers and scatters it took 5-14x the dense attention's time on ONNX
   Runtime CPU (2026-12-05), so that path is kept only for ``attention_layout`` "sparse"/"fused"
   and token-pruned layers.
4. **Distillation** — task loss + ``λ · KL(student ‖ teacher)`` with the dense model's logits on the
   *original* graphs (:mod:`gtcompress.compress.distill`).

Cost is measured (:mod:`gtcompress.cost`) for the dense model on the original reference batch and
for the sparsified model on the same graphs sparsified. Fewer edges make gather/scatter attention
and message passing cheaper; the unstructured weight zeros do not reduce dense FLOPs and are
reported as sparsity.
"""

from __future__ import annotations

import copy
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from gtcompress.compress.attention_graph import calibrate_attention_topk, check_full_attention, with_attention_topk
from gtcompress.compress.distill import attach_teacher, check_distillation, distillation_loss, has_teacher
from gtcompress.compress.report import compression_report, finetune_record, layer_table
from gtcompress.compress.sparsity import l0_project_, projected, prunable_weights
from gtcompress.cost import measure_cost, reference_batch
from gtcompress.data.base import GraphDataset
from gtcompress.errors import ConfigError
from gtcompress.graph import GraphBatch
from gtcompress.models.model import GraphModel
from gtcompress.preprocess.pe import laplacian_pe, rwse
from gtcompress.preprocess.teddy import DROP_ALL_THRESHOLD, KEEP_ALL_THRESHOLD, teddy_edge_scores, teddy_mask
from gtcompress.train.loop import TrainConfig, check_on_cpu, check_time_budget, evaluate, seed_everything, train

__all__ = ["SparsifyConfig", "SparsifyResult", "TeddyEdges", "sparsify_dataset", "sparsify_model"]


class TeddyEdges:
    """``GraphBatch → GraphBatch`` without its lowest-scoring non-loop edges.

    ``threshold`` (global mode) drops every non-loop edge scoring below it instead of a per-graph
    fraction; ``pe`` recomputes those encodings (``{"lap": k, "rwse": steps}``) on the result."""

    def __init__(
        self, ratio: float, per_graph: bool = True, threshold: float | None = None, pe: dict[str, int] | None = None
    ) -> None:
        if not 0.0 <= ratio < 1.0:
            raise ConfigError(f"--edges must lie in [0, 1) (fraction of edges removed), got {ratio}")
        if not per_graph and threshold is None:
            raise ConfigError("global TEDDY needs a score threshold (sparsify_dataset computes it on train)")
        self.ratio, self.per_graph, self.threshold, self.pe = ratio, per_graph, threshold, dict(pe or {})

    def keep_mask(self, g: GraphBatch) -> np.ndarray:
        """Edges kept, by :func:`~gtcompress.preprocess.teddy.teddy_mask`'s rule: a ``threshold`` decides
        alone whatever ``per_graph`` says. Ignoring it when ``per_graph`` was true made ``gtc eval``
        (and pruning) rank each graph's edges by the ratio, while the runtime, reading the same
        record, applied the threshold: other edges than the served model gets."""
        ei = g.edge_index.cpu().numpy()
        batch = g.batch.cpu().numpy() if g.batch is not None else None
        threshold = None if self.threshold is None else float(self.threshold)
        return teddy_mask(ei, g.num_nodes, self.ratio, batch, self.per_graph, threshold)

    def __call__(self, g: GraphBatch) -> GraphBatch:
        if self.ratio == 0.0:
            return g
        keep = torch.from_numpy(self.keep_mask(g))
        out = replace(
            g,
            edge_index=g.edge_index[:, keep],
            edge_attr=None if g.edge_attr is None else g.edge_attr[keep],
            pe=dict(g.pe),
        )
        if self.pe:
            ei = out.edge_index.numpy()
            ptr = out.ptr.numpy()
            if self.pe.get("lap"):
                out.pe["lap"] = torch.from_numpy(laplacian_pe(ei, ptr, self.pe["lap"]))
            if self.pe.get("rwse"):
                out.pe["rwse"] = torch.from_numpy(rwse(ei, ptr, self.pe["rwse"]))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"edges": self.ratio, "per_graph": self.per_graph, "threshold": self.threshold, "pe": self.pe}


def global_threshold(graphs: list[GraphBatch], ratio: float) -> float:
    """Score below which ``ratio`` of all non-loop edges of ``graphs`` fall (TEDDY's global rule), as
    near as one threshold can come.

    Edges of equal score stay or go together, and degree-based scores tie often (on NCI1's training
    split, taking the ``ratio``-th score as the threshold dropped 0.284 of the edges for 0.3 and
    0.481 for 0.5): of the two thresholds around the tied group at the target, the one whose number
    of dropped edges is nearer ``ratio`` is taken (the one that keeps more on a draw)."""
    scores = []
    for g in graphs:
        ei = g.edge_index.numpy()
        s = teddy_edge_scores(ei, g.num_nodes)
        scores.append(s[ei[0] != ei[1]])
    allv = np.sort(np.concatenate(scores)) if scores else np.zeros(0)
    n_drop = math.floor(ratio * allv.shape[0] + 0.5)
    if n_drop == 0:
        return KEEP_ALL_THRESHOLD
    if n_drop >= allv.shape[0]:
        return DROP_ALL_THRESHOLD
    at = allv[n_drop]
    below = int(np.searchsorted(allv, at, side="left"))  # dropped with threshold `at` (ties stay)
    through = int(np.searchsorted(allv, at, side="right"))  # dropped when the tied group goes too
    if through - n_drop >= n_drop - below:
        return float(at)  # edges strictly below `at` go
    return DROP_ALL_THRESHOLD if through >= allv.shape[0] else float(allv[through])


def sparsify_dataset(
    dataset: GraphDataset, ratio: float, per_graph: bool = True, pe: dict[str, int] | None = None
) -> tuple[GraphDataset, TeddyEdges]:
    """Every split sparsified by the same transform (returned, to re-apply at deployment)."""
    threshold = None if per_graph else global_threshold(dataset["train"], ratio)
    tf = TeddyEdges(ratio, per_graph, threshold, pe)
    return GraphDataset(dataset.info, {k: [tf(g) for g in gs] for k, gs in dataset.splits.items()}), tf


@dataclass
class SparsifyConfig:
    edges: float = 0.0  # fraction of (non-loop) edges removed
    per_graph: bool = True
    weights: float = 0.0  # fraction of weights zeroed (ℓ0 projection)
    include_1d: bool = False  # also sparsify biases / norm parameters
    kd_weight: float = 1.0
    kd_temperature: float = 1.0
    epochs: int = 10
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 1e-5
    recompute_pe: bool = True
    cost_graphs: int = 32
    cost_split: str = "val"
    time_budget_s: float = 0.0
    seed: int = 0
    attention_topk: int = 0  # gps: sparsify global attention to input edges + self + top-k (-1: calibrate)
    attention_score: str = "auto"  # "teddy", "degree" or "auto" (calibrated with k)
    attention_coverage: float = 0.9  # calibration: share of dense attention mass the sparse graph keeps

    def __post_init__(self) -> None:
        if not 0.0 <= self.edges < 1.0:
            raise ConfigError(f"--edges must lie in [0, 1) (fraction of edges removed), got {self.edges}")
        if not 0.0 <= self.weights < 1.0:
            raise ConfigError(f"--weights must lie in [0, 1) (fraction of weights zeroed), got {self.weights}")
        if self.edges == 0.0 and self.weights == 0.0 and self.attention_topk == 0:
            raise ConfigError("nothing to do: give --edges, --weights and/or --attention-topk")
        if self.attention_topk < -1:
            raise ConfigError(f"--attention-topk must be >= 1, or -1 to calibrate; got {self.attention_topk}")
        if self.attention_score not in ("auto", "teddy", "degree"):
            raise ConfigError(f"attention score must be auto, teddy or degree, got {self.attention_score!r}")
        if not 0.0 < self.attention_coverage <= 1.0:
            raise ConfigError(f"--attention-coverage must lie in (0, 1], got {self.attention_coverage}")
        # checked here, before the checkpoint is loaded, not by the NaN weights fine-tuning would write
        check_distillation(self.kd_weight, self.kd_temperature, "--kd-weight", "--kd-temperature")
        check_time_budget(self.time_budget_s, "--time-budget")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SparsifyResult:
    model: GraphModel
    dataset: GraphDataset
    transform: TeddyEdges
    report: dict[str, Any] = field(default_factory=dict)


def _metrics(model: GraphModel, ds: GraphDataset) -> dict[str, float]:
    return {s: evaluate(model, ds[s], ds.info)[ds.info.metric] for s in ("val", "test") if ds.splits.get(s)}


def sparsify_model(
    model: GraphModel,
    dataset: GraphDataset,
    cfg: SparsifyConfig,
    show_progress: bool = True,
    dense_metrics: dict[str, float] | None = None,
) -> SparsifyResult:
    """TEDDY on ``model`` (not modified) and ``dataset`` (see the module docstring). As for
    :func:`~gtcompress.compress.prune.prune_model`, teacher logits already on ``dataset`` and
    ``dense_metrics`` are reused."""
    t_all = time.perf_counter()
    seed_everything(cfg.seed)
    check_on_cpu(model, dataset.splits.get("train", []), "sparsify")
    if cfg.cost_split not in dataset.splits or not dataset[cfg.cost_split]:
        raise ConfigError(f"cost split {cfg.cost_split!r} is missing or empty in this dataset")
    if cfg.attention_topk:
        check_full_attention(model)
    dense = copy.deepcopy(model).eval()
    ref = reference_batch(dataset[cfg.cost_split], cfg.cost_graphs)
    # Both costs on the lowering the dense model takes for the reference batch: left to choose per batch,
    # a GT took the dense lowering on the original graphs and scatter on the sparsified ones (fewer edges
    # per padded cell), and 'FLOPs kept 0.378' was the change of lowering (1.000 on either alone).
    lowering = str(dense.choose_lowering(ref.edge_index, ref.batch_vector, ref.num_graphs))
    cost_before = measure_cost(dense, ref, lowering)
    metrics_before = dict(dense_metrics) if dense_metrics is not None else _metrics(dense, dataset)
    t0 = time.perf_counter()
    pe = dict(model.config.pe) if cfg.recompute_pe else None
    sparse_ds, tf = sparsify_dataset(dataset, cfg.edges, cfg.per_graph, pe)
    t_edges = time.perf_counter() - t0
    data_kd = sparse_ds  # the transform keeps teacher logits computed on the original graphs
    if cfg.kd_weight > 0 and not has_teacher(sparse_ds):
        data_kd = attach_teacher(sparse_ds, dense, source=dataset)
    student = copy.deepcopy(model)
    attention: dict[str, Any] | None = None
    if cfg.attention_topk:
        kinds = ("teddy", "degree") if cfg.attention_score == "auto" else (cfg.attention_score,)
        ks = (1, 2, 4, 8, 16, 32, 64) if cfg.attention_topk < 0 else (cfg.attention_topk,)
        calib_batch = reference_batch(dataset["train"], cfg.cost_graphs)
        attention = calibrate_attention_topk(dense, calib_batch, cfg.attention_coverage, ks, kinds)
        student = with_attention_topk(student, attention["k"], attention["kind"])
    params = [p for _, p in prunable_weights(student, cfg.include_1d)]
    total = sum(p.numel() for p in params)
    k = round(total * (1.0 - cfg.weights))
    if cfg.weights > 0:
        l0_project_(params, k)
    metrics_one_shot = _metrics(student, sparse_ds)
    t0 = time.perf_counter()
    ft: dict[str, Any] = {"epochs_run": 0}
    if cfg.epochs > 0:
        tcfg = TrainConfig(
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            warmup_epochs=min(1, cfg.epochs),
            seed=cfg.seed + 1,
            time_budget_s=cfg.time_budget_s,
        )
        kd = distillation_loss(dataset.info, cfg.kd_weight, cfg.kd_temperature)
        # The start competes (keep_start): it is already on the ℓ0 ball (projected once above, to the
        # k every step projects to) and is evaluated on data_kd's val, the sparsified graphs the
        # epochs are, so keeping it is a valid TEDDY result, never worse on val than the one-shot one.
        with projected(params, lambda step: k) if cfg.weights > 0 else nullcontext():
            res = train(
                student, data_kd, tcfg, extra_loss=kd, show_progress=show_progress, description="TEDDY", keep_start=True
            )
        ft = finetune_record(res, dataset.info.metric)
    if cfg.weights > 0:
        l0_project_(params, k)
    t_train = time.perf_counter() - t0
    student.eval()
    ref_sparse = reference_batch(sparse_ds[cfg.cost_split], cfg.cost_graphs)
    cost_after = measure_cost(student, ref_sparse, lowering)
    metrics_after = _metrics(student, sparse_ds)
    edges = {
        split: {"before": sum(g.num_edges for g in dataset[split]), "after": sum(g.num_edges for g in sparse_ds[split])}
        for split in dataset.splits
    }
    removed = {
        "edges": {"ratio": cfg.edges, "per_graph": cfg.per_graph, "threshold": tf.threshold, "counts": edges},
        "attention": attention,
        "weights": {
            "sparsity_target": cfg.weights,
            "kept": int(sum(int(torch.count_nonzero(p)) for p in params)),
            "total": total,
            "parameters": [n for n, _ in prunable_weights(student, cfg.include_1d)],
        },
    }
    report = compression_report(
        method="teddy",
        settings=cfg.to_dict(),
        seed=cfg.seed,
        metric=dataset.info.metric,
        metrics_before=metrics_before,
        metrics_after=metrics_after,
        cost_before=cost_before,
        cost_after=cost_after,
        removed=removed,
        model_before=layer_table(model.config),
        model_after=layer_table(student.config),
        timings={"edges": t_edges, "train": t_train, "total": time.perf_counter() - t_all},
        extra={
            "preprocess": {"teddy": tf.to_dict()},
            "metric_one_shot": metrics_one_shot,
            "finetune": ft,
            "cost_lowering": lowering,
            "note": "unstructured weight zeros do not reduce dense FLOPs; see nonzero_params/sparsity",
        },
    )
    return SparsifyResult(student, sparse_ds, tf, report)
