"""``gtc profile``: latency and memory of exported models and checkpoints on this machine
(:mod:`runtime.profile`), with every mistake the user can see refused before the progress bar opens."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.common import check_out_writable, console, finite_number, lazy_progress, path_value, print_error, user_errors
from cli.runtime_options import SERVER_LIMITS, CudaGraphsOpt, DeviceOpt, check_device, providers_option
from runtime.profile_rounds import DEFAULT_ROUNDS, cold_rounds_refusal

if TYPE_CHECKING:
    from runtime.backends import ProviderArg


def _ints(text: str, option: str) -> list[int]:
    from gtcompress.errors import GTCompressError

    parts = [v.strip() for v in text.split(",")]
    if "" in parts and text.strip():  # '1,,2' or '1,2,': a value left out, not a list to guess at
        raise GTCompressError(f"{option}: an empty entry in {text!r}; expected comma-separated positive integers")
    try:
        values = [int(v) for v in parts if v]
    except ValueError:
        raise GTCompressError(f"{option}: expected comma-separated positive integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise GTCompressError(f"{option}: expected comma-separated positive integers, got {text!r}")
    twice = sorted({v for v in values if values.count(v) > 1})
    if twice:  # measured twice: duplicate rows in report.json, a plot line doubling back, twice the minutes
        raise GTCompressError(f"{option}: {', '.join(map(str, twice))} given more than once in {text!r}")
    return values


def _check_out_dir(out: Path) -> None:
    """Refuse a report folder that cannot be made (a file, a path below one, a directory that takes no
    new file) before minutes of profiling rather than after."""
    from gtcompress.errors import GTCompressError

    if out.exists() and not out.is_dir():
        raise GTCompressError(f"--out {out}: exists and is not a directory (the report is a folder)")
    check_out_writable(out, inside=True)


def _check_graph_memory(nodes: int, graphs: int, degree: float) -> None:
    """Refuse sizes whose random graphs alone cannot fit in this machine's memory, before any model
    is loaded: ``--sizes 100000000000`` or ``--degree 1e12`` was a numpy ArrayMemoryError traceback
    ("Unable to allocate 5.82 TiB") under the progress bar. Counted: the int64 edge index of one
    call's graphs (16 bytes an edge), far less than the model then needs, so no working size is refused."""
    from gtcompress.errors import GTCompressError
    from gtcompress.machine import machine_memory

    edges = max(1, round(degree * nodes))
    need = 16 * edges * graphs
    memory = machine_memory()
    if memory is None:  # not POSIX: nothing to compare with
        return
    if need > memory:
        raise GTCompressError(
            f"--sizes {nodes} x --degree {degree:g} x --batch-sizes {graphs}: the random graphs of one call "
            f"({graphs} x {edges} edges) would take {need / 2**30:.1f} GiB for their edge index alone, more than "
            f"this machine's {memory / 2**30:.1f} GiB of memory; choose smaller --sizes, --degree or --batch-sizes"
        )


def _check_exported_models(models: list[Path]) -> None:
    """Open each model once before the progress bar: a folder without a model, a truncated file, a
    foreign ONNX file or a checkpoint that does not load is then one error line, not a bar and then the
    line. A checkpoint is loaded (torch, which profiling it needs anyway) and dropped: ``profile_models``
    loads it again where it measures it (another process with ``--isolate``)."""
    from runtime.session import PLAN_SUFFIXES, is_checkpoint, resolve_model_path
    from runtime.spec import model_spec, onnx_metadata, plan_metadata

    for m in models:
        if is_checkpoint(m):
            from gtcompress.checkpoint import load_checkpoint

            load_checkpoint(m)
            continue
        path = resolve_model_path(m)
        model_spec(plan_metadata(path) if path.suffix in PLAN_SUFFIXES else onnx_metadata(path), str(path))


def _check_providers_run(models: list[Path], providers: list[ProviderArg]) -> None:
    """Open each ONNX model with ``providers`` (resolved: each is in this ONNX Runtime build) when one is
    not the CPU's: one that cannot run here (CUDA's libraries missing) was refused by the first
    measuring process only, under the progress bar that had opened. Dropped at once; the measuring
    processes load the models again. Engines and checkpoints take no providers."""
    from runtime.session import PLAN_SUFFIXES, GraphSession, is_checkpoint, resolve_model_path

    if all(p == "CPUExecutionProvider" for p in providers):
        return
    for m in models:
        path = None if is_checkpoint(m) else resolve_model_path(m)
        if path is not None and path.suffix not in PLAN_SUFFIXES:
            GraphSession(path, list(providers))


