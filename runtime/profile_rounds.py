"""Rounds of ``gtc profile``: the models take turns, so that they are timed under the same conditions.

A machine is not steady over minutes: another job starts, a CPU's clock drops, a VM's neighbour
gets busy. Measured one after the other, the second model of ``gtc profile dense.onnx
pruned.onnx`` could run in a slow spell the first escaped (on our 2-core VM one pass read 24.2 ms
where three reruns read 12.4), and the speed-up it printed was the machine's, with nothing saying
so. So :func:`runtime.profile.profile_models` splits each configuration's timed iterations into
rounds and runs every model's pass of round 1 before any model's pass of round 2, a thread count
at a time: a spell falls on every model alike or shows as rounds that disagree.

Here: the split (:func:`split_iterations`), the merge of one configuration's rounds into one row
holding every sample (:func:`merge_rounds`), the test of rounds that disagree (:func:`unsteady`) and
the note naming those rows (:func:`unsteady_note`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from runtime.errors import SessionError

#: Rounds whose p50s differ by more than this factor (slowest / fastest) are flagged, where the
#: slowest round's p50 is also above every sample of the fastest (:func:`unsteady`). Rounds of a
#: steady machine agree within a few percent; the spells this is for doubled a pass's time.
UNSTEADY_SPREAD = 1.25
#: ``gtc profile``'s rounds unless told otherwise (:func:`default_rounds`): a spell in one round of three is
#: outvoted at the p50.
DEFAULT_ROUNDS = 3
#: Rows the note names one by one; the rest are counted (the table marks every one).
NOTE_ROWS = 6


def default_rounds(iterations: int, warmup: int = 1) -> int:
    """:data:`DEFAULT_ROUNDS`, or as many as ``iterations`` give two calls each: a short profile asked for
    no rounds and is not refused for them. One with no warm-up (:func:`cold_rounds_refusal`)."""
    return 1 if warmup == 0 else max(1, min(DEFAULT_ROUNDS, iterations // 2))


def cold_rounds_refusal(warmup: int, rounds: int, exported: bool = True) -> str | None:
    """Why ``warmup`` 0 and ``rounds`` above one are refused together (``None`` when they are not).

    Each round of an exported model is a fresh measuring process (or session): with no warm-up, each one's
    first call at each size (a new session's first run: its arena, caches, allocator growth) is timed. A
    user timing a cold start with ``--warmup 0`` expects one such call in a row, as one pass gives; rounds
    would put one a round among the warm calls, lifting the p90/p99 with nothing saying why. So
    ``--warmup 0`` is one round unless told otherwise (:func:`default_rounds`), and told otherwise it is
    refused. Without an ``exported`` model nothing is: a checkpoint's (torch) rows make at least one untimed
    call a round."""
    if warmup != 0 or rounds <= 1 or not exported:
        return None
    return (
        f"each round runs in a fresh process, so each would time its own cold first call at every size: {rounds} "
        "cold calls in each row, not one"
    )


def cold_note(warmup: int, exported: bool, checkpoints: bool) -> str | None:
    """The report's note on rows whose first call is timed (``warmup`` 0), ``None`` otherwise."""
    if warmup != 0 or not exported:
        return None
    return (
        "warm-up 0: each exported model's row times its first call at its size, cold (the first row's is also the "
        "new session's first), so each row holds one cold call, in its max and upper percentiles; rounds: 1, "
        "as more would each time one"
        + ("; torch rows (checkpoints) still make one untimed call first" if checkpoints else "")
    )


def plan_rounds(iterations: int, warmup: int, rounds: int | None, exported: bool) -> list[int]:
    """The timed calls of each round (:func:`split_iterations`).

    ``rounds`` ``None``: the default (:func:`default_rounds`); a warm-up of 0 with rounds is refused first
    (:func:`cold_rounds_refusal`). Without an ``exported`` model, the warm-up is at least one call whatever
    was asked (a torch row's first call on a shape builds it), so the default is that of a warm profile."""
    if rounds is not None and (why := cold_rounds_refusal(warmup, rounds, exported)):
        raise SessionError(f"profile: warmup 0 with {rounds} rounds: {why}; time a cold start in 1 round")
    if rounds is None:
        rounds = default_rounds(iterations, warmup if exported else max(warmup, 1))
    return split_iterations(iterations, rounds)


def split_iterations(iterations: int, rounds: int) -> list[int]:
    """``iterations`` timed calls shared out over ``rounds`` (the first rounds take the remainder);
    every round needs two, else its p50 is one sample and its spread means nothing."""
    if rounds < 1:
        raise SessionError(f"profile: rounds must be at least 1, got {rounds}")
    if iterations < 2 * rounds:
        raise SessionError(
            f"profile: {rounds} rounds need at least {2 * rounds} timed iterations (2 a round), got {iterations}"
        )
    share, extra = divmod(iterations, rounds)
    return [share + (1 if i < extra else 0) for i in range(rounds)]


def merge_rounds(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One configuration's rows from its rounds (same model, threads, graphs) as one row: the
    statistics over all their samples, the peak memory the highest any round's process reached (and a torch
    row's GPU peak, CUDA graphs captured and held, the highest of any round's), and
    ``rounds_p50_ms`` (each round's p50, whole call) with ``rounds_spread`` (slowest / fastest)."""
    from runtime.measure import timings  # numpy: not for the CLI, which imports this module for its default

    first = rows[0]
    merged = dict(first)
    if len(rows) > 1:
        prep = [v for r in rows for v in r["preprocess_samples_ms"]]
        model = [v for r in rows for v in r["model_samples_ms"]]
        merged.update(timings(prep, model, int(first["batch_size"])))
    p50s = [float(r["latency_ms"]["p50"]) for r in rows]
    merged.update(
        iterations=sum(int(r["iterations"]) for r in rows),
        peak_rss_mb=max(float(r["peak_rss_mb"]) for r in rows),
        rounds_p50_ms=p50s,
        rounds_spread=max(p50s) / min(p50s) if min(p50s) > 0 else 1.0,
        rounds_unsteady=unsteady(rows),
    )
    # a round's own high-water marks and counts, the highest round's: each round loads a checkpoint afresh, so
    # its CUDA graphs are captured, and held, again in every round
    for key in ("model_rss_mb", "peak_gpu_mb", "cuda_graphs_captured", "cuda_graphs_held"):
        if first.get(key) is not None:
            merged[key] = max(r[key] for r in rows)
    return merged


def unsteady(rows: Sequence[dict[str, Any]]) -> bool:
    """Whether one configuration's rounds disagree: their p50s differ by more than
    :data:`UNSTEADY_SPREAD`, and the slowest round's p50 is above every sample of the fastest round.
    The second test keeps a sub-millisecond row of three calls a round (the pipeline's) from being
    flagged for its jitter (0.49, 0.66, 0.51 ms: each round's calls overlap the others'), where a
    slow spell moves a whole round (12.4 ms rounds, then one of 24.2)."""
    if len(rows) < 2:
        return False
    p50 = [float(r["latency_ms"]["p50"]) for r in rows]
    fast = rows[p50.index(min(p50))]
    return max(p50) > UNSTEADY_SPREAD * min(p50) and max(p50) > max(fast["samples_ms"])


def unsteady_note(models: Sequence[dict[str, Any]]) -> str | None:
    """The report's note naming every row whose rounds disagree (``None`` when none does)."""
    flagged = []
    for m in models:
        for r in m["results"]:
            if r.get("rounds_unsteady"):
                where = "" if r["threads"] is None else f" · {r['threads']}T"
                p50s = ", ".join(f"{v:.3g}" for v in r["rounds_p50_ms"])
                flagged.append(
                    f"{m['name']}{where} · {r['graph_nodes']}×{r['batch_size']} {r['rounds_spread']:.2f}x ({p50s} ms)"
                )
    if not flagged:
        return None
    more = f"; {len(flagged) - NOTE_ROWS} more" if len(flagged) > NOTE_ROWS else ""
    return (
        f"rows marked ! had a round whose p50 was over {UNSTEADY_SPREAD}x the fastest round's and above all its "
        "calls: "
        f"{'; '.join(flagged[:NOTE_ROWS])}{more}. The "
        "machine was not steady while they ran (another load, a lower clock); each row holds every round's "
        "samples, but compare such rows with care, or run again"
    )
