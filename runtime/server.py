"""``gtc serve``: a KServe v2 / Open Inference Protocol server with graph-aware dynamic batching (the HTTP
application; a served model and request validation are :mod:`runtime.served`, metrics :mod:`runtime.metrics`).

Endpoints (HTTP, FastAPI + uvicorn): ``GET /v2/health/live``, ``/v2/health/ready``, ``/v2``,
``/v2/models/{name}``, ``/v2/models/{name}/ready``, ``/v2/models/{name}/config`` (Triton's model
configuration extension, carrying ``gtcompress_input_spec``), ``POST /v2/models/{name}/infer``
(each also under ``/versions/{v}``), and ``GET /metrics`` (Prometheus) when enabled. Tensors
travel as JSON or with Triton's binary tensor data extension (:mod:`runtime.protocol`), so
``tritonclient.http`` works in its default binary mode and in JSON mode.

Request format — what either variant of the Triton repository ``gtc export --triton-repo`` writes
takes: the native one's inputs (our model metadata lists exactly the exported ONNX inputs), or the
python one's raw graphs:

* **Full input set** (what :func:`runtime.client.make_inputs` builds and what Triton needs): every input of the
  model metadata — ``x``, ``edge_index``, [``edge_attr``], ``batch``, ``node_counts``, ``pe_*`` and the attention
  layout tensors — taken as already pre-processed (TEDDY applied, PE computed), as Triton takes it; the layout
  tensors' sizes are checked (:mod:`runtime.layout_sizes`), their values rebuilt after merging (which renumbers).
* **Raw graphs** (for clients without the spec; Triton's python variant takes the same tensors, each
  with a leading batch dimension of 1): ``x``, ``edge_index`` and ``edge_attr`` (if the model has
  edge features), optionally ``batch`` and/or ``node_counts`` (several graphs in one request). The
  server runs the deployed pre-processing: TEDDY if the model was fine-tuned on sparsified graphs,
  PE, layout.
* Anything in between (a ``pe_*`` or layout tensor, but not every input) is a 400 naming the
  missing inputs (:func:`is_preprocessed`): guessing would apply TEDDY twice. Where a raw graph and
  a full input set look alike (TEDDY, all inputs raw ones, ``batch`` and ``node_counts`` both sent),
  the request parameter ``gtcompress_preprocessed`` says which, or the request gets a 400.

So one tritonclient program gets the same answer from this server and from Triton
(:func:`runtime.client.infer_graphs` reads which inputs a model takes), and batching still works
because ``x``/``edge_index``/``batch`` are always among the inputs. The output ``output`` is per
node ``[N, out]`` or per graph ``[B, out]`` of the request.

A request head past 64 KiB, or not complete within 30 s, gets 431 or 408 (:mod:`runtime.http_head`). Every request
is decoded and validated before it is queued (a bad one gets HTTP 400 naming the input and the problem, and never
reaches the model; a body larger than ``max_body_bytes`` as sent or once decoded gets 413 while it streams in,
:mod:`runtime.body`, and one that stops arriving for ``body_timeout_s`` gets 408; one that would take the bytes
held by all requests in flight past ``max_inflight_mib`` gets 503, counting the working memory of the positional
encodings the server computes for it (:func:`runtime.request_cost.pe_memory`) and of encoding its answer, whose
body stays charged until the client has taken it (:func:`runtime.request_cost.answer_bytes`), and one whose body,
encodings or answer alone exceed it gets 400); accepted requests are merged by
:class:`runtime.batcher.DynamicBatcher`; on shutdown uvicorn stops accepting, in-flight requests finish (a batch
waiting for company fires at once), then the batcher drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from gtcompress.preprocess.batching import NumpyGraph
from runtime.batcher import DynamicBatcher
from runtime.body import BodyClock, ClientDisconnected, InflightBudget, Lease, read_body, receive_chunks
from runtime.errors import (
    BodyTimeoutError,
    BodyTooLargeError,
    InputError,
    JsonTooLargeError,
    ModelNotFoundError,
    ProtocolError,
    ServerBusyError,
)
from runtime.headers import request_headers
from runtime.http_head import client_left
from runtime.metrics import Metrics, outcome_of
from runtime.net import listen_sockets
from runtime.packing import BatchConfig
from runtime.protocol import (
    HEADER_LENGTH,
    InferRequest,
    encode_infer_response,
    error_body,
    json_head_length,
    json_parse_bytes,
    parse_infer_request,
    tensor_bytes,
)
from runtime.request_cost import INLINE_PE_BYTES, answer_bytes, check_answer, check_pe_memory, pe_memory
from runtime.served import (
    ServedModel,
    ServerLimits,
    default_model_name,
    finish_graph,
    request_graph,
    run_items,
    teddy_runs,
)
from runtime.session import GraphSession
from runtime.uvicorn_run import BackgroundServer as BackgroundServer  # where tests and notebooks look for it
from runtime.uvicorn_run import uvicorn_server

log = logging.getLogger("gtcompress.serve")
RawHeaders = list[tuple[bytes, bytes]]

SERVER_NAME = "gtcompress"
EXTENSIONS = ["binary_tensor_data", "model_configuration", "parameters"]
INLINE_BODY_BYTES = 64 * 1024  # smaller requests are decoded on the event loop, larger in a thread
INLINE_ANSWER_VALUES = 4096  # answers of as many values are encoded on the event loop (about 0.5 ms), larger in one
#: Once shutdown begins, how long a request body still being read may pause before it gets 503.
SHUTDOWN_BODY_S = 1.0


def create_app(
    models: dict[str, GraphSession] | Sequence[ServedModel],
    batch: BatchConfig | None = None,
    *,
    metrics: bool = False,
    limits: ServerLimits | None = None,
    warmup: bool = True,
) -> Any:
    """The FastAPI app serving ``models`` (``{name: session}`` or :class:`ServedModel`s)."""
    batch = batch or BatchConfig()
    limits = limits or ServerLimits()
    given = [ServedModel(n, s, batch) for n, s in models.items()] if isinstance(models, dict) else list(models)
    served: dict[str, ServedModel] = {m.name: m for m in given}
    for m in given:
        m.hold_to(limits)
    mx = Metrics() if metrics else None
    per_model = {name: mx.for_model(name) for name in served} if mx is not None else {}
    state = {"ready": False}
    budget = InflightBudget(limits.inflight_bytes)  # every infer request's bytes together (503 past it)
    clock = BodyClock(limits.body_timeout_s)  # bodies being read (shutdown shortens their timeout)
    loops: list[asyncio.AbstractEventLoop] = []  # the app's event loop, once it runs

    def lookup(name: str, version: str | None = None) -> ServedModel:
        m = served.get(name)
        if m is None:
            raise ModelNotFoundError(f"unknown model '{name}'; this server has {', '.join(sorted(served)) or 'none'}")
        if version not in (None, "", m.version):
            raise ModelNotFoundError(f"model '{name}' has no version '{version}' (served: {m.version})")
        return m

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        loops[:] = [asyncio.get_running_loop()]
        clock.resume()  # a previous run's shutdown shortened the body timeout
        for m in served.values():
            if warmup:
                _warmup(m)
            on_batch = None
            if mx is not None:
                on_batch = per_model[m.name].observe_batch
                mx.pending.labels(m.name).set_function(lambda m=m: m.batcher.pending if m.batcher else 0)
            m.batcher = DynamicBatcher(lambda items, m=m: run_items(m, items), m.batch, on_batch)
            m.batcher.start()
        state["ready"] = True
        log.info(
            "ready: %s; event loop %s",
            ", ".join(f"{m.name} ({m.session.providers[0]})" for m in served.values()),
            type(asyncio.get_running_loop()).__module__,  # uvloop when installed (uvicorn's loop "auto")
        )
        try:
            yield
        finally:
            state["ready"] = False
            for m in served.values():
                if m.batcher is not None:
                    await m.batcher.close()

    def begin_shutdown() -> None:
        """Readiness drops at once and no batch waits for company any more: uvicorn accepts no new
        connection, and the requests still in flight are queued and answered, so a batch waiting up to
        ``max_delay_ms`` for more would only hold the shutdown back, past uvicorn's graceful timeout
        when the delay is longer. Bodies still being
        read may pause :data:`SHUTDOWN_BODY_S` from now on: a stalled one gets 503 at once rather
        than holding the shutdown until the graceful timeout cancels it (a 500 and a traceback)."""
        state["ready"] = False
        for m in served.values():
            if m.batcher is not None:
                m.batcher.hurry()
        if loops and not loops[0].is_closed():  # from a signal handler or another thread: on the loop
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loops[0].call_soon_threadsafe(clock.hurry, SHUTDOWN_BODY_S)

    app = FastAPI(
        title="gtcompress inference server", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.gtc = state
    app.state.begin_shutdown = begin_shutdown
    app.state.inflight = budget
    app.state.models = served

    def error(status: int, message: str) -> Response:
        return Response(error_body(message), status_code=status, media_type="application/json")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> Response:
        return error(400, f"bad request: {exc.errors()}")

    @app.exception_handler(ModelNotFoundError)
    async def _not_found(request: Request, exc: ModelNotFoundError) -> Response:
        return error(404, str(exc))

    def ok(payload: dict[str, Any]) -> Response:
        return Response(json.dumps(payload), media_type="application/json")

    @app.get("/v2/health/live")
    async def live() -> Response:
        return ok({"live": True})

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return ok({"ready": True}) if state["ready"] else error(503, "server is not ready")

    @app.get("/v2")
    async def server_metadata() -> Response:
        from gtcompress import __version__

        return ok({"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS})

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str | None = None) -> Response:
        return ok(lookup(name, version).metadata())

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None) -> Response:
        m = lookup(name, version)
        if state["ready"] and m.batcher is not None and m.batcher.running:
            return ok({"name": name, "ready": True})
        return error(503, f"model '{name}' is not ready")

    @app.get("/v2/models/{name}/config")
    @app.get("/v2/models/{name}/versions/{version}/config")
    async def model_config(name: str, version: str | None = None) -> Response:
        return ok(lookup(name, version).config())

    async def handle_infer(
        name: str, version: str | None, chunks: AsyncIterator[bytes], headers: RawHeaders, lease: Lease, gone: Any
    ) -> tuple[int, bytes, dict[str, str]] | None:
        """One request → (status, body, headers), or None if the client left first; shared by the fast path and
        the route. ``headers``: ASGI's list; ``lease``: then holds an answer till sent; ``gone``: see submit."""
        start = time.perf_counter()
        result: tuple[int, bytes, dict[str, str]] | None = None
        try:
            result = await answer_infer(name, version, chunks, headers, lease, gone)
            return result
        finally:
            if mx is not None:
                mm = per_model.get(name)
                if mm is None:
                    mx.unknown_model.inc()
                else:
                    mm.requests[outcome_of(None if result is None else result[0])].inc()
                    mm.latency.observe(time.perf_counter() - start)

    async def answer_infer(
        name: str, version: str | None, chunks: AsyncIterator[bytes], raw: RawHeaders, lease: Lease, gone: Any
    ) -> tuple[int, bytes, dict[str, str]] | None:
        """:func:`handle_infer` without the metrics."""
        answered = False
        try:
            m = lookup(name, version)
            headers = request_headers(raw)
            body = await read_body(
                chunks,
                limits.max_body_bytes,
                headers.get("content-encoding"),
                headers.get("content-length"),
                lease,
                clock,
            )
            header_len = headers.get(HEADER_LENGTH.lower())

            # Parsing JSON holds several times its text (a Python object per number): held to the
            # budget before it starts (413 if it never fits, 503 while others hold it), then only the arrays.
            small = len(body) <= INLINE_BODY_BYTES
            parse = (
                json_parse_bytes(body, header_len)
                if small
                else await asyncio.to_thread(json_parse_bytes, body, header_len)
            )
            if len(body) + parse > budget.limit:
                head = json_head_length(body, header_len)
                raise JsonTooLargeError(len(body), len(body) + parse, budget.limit, head)
            lease.grow_to(len(body) + parse)
            inline = small and not _needs_teddy(body, m)

            def decode() -> tuple[InferRequest, NumpyGraph, int, bool, int]:
                req = parse_infer_request(body, header_len, m.check_input)
                g, num_graphs, full = request_graph(req, m, limits, teddy=False)
                need = pe_memory(m, g, num_graphs, teddy=teddy_runs(m, full))
                charge = need > INLINE_PE_BYTES
                if not charge:  # a few MiB at most: a large body's PE here, a small one's per batch
                    g = finish_graph(g, m, limits, num_graphs, full, pe=not inline)
                return req, g, num_graphs, full, need if charge else 0

            if inline:
                req, g, num_graphs, full, need = decode()  # small and cheap: faster than a thread hop
            else:
                req, g, num_graphs, full, need = await asyncio.to_thread(decode)
            lease.resize(len(body) + tensor_bytes(req))
            if need:
                # The encodings' working memory (TEDDY's included) is held while they are computed, in
                # parallel with the model: charged to this request's lease first (here, on the event
                # loop: the budget has no lock), a 400 past the whole budget and a 503 past what the
                # others leave, as body bytes are; what the encodings keep stays charged until the answer.
                held, before = lease.held, set(g.pe)
                check_pe_memory(m, limits, g, need, held)
                lease.grow_to(held + need)
                g = await asyncio.to_thread(finish_graph, g, m, limits, num_graphs, full, pe=True)
                lease.shrink_to(held + sum(a.nbytes for kind, a in g.pe.items() if kind not in before))
            if m.batcher is None:
                return _error(503, "server is shutting down")
            # the answer is charged before the model runs, then its body until taken (slow readers' answers)
            names = _output_names(req, m)
            binary = all(req.wants_binary(n) for n in names)
            answer = answer_bytes(m, binary, g.num_nodes, num_graphs)
            check_answer(m, limits, answer, lease.held, binary=binary)
            lease.grow_to(lease.held + answer)
            # Not refused once shutdown has begun: a request whose body came before it is in flight, and
            # uvicorn waits for it before the batcher closes (submit refuses from then on: a 503 below).
            out = await m.batcher.submit(g, num_graphs, gone)
            outs = (m.name, m.version, req.id, [(n, out, req.wants_binary(n)) for n in names])
            if out.size <= INLINE_ANSWER_VALUES:
                payload, resp_headers = encode_infer_response(*outs)
            else:  # 0.4 s for a 1M-node answer as JSON: every other request and health check waited
                payload, resp_headers = await asyncio.to_thread(encode_infer_response, *outs)
            lease.shrink_to(len(payload))
            answered = True
            return 200, payload, resp_headers
        except ClientDisconnected:
            return None
        except ModelNotFoundError as e:
            return _error(404, str(e))
        except BodyTooLargeError as e:
            return _error(413, str(e))
        except BodyTimeoutError as e:  # the rest of the body may still come: the connection must close
            status = 503 if e.shutting_down else 408
            return status, error_body(str(e)), {"content-type": "application/json", "connection": "close"}
        except ServerBusyError as e:
            return _error(503, str(e))
        except (ProtocolError, InputError) as e:
            return _error(400, str(e))
        except RuntimeError as e:
            if "batcher is not running" in str(e):
                return _error(503, "server is shutting down")
            log.exception("inference failed")
            return _error(500, f"inference failed: {e}")
        except Exception as e:  # never let one request take the server down
            log.exception("inference failed")
            return _error(500, f"inference failed: {type(e).__name__}: {e}")
        finally:
            if not answered:  # an error's body is small: nothing to hold while it is sent
                lease.release()

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str | None = None) -> Response:
        lease = budget.lease()  # FastInferApp serves requests (holding an answer until sent), not this route
        try:
            result = await handle_infer(name, version, _stream(request), request.headers.raw, lease, None)
        finally:
            lease.release()
        if result is None:  # the client is gone: nobody reads this
            return Response(status_code=400)
        status, payload, headers = result
        return Response(payload, status_code=status, headers=headers)

    if mx is not None:

        @app.get("/metrics")
        async def prometheus() -> Response:
            data, ctype = mx.render()
            return Response(data, media_type=ctype)

    return FastInferApp(app, handle_infer)