def register(app: typer.Typer) -> None:
    app.command("profile")(profile_cmd)


@user_errors
def profile_cmd(
    models: Annotated[
        list[Path],
        typer.Argument(
            help="Exported models (.onnx, .plan) and/or checkpoint directories (torch), side by side.",
            parser=path_value,
        ),
    ],
    out: Annotated[
        Path, typer.Option(help="Directory for report.json and the PNG plots.", parser=path_value, metavar="<path>")
    ] = Path("profile"),
    threads: Annotated[
        str,
        typer.Option(
            help="Intra-op thread counts (ONNX files: each pinned to that many cores; checkpoints: not; "
            "TensorRT engines: not applicable, one run per size)."
        ),
    ] = "1,2,4",
    sizes: Annotated[str, typer.Option(help="Nodes per graph.")] = "32,128,512",
    batch_sizes: Annotated[str, typer.Option(help="Graphs per call.")] = "1,16",
    iterations: Annotated[
        int, typer.Option(min=2, help="Timed iterations per configuration, shared out over the rounds.")
    ] = 50,
    rounds: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="The models take turns this many times (a checkpoint loaded afresh each), each timing its share of "
            "--iterations of every size, so that a slow spell of the machine falls on all of them (rows whose rounds "
            f"disagree are marked). Default: {DEFAULT_ROUNDS}, fewer where --iterations gives fewer than 2 calls a "
            "round, 1 with --warmup 0 and an exported model.",
        ),
    ] = None,
    warmup: Annotated[
        int,
        typer.Option(
            min=0,
            help="Untimed calls before each size's timed ones, in each round (a fresh process each). 0 times the "
            "first, cold call of each size (a cold start): in one round, as each round would time its own, so "
            "--rounds above 1 is refused with it. A checkpoint's (torch) rows make at least 1.",
        ),
    ] = 5,
    degree: Annotated[
        float, typer.Option(callback=finite_number(0.0), help="Average edges per node of the random graphs (>= 0).")
    ] = 4.0,
    names: Annotated[str | None, typer.Option(help="Comma-separated labels for the models.")] = None,
    providers: Annotated[str | None, typer.Option(help="ONNX Runtime providers in order, e.g. cuda,cpu.")] = None,
    op_profile: Annotated[bool, typer.Option(help="Per-op breakdown from ONNX Runtime's profiler.")] = True,
    isolate: Annotated[bool, typer.Option(help="One pinned process per model and thread count.")] = True,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the random graphs.")] = 0,
    device: DeviceOpt = None,
    cuda_graphs: CudaGraphsOpt = False,
    max_attention_mib: Annotated[
        float,
        typer.Option(
            callback=finite_number(1.0),
            help="Largest memory one call may hold, in MiB (>= 1), counted as gtc serve counts a request (same "
            "option and default: attention scores or slots, plus what the call holds per edge and per node); a size "
            "and batch size above it is refused before any run.",
        ),
    ] = SERVER_LIMITS["max_attention_mib"],
    max_pe_work: Annotated[
        float,
        typer.Option(
            callback=finite_number(1.0),
            help="Largest work of the positional encodings (LapPE, RWSE) and a Graphormer's shortest-path "
            "distances of one call (>= 1), in steps of the cube of each graph's nodes, about 30e9 a second on one "
            "core, counted as gtc serve counts a raw request (same option and default); a size and batch size "
            "above it is refused before any run.",
        ),
    ] = SERVER_LIMITS["max_pe_work"],
    max_inflight_mib: Annotated[
        float,
        typer.Option(
            callback=finite_number(0.001),
            help="Largest working memory of the positional encodings of one call, in MiB (>= 0.001), counted as "
            "gtc serve charges a raw request's encodings to its --max-inflight-mib (same option and default); a "
            "size and batch size above it is refused before any run.",
        ),
    ] = SERVER_LIMITS["max_inflight_mib"],
) -> None:
    """Latency (mean, std, p50/p90/p99), graphs/s and peak RSS of one or more models on this CPU.

    Checkpoint directories run with torch on --device (CUDA rows: once per size, thread counts do not
    apply); next to them, ONNX models run on ONNX Runtime CPU unless --providers says otherwise. A
    TensorRT engine (.plan) also runs once per size: its threads do not exist.

    A measurement that fails (out of memory, a crash) is named at once and its pass stops; every other
    model and thread count is still measured, and the report of those rows is written, naming what
    failed ("failed" in report.json): the exit status is then 1.

    Example: gtc profile dense.onnx pruned.onnx --threads 1,2,4 --sizes 32,128,512 --out profile/

    Example: gtc profile pruned.onnx runs/gt-pruned --device cuda --cuda-graphs --sizes 32,128 --out profile/
    """
    from rich.text import Text

    from gtcompress.errors import GTCompressError
    from runtime.backends import resolve_providers
    from runtime.profile import profile_models
    from runtime.profile_failures import ProfileIncomplete, failure_line
    from runtime.profile_report import report_tables, write_report
    from runtime.session import is_checkpoint

    if names is not None and not names.strip():  # was taken as not given: the default labels, without a word
        raise GTCompressError("--names: empty value; give one label per model (comma-separated), or leave it out")
    labels = [n.strip() for n in names.split(",")] if names is not None else None
    if labels is not None and len(labels) != len(models):
        raise GTCompressError(f"--names: {len(labels)} labels for {len(models)} models")
    if labels is not None and (not all(labels) or len(set(labels)) != len(labels)):
        # an empty name is a row titled "(gt, dense, …)"; a repeated one, two models no table or plot tells apart
        raise GTCompressError(f"--names {names!r}: each model needs its own non-empty label")
    # Every mistake the user can see before profiling is reported before the progress bar opens.
    graph_sizes, batch_counts, thread_counts = (
        _ints(sizes, "--sizes"),
        _ints(batch_sizes, "--batch-sizes"),
        _ints(threads, "--threads"),
    )
    exported = not all(is_checkpoint(m) for m in models)  # a checkpoint's (torch) rounds are warmed up
    # before the iterations' check: its answer (--rounds 1) answers that one too, so a retry meets no second error
    if rounds is not None and (why := cold_rounds_refusal(warmup, rounds, exported)):  # cold calls among warm ones
        raise GTCompressError(
            f"--warmup 0 with --rounds {rounds}: {why}; give --rounds 1 to time one cold start, or --warmup 1 or more"
        )
    if rounds is not None and iterations < 2 * rounds:  # a round of one call has no spread to compare
        raise GTCompressError(
            f"--iterations {iterations} is too few for --rounds {rounds}: each round times at least 2 calls "
            f"(give --iterations {2 * rounds} or more, or fewer rounds)"
        )
    for m in models:
        if not m.exists():
            raise GTCompressError(f"model file does not exist: {m}")
    _check_graph_memory(max(graph_sizes), max(batch_counts), degree)
    _check_out_dir(out)
    check_device(models, device, cuda_graphs, all_checkpoints=False)
    _check_exported_models(models)
    chosen = providers_option(providers)
    if chosen and all(is_checkpoint(m) for m in models):  # ignored: torch rows, "cuda" in the report
        raise GTCompressError(
            f"--providers {providers}: applies to exported models (ONNX Runtime); every model given is a checkpoint "
            "directory, which runs with torch: use --device cuda (or cpu) instead"
        )
    if chosen:
        _check_providers_run(models, resolve_providers(chosen))

    def on_failure(record: dict[str, Any]) -> None:  # at once, above the bar: the rest may take minutes
        console.print(Text(f"failed: {failure_line(record)}", style="red"))

    incomplete = None
    # the bar opens on profile_models' first progress call, after its own refusals (the attention memory of
    # each size among them)
    with lazy_progress("profiling") as progress:
        try:
            report = profile_models(
                [str(m) for m in models],
                graph_sizes=graph_sizes,
                batch_sizes=batch_counts,
                threads=thread_counts,
                iterations=iterations,
                warmup=warmup,
                avg_degree=degree,
                seed=seed,
                providers=chosen,
                op_profile=op_profile,
                isolate=isolate,
                names=labels,
                progress=progress,
                device=device,
                cuda_graphs=cuda_graphs,
                max_attention_mib=max_attention_mib,
                max_pe_work=max_pe_work,
                max_inflight_mib=max_inflight_mib,
                rounds=rounds,
                on_failure=on_failure,
            )
        except ProfileIncomplete as e:  # the rows measured are reported, and the status says they are not all
            report, incomplete = e.report, e
    n = len(report["failed"])
    failed = f"{n} measurement{'s' if n > 1 else ''} failed"
    if incomplete is not None and not incomplete.measured:  # each failure named above, as it happened
        print_error(f"{failed} (named above); no row was measured, so no report was written")
        raise typer.Exit(1)
    for t in report_tables(report):
        console.print(t)
    paths = write_report(report, out)
    console.print(f"report: {paths[0]}  plots: {', '.join(p.name for p in paths[1:])}")
    if incomplete is not None:
        print_error(
            f'{failed} (named above and in report.json\'s "failed"); the report holds the rows measured without them'
        )
        raise typer.Exit(1)
