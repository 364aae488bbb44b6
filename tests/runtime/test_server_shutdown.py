"""A graceful shutdown (SIGINT/SIGTERM, ``BackgroundServer.stop``) answers the requests in flight."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np

import runtime.server as server_module
from runtime.server import INLINE_BODY_BYTES, BackgroundServer, ServedModel, create_app
from runtime.session import GraphSession
from tests.runtime.test_server_limits import _request


def test_a_request_being_decoded_when_shutdown_begins_is_answered(exported, monkeypatch) -> None:
    """A request whose body had come, decoded (PE included) while shutdown began, got 503 "server is
    shutting down", though the batcher was still running and uvicorn waited for it: ``gtc serve``
    said "Ctrl-C drains and stops", and three 1,500-node requests sent before a SIGTERM were refused
    after their PE was computed. It is answered, as a direct run answers it."""
    session = GraphSession(exported["node"].path)
    g = exported["node"].graphs(1, seed=3, lo=20, hi=21)[0]
    body = _request(g, INLINE_BODY_BYTES + 1000)  # decoded in a thread, where shutdown can begin meanwhile
    decoding, go_on = threading.Event(), threading.Event()
    parse = server_module.parse_infer_request

    def held(*args, **kwargs):  # decoding while the shutdown begins
        decoding.set()
        assert go_on.wait(30)
        return parse(*args, **kwargs)

    monkeypatch.setattr(server_module, "parse_infer_request", held)
    app = create_app([ServedModel("m", session)], warmup=False)
    srv = BackgroundServer(app).start()
    result: list[httpx.Response] = []
    client = threading.Thread(
        target=lambda: result.append(httpx.post(f"http://{srv.url}/v2/models/m/infer", content=body, timeout=60))
    )
    client.start()
    try:
        assert decoding.wait(30)
        stopper = threading.Thread(target=srv.stop)
        stopper.start()
        deadline = time.monotonic() + 10
        while app.state.gtc["ready"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not app.state.gtc["ready"]  # the shutdown has begun
    finally:
        go_on.set()
        client.join(30)
    stopper.join(30)
    assert not stopper.is_alive()
    (r,) = result
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    got = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
    np.testing.assert_allclose(got, session.run(g)[0], atol=1e-5)