class FastInferApp:
    """ASGI wrapper that serves ``POST .../infer`` directly and everything else through FastAPI.

    On the hot path FastAPI's routing, request object and middleware cost about as much as
    decoding and validating a small graph; this skips them (same handler, same responses)."""

    _PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")

    def __init__(self, app: FastAPI, handle: Any) -> None:
        self.app, self.handle = app, handle

    @property
    def state(self) -> Any:
        return self.app.state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD":  # a GET's head (RFC 9110 9.3.2): health checks
            scope = {**scope, "method": "GET"}  # send HEAD; uvicorn, knowing the request's method, sends no body
        if scope["type"] == "http" and scope["method"] == "POST":
            match = self._PATH.fullmatch(scope["path"])
            if match:
                # The ASGI path is percent-decoded already (as FastAPI's routes read it): decoding it again
                # served /v2/models/g%2574/infer as model "gt", where GET /v2/models/g%2574 is a 404 for
                # "g%74", and made a model named "a%41" unreachable (tritonclient quotes it to a%2541).
                name, version = match[1], match[2]
                lease, gone = self.app.state.inflight.lease(), client_left(receive)
                try:
                    result = await self.handle(name, version, receive_chunks(receive), scope["headers"], lease, gone)
                    if result is None:  # the client left before its answer
                        return
                    status, body, out_headers = result
                    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in out_headers.items()]
                    raw.append((b"content-length", str(len(body)).encode()))
                    await send({"type": "http.response.start", "status": status, "headers": raw})
                    big = len(body) > INLINE_BODY_BYTES  # uvicorn drains a full write buffer before a send,
                    await send({"type": "http.response.body", "body": body, "more_body": big})
                    if big:  # not after: an empty last send returns once the client took the (charged) answer
                        await send({"type": "http.response.body", "body": b""})
                finally:
                    lease.release()
                return
        await self.app(scope, receive, send)


