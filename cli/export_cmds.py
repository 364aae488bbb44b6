"""``gtc export`` (ONNX + optional Triton repository) and ``gtc build`` (TensorRT engine)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.checkpoint_dataset import DataOpt, RootOpt, load_with_dataset
from cli.common import (
    check_out_writable,
    console,
    lazy_progress,
    path_value,
    served_model_name,
    table,
    user_errors,
)


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
    app.command("build")(build_cmd)


@user_errors
def export_cmd(
    ctx: typer.Context,
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint directory (dense or compressed).", parser=path_value)],
    out: Annotated[
        Path, typer.Option(help="ONNX file to write (a file, not a directory).", parser=path_value, metavar="<path>")
    ] = Path("model.onnx"),
    attention: Annotated[str, typer.Option(help="auto, scatter, padded, dense or plugin.")] = "auto",
    triton_repo: Annotated[
        Path | None,
        typer.Option(help="Also write a Triton model repository here.", parser=path_value, metavar="<path>"),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Model name in the Triton repository (default: the checkpoint directory's name).")
    ] = None,
    triton_backend: Annotated[
        str,
        typer.Option(
            help="python: raw graphs in, pre-processing and ragged batching in the server (the default when the "
            "model needs pre-processing); onnxruntime: clients send every pre-processed input; auto: choose."
        ),
    ] = "auto",
    triton_max_batch: Annotated[int, typer.Option(help="python: requests Triton may queue into one call.")] = 64,
    triton_delay_us: Annotated[
        int, typer.Option(help="python: Triton's max_queue_delay_microseconds; -1: no dynamic batching.")
    ] = 2000,
    triton_instances: Annotated[int, typer.Option(help="Model instances (instance_group count).")] = 1,
    triton_threads: Annotated[
        int, typer.Option(help="python: ONNX Runtime threads per instance (0: its default).")
    ] = 1,
    profile_graphs: Annotated[int, typer.Option(min=1, help="auto: graphs per batch to size the cost estimate.")] = 32,
    quantize: Annotated[
        str | None,
        typer.Option(
            help="int8: weights in int8, activations quantized per call, for ONNX Runtime on a CPU; written only "
            "if the val metric stays within --max-drop of the float32 export's."
        ),
    ] = None,
    max_drop: Annotated[
        float,
        typer.Option(
            help="--quantize: the largest val metric drop allowed: points for accuracy and ROC-AUC, percent of the "
            "float32 MAE for MAE."
        ),
    ] = 1.0,
    mixed: Annotated[
        bool,
        typer.Option(
            help="--quantize: where the whole model in int8 drops more than --max-drop, keep float32 the fewest "
            "blocks (a layer's attention, FFN or local message passing; an encoder; the head) that bring it within, "
            "found by evaluating them; --no-mixed refuses instead."
        ),
    ] = True,
    data: DataOpt = None,
    data_root: RootOpt = None,
) -> None:
    """Export a checkpoint to ONNX with symbolic graph sizes, verified against PyTorch.

    Example: gtc export runs/gt-cluster --out gt.onnx --attention auto --triton-repo triton_models

    Example: gtc export runs/gt-cluster --out gt-int8.onnx --quantize int8 --max-drop 0.5

    --triton-repo writes an NVIDIA Triton model repository: serve it with gtc tritonserver (the python
    variant), or copy it into a Triton container; the repository carries the gtcompress code it runs,
    and the python variant needs numpy, scipy, threadpoolctl and onnxruntime in the container's Python.

    --out names the file to write: an existing directory is refused before the checkpoint is loaded (as
    gtc build refuses one) rather than a file name chosen inside it.

    --quantize int8 exports float32 first (verified as always), quantizes it, and evaluates both files on
    the checkpoint's val split under ONNX Runtime (--data and --data-root find that split, as for gtc
    prune); --out is the int8 file. Whether it is faster on your CPU is gtc profile's to measure.
    TensorRT cannot read it: on a GPU, gtc build --fp16 the float32 export.
    """
    from exporters.onnx import check_output_path, export_onnx
    from exporters.triton_repo import (
        BACKENDS,
        PythonModelOptions,
        check_model_dir,
        resolve_backend,
        write_model_repository,
    )
    from gtcompress.checkpoint import load_checkpoint
    from gtcompress.errors import ConfigError
    from gtcompress.io import unwritable_reason
    from gtcompress.pipeline.quantize import quantize_measured

    try:
        check_output_path(out)
    except ConfigError as e:
        raise ConfigError(f"--out {e}") from None
    _refuse_a_checkpoint_file(out, checkpoint)
    if triton_backend not in BACKENDS or triton_backend == "tensorrt":
        raise ConfigError(f"--triton-backend {triton_backend!r}: expected auto, python or onnxruntime")
    for opt, value, low in (
        ("--triton-max-batch", triton_max_batch, 1),
        ("--triton-delay-us", triton_delay_us, -1),
        ("--triton-instances", triton_instances, 1),
        ("--triton-threads", triton_threads, 0),
    ):
        if value < low:  # checked now, not after a minute of export
            raise ConfigError(f"{opt} {value}: expected at least {low}")
    _check_quantize_options(ctx, quantize, attention, max_drop)
    given = _given_options(ctx, _TRITON_OPTIONS)
    if triton_repo is None and given:
        raise ConfigError(
            f"{', '.join(given)}: set{'s' if len(given) == 1 else ''} the Triton repository, and "
            "--triton-repo is not given; add --triton-repo DIR, or leave "
            f"{'it' if len(given) == 1 else 'them'} out"
        )
    python_only = [o for o in given if o in _PYTHON_ONLY]
    if triton_backend == "onnxruntime" and python_only:
        raise ConfigError(_native_refusal(python_only, "--triton-backend onnxruntime writes the native variant"))
    if triton_repo is not None:  # checked now, not after the export it would follow
        if out.suffix != ".onnx":  # the repository holds <version>/model.onnx, told by the suffix
            raise ConfigError(
                f"--out {out}: with --triton-repo, the ONNX file's name ends in .onnx (e.g. --out {out.stem}.onnx)"
            )
        if triton_repo.exists() and not triton_repo.is_dir():
            raise ConfigError(f"--triton-repo {triton_repo}: is a file; expected a directory (a model repository)")
        # named as gtc serve names the same path: runs/gt/config.json is runs/gt, a link is its own name
        model_name = served_model_name(name, checkpoint)
        check_model_dir(triton_repo / model_name)
        unwritable = unwritable_reason(triton_repo / model_name)
        if unwritable is not None:  # else found by the repository write, after the whole export
            raise ConfigError(f"--triton-repo {triton_repo}: {unwritable}")
    options = PythonModelOptions(
        max_batch_size=triton_max_batch,
        max_queue_delay_us=None if triton_delay_us == -1 else triton_delay_us,
        instances=triton_instances,
        threads=triton_threads,
    )
    if quantize is None:
        model, meta = load_checkpoint(checkpoint)
    else:
        model, meta, dataset = load_with_dataset(checkpoint, data_root, data)
    keep = ("dataset", "metrics", "compression", "teddy")
    with tempfile.TemporaryDirectory(prefix="gtc-export-") as work:
        res = export_onnx(
            model,
            out if quantize is None else Path(work) / "float32.onnx",
            attention,
            profile=lambda: _profile_batch(meta, profile_graphs),  # loaded only if the lowering rule needs it
            metadata={k: meta[k] for k in keep if k in meta},
        )
        if quantize is not None:
            # the bar of up to 2k - 1 evaluations (seconds each) where --mixed searches a model of k blocks
            with lazy_progress("evaluating", label="int8: {task.description}", transient=True) as progress:
                q = quantize_measured(res.path, out, model, dataset, max_drop, mixed=mixed, progress=progress)
    if quantize is not None:
        _print_quantized(q, res, max_drop)
    else:
        _print_export(out, res)
    if triton_repo is not None:
        if python_only and resolve_backend(triton_backend, out, res.spec) != "python":
            why = "--triton-backend auto chose the native variant (this model needs no pre-processing)"
            raise ConfigError(f"{_native_refusal(python_only, why)} (the ONNX file {out} is written)")
        root = write_model_repository(triton_repo, model_name, out, res.spec, backend=triton_backend, options=options)
        variant = "python backend: clients send raw graphs" if (root / "1" / "model.py").is_file() else "onnxruntime"
        console.print(f"Triton model repository: {root} ({variant})")


def _print_export(out: Path, res: Any) -> None:
    """The export's table, and what TensorRT would lack."""
    rows = [
        {
            "file": str(out),
            "lowering": res.lowering,
            "max |ORT-torch|": f"{res.max_abs_err:.2e}",
            "batches": res.batches_checked,
            "edge cases": len(res.edge_cases),
            "TensorRT ops": "ok" if not res.tensorrt_problems else "see below",
            "seconds": res.seconds,
        }
    ]
    console.print(table("export", rows))
    for p in res.tensorrt_problems:
        console.print(f"[yellow]TensorRT:[/] {p}")


