"""``gtc serve`` (our KServe v2 server) and ``gtc tritonserver`` (NVIDIA Triton Inference Server on a
repository ``gtc export`` wrote). The options ``gtc serve`` shares with ``gtc profile`` (``--device``,
``--cuda-graphs``, ``--providers``, the server's limits) are in :mod:`cli.runtime_options`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import (
    check_out_writable,
    console,
    finite_number,
    path_value,
    served_model_name,
    stops_on_sigterm,
    user_errors,
)
from cli.runtime_options import SERVER_LIMITS, CudaGraphsOpt, DeviceOpt, check_device, providers_option

#: uvicorn's log levels: checked before the model loads, since uvicorn itself fails on another with a
#: KeyError traceback after the "serving" line.
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
    app.command("tritonserver")(tritonserver_cmd)


@user_errors
@stops_on_sigterm
def serve_cmd(
    model: Annotated[
        Path,
        typer.Argument(
            help="Exported model (.onnx, .plan), a Triton repository model dir, or a checkpoint (torch).",
            parser=path_value,
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option(
            help="Model name in the API (default: the file's stem, a directory's name, or its Triton model's name)."
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    max_delay_ms: Annotated[
        float,
        typer.Option(
            callback=finite_number(0.0, 60_000.0),  # runtime.packing.MAX_DELAY_MS (tests/runtime/test_cli.py checks)
            help="Longest wait for more requests to batch with (0 to 60000, a minute); a batch waits only while it "
            "holds fewer requests than were recently in flight at once, so a lone client never waits.",
        ),
    ] = 2.0,
    max_nodes: Annotated[int, typer.Option(min=1, help="Nodes per merged model call.")] = 8192,
    max_edges: Annotated[int, typer.Option(min=1, help="Edges per merged model call.")] = 65536,
    max_graphs: Annotated[int, typer.Option(min=1, help="Graphs per merged model call.")] = 1024,
    max_requests: Annotated[int, typer.Option(min=1, help="Requests per merged model call.")] = 256,
    batching: Annotated[bool, typer.Option(help="Graph-aware dynamic batching (--no-batching: one call each).")] = True,
    metrics: Annotated[
        bool,
        typer.Option(
            help="Prometheus metrics at /metrics: requests by model and outcome (success, invalid, unavailable, "
            "error, disconnected), latencies, batch sizes, queue length."
        ),
    ] = False,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Intra-op threads: ONNX Runtime's, or torch's for a checkpoint on the CPU (process-wide).",
        ),
    ] = None,
    providers: Annotated[str | None, typer.Option(help="ONNX Runtime providers in order, e.g. cuda,cpu.")] = None,
    log_level: Annotated[str, typer.Option(help=f"uvicorn log level: {', '.join(LOG_LEVELS)}.")] = "warning",
    max_body_mib: Annotated[
        float,
        typer.Option(
            callback=finite_number(0.001),
            help="Largest request body in MiB (>= 0.001), as sent and once gzip/deflate-decoded; a larger one "
            "gets 413 as soon as it passes the limit, without being held in memory.",
        ),
    ] = 512.0,
    max_attention_mib: Annotated[
        float,
        typer.Option(
            callback=finite_number(1.0),
            help="Largest memory one request's call may hold, in MiB (>= 1), counted from the model: the attention "
            "scores of its graphs padded to the largest, per layer with their biases (GPS, Graphormer, GT's dense "
            "lowering), or the padded lowering's neighbour-list slots, plus what the call holds per edge (GT on the "
            "scatter or plugin lowering, GINE GPS, edge features) and per node, all summed (a TEDDY model's on the "
            "edges TEDDY keeps). A request above it gets 400 before it runs. A merged call's sum stays under 256 MiB, "
            "or this if lower.",
        ),
    ] = SERVER_LIMITS["max_attention_mib"],
    max_pe_work: Annotated[
        float,
        typer.Option(
            callback=finite_number(1.0),
            help="Positional encodings (LapPE, RWSE) the server computes for one raw request (>= 1), in steps of the "
            "cube of each graph's nodes (LapPE 1 a graph, RWSE k-1) plus a fixed cost per graph, about 30e9 a "
            "second on one core, and a Graphormer's shortest-path distances (max_spd steps of the cube of the "
            "largest graph, per graph); a request above it gets 400 before any is computed. Requests carrying "
            "their pe_* are not charged for the encodings.",
        ),
    ] = SERVER_LIMITS["max_pe_work"],
    max_inflight_mib: Annotated[
        float,
        typer.Option(
            callback=finite_number(0.001),
            help="Request bytes the server holds at once (MiB, >= 0.001), all requests together (bodies from the "
            "first byte read until the answer, the working memory of the positional encodings the server computes "
            "for a raw request while they run, and answers from before the model runs until the client has taken "
            "them: 64 bytes a JSON value, 8 binary); past it a request gets 503 instead of being read or encoded, "
            "and one whose body, encodings or answer alone exceed it gets 400. A JSON body counts what parsing it "
            "takes (about twice its text plus 56 bytes a number) until parsed; one that needs more than this gets 413 "
            "(send binary tensor data). At least --max-body-mib.",
        ),
    ] = SERVER_LIMITS["max_inflight_mib"],
    body_timeout_s: Annotated[
        float,
        typer.Option(
            callback=finite_number(0.001),
            help="Seconds (>= 0.001) a request body may stop arriving (before its first byte or between two chunks); "
            "past it the request gets 408 and its connection closes, so a stalled client holds no memory. A body "
            "taking longer than this must average 500 bytes a second (408 otherwise).",
        ),
    ] = SERVER_LIMITS["body_timeout_s"],
    device: DeviceOpt = None,
    cuda_graphs: CudaGraphsOpt = False,
) -> None:
    """Serve a model over KServe v2 / Open Inference Protocol (HTTP; tritonclient works, binary or JSON).

    Example: gtc serve gt.onnx --name gt_cluster --port 8000 --max-delay-ms 2 --metrics

    Example: gtc serve runs/gt-pruned --device cuda --cuda-graphs --port 8000
    """
    from gtcompress.errors import GTCompressError
    from runtime.packing import BatchConfig
    from runtime.served import ServerLimits, mib_bytes
    from runtime.session import GraphSession

    model_name = served_model_name(name, model)
    if max_inflight_mib < max_body_mib:  # the largest body allowed could never be read
        raise GTCompressError(
            f"--max-inflight-mib {max_inflight_mib:g} is below --max-body-mib {max_body_mib:g}: a request of the "
            "largest allowed size would always get 503"
        )
    if log_level.lower() not in LOG_LEVELS:
        raise GTCompressError(f"--log-level {log_level!r}: expected one of {', '.join(LOG_LEVELS)}")
    cfg = (
        BatchConfig(max_nodes, max_edges, max_graphs, max_requests, max_delay_ms)
        if batching
        else BatchConfig.disabled()
    )
    limits = ServerLimits(
        max_body_bytes=mib_bytes(max_body_mib),
        max_attention_mib=max_attention_mib,
        max_pe_work=max_pe_work,
        max_inflight_mib=max_inflight_mib,
        body_timeout_s=body_timeout_s,
    )
    check_device([model], device, cuda_graphs, all_checkpoints=True)
    session = GraphSession(
        model, providers_option(providers), threads=threads, spinning=False, device=device, cuda_graphs=cuda_graphs
    )
    try:
        from runtime.net import listen_sockets
        from runtime.server import serve
    except ModuleNotFoundError as e:  # the HTTP stack is the optional 'serve' extra
        raise GTCompressError(
            f"gtc serve needs the 'serve' extra (fastapi, uvicorn, httptools; {e.name or e} is missing): "
            "python3 -m pip install -e '.[serve]'"
        ) from None
    # Bound before the banner: a port in use or a host that does not resolve is one error line, not
    # "serving ..." followed by uvicorn's failure.
    sockets = listen_sockets(host, port)
    try:
        bound = sockets[0].getsockname()[1]  # --port 0: the port the system chose
        shown = f"[{host}]" if ":" in host else host
        console.print(
            f"serving [bold]{model_name}[/] from {session.path} ({session.providers[0]}) on http://{shown}:{bound} "
            f"({'batching ≤ ' + str(max_delay_ms) + ' ms' if batching else 'no batching'}"
            f"{', metrics at /metrics' if metrics else ''}) — Ctrl-C drains and stops"
        )
        serve(
            session,
            model_name,
            host=host,
            port=bound,
            batch=cfg,
            metrics=metrics,
            limits=limits,
            log_level=log_level.lower(),
            sockets=sockets,
        )
    finally:
        for sock in sockets:
            sock.close()


@user_errors
@stops_on_sigterm
def tritonserver_cmd(
    repository: Annotated[
        Path, typer.Argument(help="Triton model repository (gtc export --triton-repo).", parser=path_value)
    ],
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="HTTP port (0: a free one).")] = 8000,
    log: Annotated[
        Path | None,
        typer.Option(
            help="Append the server's own log here (default: discarded).", parser=path_value, metavar="<path>"
        ),
    ] = None,
    startup_timeout: Annotated[
        float, typer.Option(callback=finite_number(1.0), help="Seconds to wait for the models to load (>= 1).")
    ] = 120.0,
) -> None:
    """Run NVIDIA Triton Inference Server (the binary of the nvidia-pytriton wheel) in the foreground.

    Example: gtc tritonserver triton_models --port 8000

    Needs pip install 'gtcompress\\[triton]'. HTTP only (tritonclient.http; no gRPC, no metrics port);
    Ctrl-C or SIGTERM stops it. A model that fails to load stops the server with the log's last lines.
    """
    import signal

    from gtcompress.errors import GTCompressError
    from runtime.tritonserver import TritonServer

    if log is not None:
        _check_log_file(log)
    srv = TritonServer(repository, host=host, http_port=port, log=log, startup_timeout=startup_timeout)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Before the server starts: it runs in its own session, so a SIGTERM during loading, or a SIGHUP
    # (the terminal closed), that killed us outright left it serving under PID 1.
    previous = {sig: signal.signal(sig, on_term) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with console.status(f"starting tritonserver on {repository} …"):
            srv.start()  # stops the server itself on any exception, KeyboardInterrupt included
        models = sorted(p.name for p in srv.repository.iterdir() if (p / "config.pbtxt").is_file())
        console.print(
            f"Triton serving {', '.join(models) or 'no models'} on http://{srv.url}"
            f"{f' (log: {log})' if log else ''} — Ctrl-C stops"
        )
        assert srv.process is not None
        code = srv.process.wait()
        tail = srv.log_tail()
        srv.stop()
        raise GTCompressError(f"tritonserver exited with code {code}:\n{tail}")
    except KeyboardInterrupt:
        code = srv.stop()  # None: the interrupted start stopped it (srv.start) before it was ready
        console.print("tritonserver stopped " + ("before it was ready" if code is None else f"(exit code {code})"))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        srv.stop()


def _check_log_file(log: Path) -> None:
    """Refuse a ``--log`` the server's output cannot be appended to, naming the option, before the launch:
    the launch's own OSError said only "runs: Is a directory" or "x.log: Read-only file system", which
    named no option. Creates nothing (the launch makes the file and its folders)."""
    import os

    from gtcompress.errors import ConfigError

    if log.is_dir():
        raise ConfigError(f"--log {log}: is a directory; give a file to append the server's log to")
    if log.exists():
        if not os.access(log, os.W_OK):
            raise ConfigError(f"--log {log}: the file is not writable")
        return
    check_out_writable(log, "--log")
