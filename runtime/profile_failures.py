"""A ``gtc profile`` whose measurement fails in part: the rest is measured and reported, and says so.

A profile is minutes of passes, one model at one thread count in one round each (a fresh process, or
the torch rows' one pass), and one can fail where the others do not: ONNX Runtime out of memory at the
largest size, a crash of a provider's library, a CUDA out-of-memory of a torch row. One failure must not
cost the rows measured before it, nor the models after it, which it says nothing about. So
:func:`runtime.profile.profile_models` records the failure (:func:`failure`), stops that pass only (its
later rounds are not run: what failed at a size fails there again, and a row of some rounds only is said
to be one), runs every other pass, and raises :class:`ProfileIncomplete` at the end, carrying the report
of what was measured: ``failed`` names each failure (model, threads, round, the sizes it left unmeasured,
the error), every row has ``rounds_completed`` (below its model's ``rounds`` where a later round failed,
and :func:`short_rows_note` names it), and the comparison marks a row with either side partial
(:func:`is_short`). ``gtc profile`` writes that report and exits 1: the command did not do all it was
asked, and a script must not take the report for a whole one.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Sequence
from typing import Any

from runtime.errors import SessionError

#: Rows the note names one by one; the rest are counted (the table marks every one).
NOTE_ROWS = 6


class PassFailed(SessionError):
    """One measuring pass failed; ``detail`` is the error itself, without the pass's name (report.json)."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


class ProfileIncomplete(SessionError):
    """Some passes failed; ``report`` holds every row the others measured, and ``report['failed']`` the
    failures. A :class:`SessionError`, so a caller that does not look for it still hears of the failure."""

    def __init__(self, report: dict[str, Any], messages: Sequence[str]) -> None:
        n = len(report["failed"])
        super().__init__(f"profile: {n} measurement{'s' if n > 1 else ''} failed: {'; '.join(messages)}")
        self.report = report

    @property
    def measured(self) -> bool:
        """Whether any row was measured (else there is nothing to report)."""
        return any(m["results"] for m in self.report["models"])


def error_text(e: BaseException) -> str:
    """An error as the user reads it: our own errors are messages; anything else keeps its type
    (``OutOfMemoryError: CUDA out of memory…``), for the bug report it may need."""
    return str(e) if isinstance(e, SessionError) else f"{type(e).__name__}: {e}"


def failure(
    model: str,
    path: str,
    threads: int | None,
    round_: int,
    rounds: int,
    not_measured: Sequence[tuple[int, int]],
    error: str,
    op_pending: bool = False,
) -> dict[str, Any]:
    """report.json's record of one failed pass. ``not_measured``: the sizes (nodes, batch) it left without a
    row in this round (and, being stopped, in the later ones). None left: the pass failed after its rows,
    in its per-op profile where one was asked and not yet given (``op_pending``: then ``op_profile`` is
    true), else in what follows its rows (the process's exit)."""
    return {
        "model": model,
        "path": path,
        "threads": threads,
        "round": round_,
        "rounds": rounds,
        "not_measured": [{"graph_nodes": n, "batch_size": b} for n, b in not_measured],
        "op_profile": op_pending and not not_measured,
        "error": error,
    }


def failure_line(f: dict[str, Any]) -> str:
    """One line naming a failure: ``fast · 2T · round 2/3: 512×16 not measured (nor in later rounds): …``."""
    who = f["model"] + _threads(f["threads"])
    when = f" · round {f['round']}/{f['rounds']}" if f["rounds"] > 1 else ""
    if f["op_profile"]:
        what = "per-op profile failed (its rows were measured)"
    elif not f["not_measured"]:
        what = "failed after its rows were measured"
    else:
        sizes = ", ".join(f"{s['graph_nodes']}×{s['batch_size']}" for s in f["not_measured"])
        what = f"{sizes} not measured" + (" (nor in later rounds)" if f["round"] < f["rounds"] else "")
    return f"{who}{when}: {what}: {f['error']}"


def pass_failed(path: str, threads: int | None, error: str) -> PassFailed:
    """The failure of the pass measuring ``path`` at ``threads`` (``None``: a TensorRT engine's one pass)."""
    how = "" if threads is None else f" with {threads} thread{'' if threads == 1 else 's'}"
    return PassFailed(f"profiling {path}{how}: {error}", error)


def process_died(path: str, returncode: int, stray: Sequence[str]) -> PassFailed:
    """A measuring process that ended without its last event (a crash, a kill: -9 is the kernel's
    out-of-memory killer's SIGKILL). ``stray``: what else it printed on its event stream (a native library
    writing to fd 1), the last of it kept in the message, where a crash often says why."""
    how = f"exit code {returncode}"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            how += f", {signal.Signals(-returncode).name}"
    said = f"; its last output: {' | '.join(line[:200] for line in stray[-3:])}" if stray else ""
    return PassFailed(f"profiling process for {path} died ({how}){said}", f"the measuring process died ({how}){said}")


def is_short(model: dict[str, Any], row: dict[str, Any]) -> bool:
    """Whether ``row`` was measured in fewer rounds than its model was asked for (a later pass failed)."""
    asked = int(model.get("rounds", 1))
    return int(row.get("rounds_completed", asked)) < asked


def unmeasured(models: Sequence[dict[str, Any]], failed: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The (model, threads, size) a failed pass left without a row in any round: nothing compares them."""
    have = {(m["name"], r["threads"], r["graph_nodes"], r["batch_size"]) for m in models for r in m["results"]}
    out = []
    for f in failed:
        for s in f["not_measured"]:
            key = (f["model"], f["threads"], s["graph_nodes"], s["batch_size"])
            if key not in have:
                have.add(key)  # named once
                out.append(dict(zip(("model", "threads", "graph_nodes", "batch_size"), key, strict=True)))
    return out


def unmeasured_label(u: dict[str, Any]) -> str:
    return f"{u['model']}{_threads(u['threads'])} · {u['graph_nodes']}×{u['batch_size']}"


def short_rows_note(models: Sequence[dict[str, Any]]) -> str | None:
    """The note naming the rows measured in fewer rounds than asked (``None`` when none was)."""
    short = [
        f"{m['name']}{_threads(r['threads'])} · {r['graph_nodes']}×{r['batch_size']} "
        f"({r['rounds_completed']} of {m['rounds']} rounds, {r['iterations']} calls)"
        for m in models
        for r in m["results"]
        if is_short(m, r)
    ]
    if not short:
        return None
    more = f"; {len(short) - NOTE_ROWS} more" if len(short) > NOTE_ROWS else ""
    return (
        f"rows marked ~ were measured in fewer rounds than asked, their pass having failed in a later round (see "
        f"failed): {'; '.join(short[:NOTE_ROWS])}{more}. Their statistics hold those rounds' calls only, and a slow "
        "spell of the machine in them cannot show as rounds that disagree: compare them with care"
    )


def _threads(threads: int | None) -> str:
    return "" if threads is None else f" · {threads}T"