async def _stream(request: Request) -> AsyncIterator[bytes]:
    """Starlette's body stream, with its disconnect exception as ours (the handler knows no Starlette)."""
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        raise ClientDisconnected from None


def _error(status: int, message: str) -> tuple[int, bytes, dict[str, str]]:
    return status, error_body(message), {"content-type": "application/json"}


def _needs_teddy(body: bytes | bytearray, m: ServedModel) -> bool:
    """Whether decoding may run TEDDY (a raw graph to a TEDDY model), judged from the JSON header alone."""
    if m.session.model.teddy is None:
        return False
    head = body[:4096]
    return b'"node_counts"' not in head or any(f'"pe_{k}"'.encode() not in head for k in m.session.spec.pe)


def _output_names(req: InferRequest, m: ServedModel) -> list[str]:
    if req.outputs is not None:
        return [o.name for o in req.outputs]
    return [m.session.output_name]


def _warmup(m: ServedModel) -> None:
    """One small call so the first request does not pay ONNX Runtime's lazy initialisation."""
    from gtcompress.preprocess.random_graphs import random_graph

    spec = m.session.spec
    g = random_graph(np.random.default_rng(0), 4, 8, spec.x, spec.edge_attr)
    try:
        m.session.run([g])
    except Exception as e:  # a warm-up failure is not fatal; requests will report it
        log.warning("warm-up of %s failed: %s", m.name, e)


# ---------------------------------------------------------------------------------- running it
def serve(
    path: str | Path | GraphSession,
    name: str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    batch: BatchConfig | None = None,
    metrics: bool = False,
    providers: list[str] | None = None,
    threads: int | None = None,
    limits: ServerLimits | None = None,
    log_level: str = "warning",
    graceful_s: float = 30.0,
    sockets: list[socket.socket] | None = None,
) -> None:
    """Load ``path`` (or take a session) and serve it until SIGINT/SIGTERM, then drain in-flight requests.

    ``sockets``: already bound by :func:`listen_sockets` (``host``/``port`` then only name them in
    logs); otherwise bound here, before the model is loaded."""
    socks = sockets if sockets is not None else listen_sockets(host, port)
    # no spinning: the event loop decodes requests on the cores ONNX Runtime's idle threads would spin on
    sess = path if isinstance(path, GraphSession) else GraphSession(path, providers, threads=threads, spinning=False)
    model_name = name or default_model_name(sess.path)
    app = create_app([ServedModel(model_name, sess, batch or BatchConfig())], metrics=metrics, limits=limits)
    uvicorn_server(app, host, port, log_level, graceful_s).run(sockets=socks)