def _print_quantized(q: Any, res: Any, max_drop: float) -> None:
    """``gtc export --quantize``'s table: both files side by side (the float32 one measured, not kept), and
    the drop against what was allowed."""
    from gtcompress.pipeline.quantize import drop_words

    score = f"{q.split} {q.metric}"
    rows = [
        {
            "precision": "float32",
            "file": "(not kept)",
            score: f"{q.float32:.4g}",
            "MB": f"{q.float32_mb:.2f}",
            "max |ORT-torch|": f"{res.max_abs_err:.2e}",
        },
        {
            "precision": "int8, mixed" if q.float32_blocks else "int8",
            "file": str(q.path),
            score: f"{q.int8:.4g}",
            "MB": f"{q.int8_mb:.2f}",
            "max |ORT-torch|": f"{q.max_abs_err:.2e}",
        },
    ]
    console.print(table(f"export --quantize int8 ({res.lowering} lowering)", rows))
    console.print(
        f"int8 vs float32 on {q.graphs:,} {q.split} graphs: a drop of {drop_words(q.metric, q.drop)} (allowed: "
        f"{drop_words(q.metric, max_drop)}); {q.cases} verification graphs ran"
    )
    if q.float32_blocks:
        console.print(
            f"kept float32, the blocks int8 cost most: {', '.join(q.float32_blocks)} ({len(q.float32_blocks)} of "
            f"{q.blocks} blocks; {q.evaluations} int8 files evaluated)"
        )


