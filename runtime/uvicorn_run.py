"""Running the ``gtc serve`` app under uvicorn: the server object (our bounded request heads, a
graceful drain that drops readiness first) and a background runner on loopback for tests and
notebooks. Apart from :mod:`runtime.server` so that the HTTP application stays one concept.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from typing import Any

# Required, not optional: the server's bounds on slow and stalled clients (request head time, answers not
# taken, the shutdown cut-off, pipelining, half-closed clients) are built on uvicorn's httptools protocol
# (runtime.http_head); without httptools uvicorn runs h11 with none of them. Imported here so that a
# missing httptools stops `gtc serve` before it starts, as a missing fastapi or uvicorn does.
import httptools  # noqa: F401

from runtime.http_head import bounded_head_protocol


def uvicorn_server(app: Any, host: str, port: int, log_level: str, graceful_s: float) -> Any:
    import uvicorn

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            app.state.begin_shutdown()  # readiness drops at once; in-flight requests still finish
            if sig == signal.SIGTERM:
                # uvicorn records the signal and raises it again once it has shut down, so a graceful stop
                # on SIGTERM (how containers and systemd stop a service) ended in SIGTERM's default action:
                # killed, exit status 143. Not recorded, the server returns and the process exits 0.
                self.should_exit = True
                return
            super().handle_exit(sig, frame)  # Ctrl-C: KeyboardInterrupt once stopped ("interrupted", 130)

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=graceful_s,
        lifespan="on",
        backlog=2048,
        http=bounded_head_protocol(),
    )
    return _Server(config)


class BackgroundServer:
    """Serve an app from a thread on loopback (tests, notebooks); ``with`` stops and drains it."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        self.app, self.host = app, host
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
        # without it every response waits ~40 ms for a delayed ACK (headers and body are two writes).
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.port = int(self.sock.getsockname()[1])
        self.server = uvicorn_server(app, host, self.port, log_level, graceful_s=10.0)
        self.thread = threading.Thread(target=self._run, name="gtc-serve", daemon=True)

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"

    def _run(self) -> None:
        self.server.run(sockets=[self.sock])

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not (self.server.started and self.app.state.gtc["ready"]):
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.app.state.begin_shutdown()
        self.server.should_exit = True
        self.thread.join(timeout)
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
