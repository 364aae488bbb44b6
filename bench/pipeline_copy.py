"""Copy the report of a ``gtc pipeline`` run into ``bench/results/pipeline/``, with its provenance.

    gtc pipeline && python bench/pipeline_copy.py          # runs/pipeline -> bench/results/pipeline
    python bench/pipeline_copy.py --run runs/other --command "gtc pipeline --out runs/other"

Copies ``report.md``, ``report.json``, ``pareto.png`` and ``profile/latency_vs_size.png``,
``profile/op_breakdown.png`` in the run's own layout (so the report's image links work) and adds to
``report.json`` what the pipeline does not record: ``command`` (``--command``: what the run was started
with), ``commit`` and ``date`` (of the copy: copy right after the run, from the same tree). ``machine`` is
the report's own.

Each file is written to a temp file and renamed into place, ``report.json`` last: a copy that fails or is
killed part-way leaves no truncated file in ``bench/results/pipeline/`` and no new ``report.json`` (the
stamp of what the folder holds) over the previous run's plots.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS, git_commit, utc_now
from bench._json import write_json
from gtcompress.io import write_atomic

#: What is copied, in the order it is written: ``report.json`` last (see the module docstring).
FILES = ("report.md", "pareto.png", "profile/latency_vs_size.png", "profile/op_breakdown.png", "report.json")


def missing_files(run: Path) -> str | None:
    """What ``run`` lacks of ``FILES``, as the error line to show, or ``None``."""
    missing = [f for f in FILES if not (run / f).is_file()]
    return f"{run}: no {', '.join(missing)} (run gtc pipeline first)" if missing else None


def copy_report(run: Path, out: Path, command: str) -> list[Path]:
    """Copy ``FILES`` from ``run`` to ``out``, each atomically; ``report.json`` gets ``command``,
    ``commit`` and ``date`` first."""
    if problem := missing_files(run):
        raise SystemExit(problem)
    report = json.loads((run / "report.json").read_text())
    stamp = {"command": command, "commit": git_commit(), "date": utc_now()}
    written = []
    for f in FILES:
        dst = out / f
        if f == "report.json":
            write_json(dst, {**stamp, **{k: v for k, v in report.items() if k not in stamp}})
        else:
            write_atomic(dst, lambda tmp, src=run / f: shutil.copyfile(src, tmp))
        written.append(dst)
    return written


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("runs/pipeline"), help="the pipeline's output folder")
    ap.add_argument("--out", type=Path, default=RESULTS / "pipeline")
    ap.add_argument("--command", default="gtc pipeline", help="the command the run was made with")
    args = ap.parse_args(argv)
    if problem := missing_files(args.run):  # a mistaken --run: one error line and exit 2, as every bench script
        ap.error(problem)
    for p in copy_report(args.run, args.out, args.command):
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