def _check_quantize_options(ctx: typer.Context, quantize: str | None, attention: str, max_drop: float) -> None:
    """Refuse ``--quantize``'s mistakes before the checkpoint loads: an unknown scheme, the plugin lowering
    (TensorRT's), a drop that bounds nothing, and its options given without it (ignored, they read as applied)."""
    import math

    from exporters.quantize import SCHEMES
    from gtcompress.errors import ConfigError

    if quantize is None:
        given = _given_options(ctx, _QUANTIZE_OPTIONS)
        if given:
            them = "it" if len(given) == 1 else "them"
            raise ConfigError(
                f"{', '.join(given)}: set{'s' if len(given) == 1 else ''} how --quantize measures the int8 model, "
                f"and --quantize is not given; add --quantize int8, or leave {them} out"
            )
        return
    if quantize not in SCHEMES:
        raise ConfigError(f"--quantize {quantize!r}: expected {', '.join(SCHEMES)}")
    if attention == "plugin":
        raise ConfigError(
            "--quantize int8 --attention plugin: the plugin lowering is for TensorRT, which reads no ONNX Runtime "
            "int8 operators; choose another --attention"
        )
    if not (math.isfinite(max_drop) and max_drop >= 0):
        raise ConfigError(f"--max-drop {max_drop:g}: expected a finite number >= 0")


def _refuse_a_checkpoint_file(out: Path, checkpoint: Path) -> None:
    """Refuse an ``--out`` that is ``config.json`` or ``model.safetensors`` of the checkpoint exported
    (by any path to it): the ONNX file was written over the weights it came from, and the checkpoint
    no longer loaded."""
    import os

    from gtcompress.checkpoint import CONFIG, WEIGHTS, checkpoint_root
    from gtcompress.errors import ConfigError

    source = checkpoint_root(checkpoint)
    for name in (CONFIG, WEIGHTS):
        if out.is_file() and (source / name).is_file() and os.path.samefile(out, source / name):
            raise ConfigError(
                f"--out {out}: is the {name} of the checkpoint being exported; give the ONNX file another name, "
                f"e.g. {out.with_name('model.onnx')}"
            )


#: gtc export's options that shape the Triton repository (--triton-repo aside), by parameter name.
_TRITON_OPTIONS = {
    "name": "--name",
    "triton_backend": "--triton-backend",
    "triton_max_batch": "--triton-max-batch",
    "triton_delay_us": "--triton-delay-us",
    "triton_instances": "--triton-instances",
    "triton_threads": "--triton-threads",
}
#: Those the native (onnxruntime) variant has no use for: Triton does not batch a graph union, and its
#: ONNX Runtime backend is not ours to give threads to.
_PYTHON_ONLY = ("--triton-max-batch", "--triton-delay-us", "--triton-threads")


#: ``--quantize``'s options, by parameter name.
_QUANTIZE_OPTIONS = {
    "max_drop": "--max-drop",
    "mixed": "--mixed/--no-mixed",
    "data": "--data",
    "data_root": "--data-root",
}


def _given_options(ctx: typer.Context, options: dict[str, str]) -> list[str]:
    """Those of ``options`` given on the command line (not left at their defaults). Written to a
    repository that did not use them, or with no --triton-repo at all, the Triton options were ignored
    without a word: ``--name gt --triton-backend python`` wrote no repository, ``--triton-max-batch 8`` on
    a model auto chose the native variant for kept max_batch_size 0."""
    out = []
    for param, option in options.items():
        source = ctx.get_parameter_source(param)  # typer may ship its own click: compare by name
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            out.append(option)
    return out


