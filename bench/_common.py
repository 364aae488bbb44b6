"""Shared helpers for benchmarks: results folders, provenance (command, commit, machine, date), data root."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

#: ``bench/results``: ``bench/<bench>.py`` writes its current result into ``RESULTS / "<bench>"``; superseded and
#: exploratory runs are kept in that folder's ``archive/`` (bench/README.md).
RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """``$GTCOMPRESS_DATA`` or the ``shared/data`` folder next to the repository."""
    env = os.environ.get("GTCOMPRESS_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def missing_data(roots: Iterable[str | None]) -> str | None:
    """The error for the first dataset folder a run needs that does not exist (``None``: all there), so
    that a clone without the data is one ``error:`` line, not a DataFormatError traceback minutes in."""
    for root in roots:
        if root is not None and not Path(root).is_dir():
            return (
                f"dataset folder {root} not found: set GTCOMPRESS_DATA to the folder that holds the datasets "
                "(the project's shared/data, see its README)"
            )
    return None


def machine() -> dict[str, Any]:
    """The runtime's machine description plus the torch side (version, intra-op threads) and the GPU torch
    sees, if any. Without ONNX Runtime (a GPU image may lack it) the platform part only."""
    import torch

    try:
        from runtime.profile import machine_info

        info = machine_info()
    except ImportError:
        info = {
            "cpu": platform.processor() or platform.machine(),
            "machine": platform.machine(),
            "logical_cores": os.cpu_count(),
            "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(),
        }
    info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(
            cuda=torch.version.cuda,
            gpu=p.name,
            sms=p.multi_processor_count,
            gpu_memory_gib=round(p.total_memory / 2**30, 1),
        )
    return info


def git_commit() -> str:
    """The commit measured: ``$GTC_COMMIT`` (for a copy of the tree without ``.git``), else ``git rev-parse
    HEAD`` with ``+dirty`` when the working tree differs from it, else ``"unknown"``.

    Only a checkout whose top level is this tree counts: a copy without ``.git`` (``git archive``, an
    unpacked sdist) inside some other repository would otherwise record that repository's commit."""
    if os.environ.get("GTC_COMMIT"):
        return os.environ["GTC_COMMIT"]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        )
        status = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    top, _, sha = head.stdout.strip().partition("\n")
    if Path(top).resolve() != ROOT.resolve():
        return "unknown"
    return sha.strip() + ("+dirty" if status.stdout.strip() else "")


def provenance(argv: list[str] | None = None) -> dict[str, Any]:
    """What made a result, for the top of every bench JSON: ``command`` (the argv as run, ``sys.argv`` unless
    given), ``commit`` (:func:`git_commit`), ``machine`` (:func:`machine`) and ``date`` (UTC, ISO 8601).
    Call it once when the run starts: the run's own writes would make the tree look dirty later."""
    args = sys.argv if argv is None else argv
    return {
        "command": shlex.join([Path(sys.executable).name, *args]),
        "commit": git_commit(),
        "machine": machine(),
        "date": utc_now(),
    }


def set_threads(prov: dict[str, Any], threads: int) -> None:
    """Set torch's intra-op threads (0: keep torch's default) and record the count in ``prov``'s machine,
    which :func:`provenance` took before (it must run first, while the tree is clean)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    prov["machine"]["torch_threads"] = torch.get_num_threads()


def utc_now() -> str:
    """The time as a result records it: UTC, ISO 8601, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def earlier_runs(old: dict[str, Any] | None) -> list[dict[str, Any]]:
    """For a run that adds rows to (or replaces rows of) an earlier result ``old``: the provenance of the runs
    that wrote ``old``, oldest first (``old``'s own ``earlier_runs``, then its command, commit and date, or its
    reconstructed ``provenance``). Empty when there is no earlier result."""
    if not isinstance(old, dict):
        return []
    own = recorded_provenance(old)
    return [*old.get("earlier_runs", []), *([own] if own else [])]


def unknown_names(option: str, given: list[str] | None, known: list[str]) -> str | None:
    """The error for names in ``given`` (a ``--only``-style list option) that are not in ``known``, or ``None``.

    A run selects its rows by these names, so a mistyped one (``--only gps:NCI1`` for ``gps:tu:NCI1``)
    selected nothing: the run trained nothing, wrote an empty result and exited 0. Callers pass the
    message to ``parser.error`` right after parsing, before any work starts."""
    unknown = [name for name in given or () if name not in known]
    if not unknown:
        return None
    return f"{option}: {', '.join(map(repr, unknown))} not among {', '.join(known)}"


def recorded_provenance(doc: dict[str, Any]) -> dict[str, Any]:
    """The command, commit and date a result records, or its reconstructed ``provenance`` object; ``{}`` if none."""
    return doc.get("provenance") or {k: doc[k] for k in ("command", "commit", "date") if k in doc}


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer of at least ``minimum``. A count the run cannot use (``--repeat
    0``, ``--threads -1``) is then the usual one ``error:`` line and exit 2 before any work, not a
    traceback once models are built (or a result of nothing written over the last one)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def in_interval(interval: str) -> Callable[[str], float]:
    """An argparse ``type``: a number in ``interval``, written as in the error (``"(0, 1)"``, ``"(0, 1]"``,
    ``"[0, 1)"``; ``inf`` for no upper end). The library checks these values only when a run builds its
    config, after dense training: a compression run then recorded every row as failed (``--budgets 1.5``,
    ``--minutes -1``) over the good rows it was to redo, or a training run died with a traceback. NaN,
    which every comparison lets through, is refused too."""
    low, high = (float(v) for v in interval[1:-1].split(","))
    low_open, high_open = interval[0] == "(", interval[-1] == ")"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (above and below):
            raise argparse.ArgumentTypeError(f"must lie in {interval}, got {text}")
        return value

    return parse


#: ``--minutes`` of a training run: finite and above 0 (a budget of 0 is the trainer's "no limit": a
#: ``--minutes 0`` run trained to its epoch cap, hours instead of none).
positive_minutes = in_interval("(0, inf)")
