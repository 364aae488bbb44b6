"""Why does GTSP beat (or lose to) random pruning? Split its two ingredients: the *plan* (which
heads and FFN units are kept) and the *starting weights* of fine-tuning (GTSP's mask-trained
weights or the dense model's). One mask-training run per seed, then all four combinations get the
same KD fine-tuning, so the cells differ only in plan and start:

    python bench/plan_vs_weights.py                       # GT on NCI1 at 0.60 of the FLOPs, seeds 0 1 2
    python bench/plan_vs_weights.py --budget 0.5 --seeds 0 1 2 3

``gtsp × masktrained`` is GTSP as :func:`~gtcompress.compress.prune.prune_model` runs it;
``random × dense`` is random pruning given GTSP's fine-tuning time. Settings (batch size, mask
share of the time, epoch cap, token keep) are those of ``bench/compression.py``, whose cached dense
checkpoint is reused (run it first); only ``--minutes`` defaults shorter (2 against 6).
Writes ``bench/results/plan_vs_weights/plan_vs_weights.json`` (with the command, commit, machine and
date of the run) and ``.png``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS, in_interval, positive_minutes, provenance
from bench._json import write_json
from bench.compression import EPOCHS, RUNS, TOKEN_KEEP, _load, _mask_share, _mean_std
from gtcompress.io import write_atomic

CELLS = [(plan, start) for plan in ("gtsp", "random") for start in ("masktrained", "dense")]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gt:tu:NCI1", help="ARCH:DATASET of bench/compression.py")
    ap.add_argument("--budget", type=in_interval("(0, 1)"), default=0.6, help="FLOP fraction kept")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument(
        "--minutes", type=positive_minutes, default=2.0, help="as bench/compression.py: mask training + fine-tuning"
    )
    ap.add_argument(
        "--mask-share", type=in_interval("(0, 1)"), default=None, help="default: bench/compression.py's for the dataset"
    )
    ap.add_argument("--workdir", type=Path, default=Path("runs/bench_compression"))
    ap.add_argument("--out", type=Path, default=RESULTS / "plan_vs_weights" / "plan_vs_weights.json")
    args = ap.parse_args(argv)
    run = next((r for r in RUNS if f"{r[0]}:{r[1]}" == args.model), None)
    if run is None:  # one error line and exit 2 before any work, as every bench script's mistakes
        ap.error(f"--model {args.model}: expected one of {', '.join(f'{r[0]}:{r[1]}' for r in RUNS)}")
    path = args.workdir / "full" / args.model.replace(":", "-")
    if not path.exists():
        ap.error(f"no dense checkpoint at {path}: run bench/compression.py --only {args.model} first")
    prov = provenance()

    from gtcompress.checkpoint import load_checkpoint
    from gtcompress.compress.distill import attach_teacher
    from gtcompress.compress.plan_choice import fit_budget, gate_scores, random_scores
    from gtcompress.compress.prune import PruneConfig, PruneRun, mask_training
    from gtcompress.compress.prune_run import evaluate_splits, finetune_pruned

    arch, name, size, _, batch = run
    model, _ = load_checkpoint(path)
    _, ds = _load(arch, name, size, False, model.config.pe)
    data_kd, dense = attach_teacher(ds, model), evaluate_splits(model, ds)
    args.mask_share = _mask_share(args.mask_share, name)
    mask_s, ft_s = args.mask_share * args.minutes * 60, (1 - args.mask_share) * args.minutes * 60
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for seed in args.seeds:
        cfg = PruneConfig(
            seed=seed,
            target_flops=args.budget,
            epochs=EPOCHS,
            finetune_epochs=EPOCHS,
            token_keep=TOKEN_KEEP,
            batch_size=batch,
            time_budget_s=mask_s,
            finetune_time_budget_s=ft_s,
        )
        pr = PruneRun.start("gtsp", model, data_kd, cfg, dense_metrics=dense, show_progress=False)
        cfg, ref, student, cm, axes = pr.cfg, pr.ref, pr.student, pr.cost_model, pr.axes
        gates, _ = mask_training(pr)
        scores = {"gtsp": gate_scores(gates), "random": random_scores(cm, seed)}
        for plan, start in CELLS:
            src = _start(start, plan, student, model, cfg)
            fit = fit_budget(src, scores[plan], cm, ref, axes, args.budget, cfg.tolerance, allocation=cfg.allocation)
            res = finetune_pruned(fit.model, data_kd, cfg, cfg.finetune_epochs, ft_s, False, "fine-tune")
            m = evaluate_splits(fit.model, ds)
            rows.append(
                {
                    "seed": seed,
                    "plan": plan,
                    "start": start,
                    "test": 100 * m["test"],
                    "val": 100 * m["val"],
                    "layers": [{"heads": len(lp.heads), "ffn_dim": len(lp.ffn)} for lp in fit.plan.layers],
                    "finetune_epochs": res["epochs_run"],
                }
            )
            print(f"seed {seed}  plan {plan:6s} start {start:11s} test {rows[-1]['test']:.2f}", flush=True)
    # Written once, when every cell is measured: a run stopped part-way (Ctrl-C, SIGTERM, a crash) leaves the
    # previous result and its PNG as they were, not this run's first cells beside a PNG of other numbers
    # (nothing resumes from a partial file: a rerun redoes every cell).
    summary = _summary(rows)
    settings = {**vars(args), "epochs": EPOCHS, "token_keep": TOKEN_KEEP}
    doc = {**prov, "settings": settings, "dense": dense, "rows": rows, "summary": summary}
    write_json(args.out, {**doc, "wall_time_s": time.perf_counter() - started})
    _plot(rows, 100 * dense["test"], args)
    for cell, v in summary.items():
        print(f"{cell:20s} {v['test']:.2f} ± {v['std']:.2f} ({v['test'] - 100 * dense['test']:+.2f} vs dense)")


def _start(start: str, plan: str, student: Any, model: Any, cfg: Any) -> Any:
    """The model a cell's plan is cut from: GTSP's mask-trained student, or the dense weights as a
    ``plan`` run starts from them (:func:`~gtcompress.compress.prune_run.student_copy`: with the
    tokens axis, plus that run's fresh node scorers). The plain dense model has no scorer, and a plan
    keeping ``token_keep < 1`` (GPS on NCI1: tokens,heads,layers,ffn) cannot be materialised from it."""
    from gtcompress.compress.prune_run import student_copy

    return student if start == "masktrained" else student_copy(model, cfg, plan)


def _summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out = {}
    for plan, start in CELLS:
        xs = [r["test"] for r in rows if (r["plan"], r["start"]) == (plan, start)]
        if xs:
            mean, sd = _mean_std(xs)
            out[f"{plan} × {start}"] = {"test": mean, "std": sd, "n": len(xs)}
    return out


def _plot(rows: list[dict[str, Any]], dense_test: float, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for x, (plan, start) in enumerate(CELLS):
        xs = [r["test"] for r in rows if (r["plan"], r["start"]) == (plan, start)]
        ax.bar(x, sum(xs) / len(xs), color="tab:blue" if plan == "gtsp" else "tab:red", alpha=0.5)
        ax.scatter([x] * len(xs), xs, color="k", s=12, zorder=3)
    ax.axhline(dense_test, color="k", linestyle="--", label="dense")
    ax.set_xticks(range(len(CELLS)), [f"{p}\n× {s}" for p, s in CELLS])
    lo = min(r["test"] for r in rows)
    ax.set_ylim(min(lo, dense_test) - 2, None)
    ax.set_ylabel("test metric (%), mean and seeds")
    ax.set_title(f"{args.model} at {args.budget:.2f} of the FLOPs: plan × starting weights")
    ax.legend()
    fig.tight_layout()
    write_atomic(args.out.with_suffix(".png"), lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


if __name__ == "__main__":
    main()