def _native_refusal(options: list[str], why: str) -> str:
    """The error for python-only options on a native variant (``why``: what chose that variant)."""
    them = "it" if len(options) == 1 else "them"
    return (
        f"{', '.join(options)}: set{'s' if len(options) == 1 else ''} the python variant's batching and threads, "
        f"and {why}, which has neither (Triton does not batch a graph union: max_batch_size 0); add "
        f"--triton-backend python, or leave {them} out"
    )


def _profile_batch(meta: dict, graphs: int):  # type: ignore[no-untyped-def]
    """The first ``graphs`` validation graphs of the checkpoint's dataset, as one numpy batch."""
    from gtcompress.checkpoint_data import checkpoint_data_spec
    from gtcompress.preprocess import union_graphs

    spec = checkpoint_data_spec(meta)  # the section was validated when the checkpoint was read
    if spec is None:
        return None
    split = spec.load()
    sample = split.splits.get("val") or split.splits["train"]
    return union_graphs([g.to_numpy() for g in sample[:graphs]])


@user_errors
def build_cmd(
    onnx_file: Annotated[Path, typer.Argument(help="ONNX file written by gtc export.", parser=path_value)],
    out: Annotated[
        Path,
        typer.Option(help="Engine file to write.", parser=path_value, metavar="<path>"),
    ] = Path("model.plan"),
    min_nodes: int = 1,
    opt_nodes: int = 4096,
    max_nodes: int = 65536,
    min_edges: int = 1,
    opt_edges: int = 65536,
    max_edges: int = 1_048_576,
    min_graphs: int = 1,
    opt_graphs: int = 32,
    max_graphs: int = 1024,
    max_graph_nodes: Annotated[int, typer.Option(min=1, help="Largest single graph (dense layout).")] = 512,
    max_in_degree: Annotated[int, typer.Option(min=1, help="Largest in-degree (padded layout).")] = 512,
    fp16: Annotated[bool, typer.Option(help="Allow FP16 kernels (weakly typed network).")] = False,
    timing_cache: Annotated[
        Path | None, typer.Option(help="Timing cache file, read and updated.", parser=path_value, metavar="<path>")
    ] = None,
) -> None:
    """Build a TensorRT engine with one optimisation profile over graph sizes (needs TensorRT + GPU).

    Example: gtc build gt.onnx --out gt.plan --opt-nodes 4000 --opt-edges 150000 --fp16
    """
    from exporters.tensorrt import GraphSize, build_engine
    from gtcompress.errors import ConfigError, GTCompressError
    from runtime.spec import plan_metadata_path

    # Everything the user can get wrong is reported before TensorRT is needed: these paths here, then
    # in build_engine the ONNX file (missing, truncated, not ours...) and the profile ranges. Checking
    # them first means a CPU machine already tells what would fail on the GPU one.
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a directory; give the engine file to write, e.g. {out / 'model.plan'}")
    if out.exists() and onnx_file.exists() and out.resolve() == onnx_file.resolve():
        raise ConfigError(f"--out {out}: is the ONNX file itself; the engine needs another name, e.g. model.plan")
    if timing_cache is not None and timing_cache.is_dir():
        raise ConfigError(
            f"--timing-cache {timing_cache}: is a directory; give a file (read if present, written after the build)"
        )
    if timing_cache is not None:  # the cache is written after the engine, over whichever file it also names
        for other, what in (
            (onnx_file, "the ONNX file itself"),
            (out, "the --out engine file"),
            (plan_metadata_path(out), "the --out engine's metadata file (written next to it)"),
        ):
            if timing_cache.resolve() == other.resolve():
                raise ConfigError(
                    f"--timing-cache {timing_cache}: is {what}; the timing cache needs a file of its own, e.g. "
                    f"{timing_cache.with_name('timing.cache')}"
                )
    check_out_writable(out)
    if timing_cache is not None:
        check_out_writable(timing_cache, "--timing-cache")
    lo = GraphSize(min_nodes, min_edges, min_graphs, 1, 1)
    opt = GraphSize(opt_nodes, opt_edges, opt_graphs, min(max_graph_nodes, opt_nodes), min(max_in_degree, opt_edges))
    hi = GraphSize(max_nodes, max_edges, max_graphs, max_graph_nodes, max_in_degree)
    try:
        path = build_engine(onnx_file, out, lo, opt, hi, fp16=fp16, timing_cache=timing_cache)
    except ImportError as e:  # TensorRT missing: say how to get it, no traceback
        raise GTCompressError(str(e)) from None
    console.print(f"engine written: {path}")
