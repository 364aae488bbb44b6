"""``run_pipeline``: every stage in order, from the dense models to the report.

The order and what each stage hands the next (see :mod:`gtcompress.pipeline` for the artifacts):

1. dense models, trained or given (:mod:`.model_stages`); then per dense model its dense-ft
   control, TEDDY model, GTSP models per budget and the random baseline;
2. every model exported to ONNX in the configured lowerings and verified (:mod:`.deploy_stages`),
   TensorRT engines where TensorRT exists;
3. every ONNX file evaluated on the test split, then all timed side by side (:mod:`.measure`);
4. the report (:mod:`.report`), the profile of dense vs compressed models and the Triton model
   repository of the model picked for serving; ``report.json``, ``report.md``, ``pareto.png``.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from gtcompress.errors import ConfigError
from gtcompress.pipeline import DEFAULT_OUT
from gtcompress.pipeline.cache import MANIFEST, StageCache, code_fingerprint, stage_key
from gtcompress.pipeline.config import PipelineConfig
from gtcompress.pipeline.context import ModelArtifact, OnnxArtifact, RunContext, data_spec
from gtcompress.pipeline.deploy_stages import export_stages, profile_stage, tensorrt_stages, triton_stage
from gtcompress.pipeline.measure import evaluate_onnx, time_side_by_side
from gtcompress.pipeline.model_stages import compress_stages, dense_models
from gtcompress.pipeline.report import build_report, write_report

__all__ = ["LOCK_NAME", "run_pipeline"]

#: The file in ``--out`` a run holds locked (``filelock``), so that two runs never share a folder.
LOCK_NAME = ".pipeline.lock"


def run_pipeline(
    config: PipelineConfig | Mapping[str, Mapping[str, Any]] | None = None,
    out: str | Path = DEFAULT_OUT,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) every stage into ``out``; returns the report also written to ``out/report.json``.

    ``config``: a :class:`PipelineConfig`, or sections to override the defaults with (``None``: the
    default run). ``log`` gets one line per stage (rich markup; default: printed with rich). Re-running
    with the same ``out`` skips every finished stage whose inputs did not change."""
    if not isinstance(config, PipelineConfig):
        config = PipelineConfig.default().with_overrides(config or {})
    config.check()
    out = Path(out)
    _check_run_folder(out)
    # ``out`` and those of its parents that do not exist yet, deepest first: the run makes them all
    # (``mkdir(parents=True)``), so a run refused before writing a file removes them all, and no others
    created = [p for p in (out, *out.parents) if not p.exists()]
    try:
        with _only_run(out):
            return _run(config, out, log or _rich_print)
    except BaseException:
        if created:  # a run refused before any stage wrote a file leaves no empty --out behind
            _remove_empty_dirs(out)
            if not out.exists():  # the run left nothing in it: nor in the parents it made (--out a/b/run)
                for parent in created[1:]:
                    try:
                        parent.rmdir()  # only while empty: never what something else wrote there meanwhile
                    except OSError:
                        break
        raise


def _run(config: PipelineConfig, out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    ctx = RunContext(config, out, StageCache(out, log), _data_key(config))

    models: list[ModelArtifact] = dense_models(ctx)
    skipped: list[str] = []
    for parent in list(models):
        made, skipped_here = compress_stages(ctx, parent)
        models += made
        skipped += skipped_here

    exported = export_stages(ctx, models)
    trt_note = tensorrt_stages(ctx, exported)
    rows = _measure(ctx, exported)

    report = build_report(rows, config.to_dict(), trt_note, out)
    report["skipped"] = skipped
    test = ctx.dataset_of_file(exported[0].path)["test"] if exported else []
    degree = float(np.mean([g.num_edges / max(g.num_nodes, 1) for g in test])) if test else 4.0
    keys = {str(e.path.relative_to(ctx.out)): e.key for e in exported}  # per file: a model has one per lowering
    report["profile"] = profile_stage(ctx, report, keys, degree)
    triton_stage(ctx, report)
    write_report(report, out)
    return report


@contextlib.contextmanager
def _only_run(out: Path) -> Iterator[None]:
    """Hold ``out/.pipeline.lock`` for the run: two runs writing one folder would interleave their
    stages' files under one manifest, so the second is refused while the first holds the lock. The OS
    drops the lock when its process dies, so a killed run never blocks the next one."""
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(out / LOCK_NAME, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ConfigError(
            f"--out {out}: another `gtc pipeline` is running into this folder; wait for it to finish, "
            "or give another --out"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _check_run_folder(out: Path) -> None:
    """Refuse an ``out`` the run would mix its files into: a file, or a non-empty folder that is not a
    pipeline run (someone's data; ``gtc train``/``prune``/``sparsify`` refuse such an ``--out`` too). A new
    or empty folder starts a run; one holding a run's :data:`~gtcompress.pipeline.cache.MANIFEST` or lock
    resumes it (a run that failed before its first stage finished keeps its lock beside what it wrote:
    :func:`_remove_empty_dirs`)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; the pipeline writes its run into a folder")
    if not out.is_dir():
        return
    names = sorted(p.name for p in out.iterdir())
    if not names or MANIFEST in names or LOCK_NAME in names:
        return
    held = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    raise ConfigError(
        f"--out {out}: exists and is not a pipeline run (a non-empty folder with no {MANIFEST} or {LOCK_NAME}; "
        f"it holds {held}); give a new or empty folder, or a previous run's folder to resume it"
    )


def _remove_empty_dirs(root: Path) -> None:
    """Remove the directories under ``root`` that hold no file, and ``root`` itself where only the run's
    lock is left. Files and what holds them stay (a finished stage's result is resumable), and so does
    the lock beside them: it marks the folder as a run that the next one resumes (:func:`_check_run_folder`)."""
    if root.is_symlink() or not root.is_dir():
        return
    for here, _, _ in sorted(os.walk(root), key=lambda w: -len(w[0])):
        if Path(here) != root:
            with contextlib.suppress(OSError):  # not empty
                os.rmdir(here)
    with contextlib.suppress(OSError):
        if [p.name for p in root.iterdir()] == [LOCK_NAME]:
            (root / LOCK_NAME).unlink()
        os.rmdir(root)


def _data_key(config: PipelineConfig) -> str:
    """The root of every stage key: the dataset (for a file-based one, its files too) and the code
    that runs the stages."""
    spec = data_spec(config)
    return stage_key(spec.to_dict(), _data_files(spec.name, spec.root), code_fingerprint())


def _data_files(name: str, root: str | None) -> list[Any]:
    """Where a file-based dataset (``tu:``, ``ogb:``, ``molhiv``) is read from and each of its files'
    path, size and SHA-256 (the loaders say which files): a dataset changed on disk under the same
    name is a new dataset (its cached models and metrics are not). Contents, not mtimes: a file
    changed with its timestamp kept (``cp -p``, ``rsync -a``, ``tar x``) keeps its size and mtime.
    One dataset's files are a few MB (DD, the largest here, 6 MB), hashed in milliseconds.
    Generated datasets have none; a folder not found gives none (the load fails with its own error)."""
    from gtcompress.checkpoint import _sha256
    from gtcompress.data import default_data_root
    from gtcompress.errors import DataFormatError

    base = Path(root).expanduser() if root else default_data_root()
    kind, _, sub = name.strip().partition(":")
    try:
        if kind.lower() == "tu":
            from gtcompress.data.tu import tu_folder

            files = sorted(f for f in tu_folder(base, sub).rglob("*") if f.is_file())
        elif kind.lower() == "ogb":
            from gtcompress.data.ogb import _resolve

            files = sorted(f for f in _resolve(base, sub).rglob("*") if f.is_file())
        elif kind.lower() == "molhiv":
            from gtcompress.data.molecules import molhiv_files

            files = molhiv_files(base)
        else:
            return []
    except DataFormatError:
        files = []
    return [str(base.resolve()), *((str(f), f.stat().st_size, _sha256(f)) for f in files)]


def _measure(ctx: RunContext, exported: list[OnnxArtifact]) -> list[dict[str, Any]]:
    """One report row per export: its test metric from the ONNX file (a stage each), then the
    latency of all of them timed side by side (one stage, so they share the machine's load)."""
    pcfg, out = ctx.config["profile"], ctx.out
    rows = []
    for e in exported:
        r = ctx.stage(
            f"evaluate:{e.label}:{e.requested}",
            stage_key(e.key, pcfg["threads"], pcfg["batch_graphs"]),
            [e.path],
            lambda e=e: evaluate_onnx(e.path, ctx.dataset_of_file(e.path), pcfg, e.model.teddy),
        )
        m = e.model
        rows.append(
            {
                "model": e.label,
                "arch": m.arch,
                "method": m.method,
                "precision": e.precision,
                "budget": m.budget,
                "lowering": e.lowering,
                "file": str(e.path.relative_to(out)),
                "max_abs_err": e.max_abs_err,
                **({"quantized": {k: v for k, v in e.quantized.items() if k != "stage"}} if e.quantized else {}),
                **r,
            }
        )
    timings = ctx.stage(
        "latency",
        stage_key([e.key for e in exported], pcfg),
        [e.path for e in exported],
        lambda: {
            "rows": time_side_by_side([(e.path, ctx.dataset_of_file(e.path), e.model.teddy) for e in exported], pcfg)
        },
    )["rows"]
    for row, t in zip(rows, timings, strict=True):
        row.update(t)
    return rows


@functools.cache
def _console() -> Any:
    from rich.console import Console

    return Console()


def _rich_print(message: str) -> None:
    _console().print(message)
