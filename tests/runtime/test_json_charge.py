"""A JSON request body is held to ``max_inflight_mib`` at what parsing it takes, not at its size: a
Python object per number made a 92 MiB body of floats take 642 MiB while parsed, 7-30x what was charged."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from gtcompress.preprocess import NumpyGraph
from runtime.body import Lease
from runtime.protocol import HEADER_LENGTH, json_parse_bytes
from runtime.request_cost import JSON_ANSWER_VALUE_BYTES
from runtime.server import BackgroundServer, ServedModel, ServerLimits, create_app
from tests.runtime.conftest import wait_for_held

MiB = 1 << 20


def _tensors(g: NumpyGraph) -> dict[str, np.ndarray]:
    return {"x": g.x.astype(np.int64), "edge_index": g.edge_index, "edge_attr": g.edge_attr.astype(np.float32)}


def _json_request(g: NumpyGraph) -> bytes:
    inputs = [
        {
            "name": n,
            "datatype": "INT64" if a.dtype == np.int64 else "FP32",
            "shape": list(a.shape),
            "data": a.ravel().tolist(),
        }
        for n, a in _tensors(g).items()
    ]
    return json.dumps({"inputs": inputs}).encode()


def _binary_request(g: NumpyGraph) -> tuple[bytes, int]:
    tensors = _tensors(g)
    inputs = [
        {
            "name": n,
            "datatype": "INT64" if a.dtype == np.int64 else "FP32",
            "shape": list(a.shape),
            "parameters": {"binary_data_size": a.nbytes},
        }
        for n, a in tensors.items()
    ]
    head = json.dumps({"inputs": inputs}).encode()
    return head + b"".join(a.tobytes() for a in tensors.values()), len(head)


def _floats(n: int) -> bytes:
    """A JSON request of ``n`` floats: 8 bytes of text each, about 56 bytes each parsed."""
    return b'{"inputs":[{"name":"x","datatype":"FP32","shape":[%d],"data":[%s]}]}' % (n, b",".join([b"0.12345"] * n))


def _post(srv: BackgroundServer, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"http://{srv.url}/v2/models/m/infer", content=body, headers=headers or {}, timeout=60)


def test_the_parse_charge_counts_text_values_lists_objects_and_strings() -> None:
    body = b'{"a":[[1,2],[3]],"b":"xy"}'
    # 2 1/16 x 26 bytes of text, 3 values (commas), 3 lists, 1 object, 6 quotes
    assert json_parse_bytes(body) == 2 * 26 + 1 + 56 * 3 + 112 * 3 + 192 + 24 * 6
    binary = body + b",[{" * 1000  # binary tensor data after the head is not JSON; the head is sliced off (a copy)
    assert json_parse_bytes(binary, str(len(body))) == 3 * 26 + 1 + 56 * 3 + 112 * 3 + 192 + 24 * 6
    # an unusable header is refused before any JSON is read: nothing to charge
    for bad in ("x", " 26", "0", str(len(binary) + 1)):
        assert json_parse_bytes(binary, bad) == 0


@pytest.fixture
def charges(monkeypatch) -> Iterator[list[tuple[str, int]]]:
    """Every size a request's lease is asked to hold, in order."""
    seen: list[tuple[str, int]] = []
    grow, resize = Lease.grow_to, Lease.resize

    def grow_to(self: Lease, size: int) -> None:
        seen.append(("grow", size))
        grow(self, size)

    def resized(self: Lease, size: int) -> None:
        seen.append(("resize", size))
        resize(self, size)

    monkeypatch.setattr(Lease, "grow_to", grow_to)
    monkeypatch.setattr(Lease, "resize", resized)
    yield seen


@pytest.mark.parametrize("wire", ["json", "binary"])
def test_a_request_is_held_at_its_parse_charge_then_at_its_arrays(session, graph, charges, wire: str) -> None:
    """JSON: body + its parse charge while parsed, then body + the arrays decoded from it. Binary tensor
    data: the head's charge while parsed, then the body alone (its arrays are views of it)."""
    app = create_app([ServedModel("m", session)], warmup=False)
    if wire == "json":
        body, head, header = _json_request(graph), None, {}
        arrays = sum(a.nbytes for a in _tensors(graph).values())
    else:
        body, hl = _binary_request(graph)
        head, header, arrays = str(hl), {HEADER_LENGTH: str(hl)}, 0
    with BackgroundServer(app) as srv:
        charges.clear()
        r = _post(srv, body, header)
        assert r.status_code == 200, r.text
        assert app.state.inflight.held == 0
    parse = json_parse_bytes(body, head)
    assert parse > (2 if wire == "json" else 0) * len(body)
    assert charges[-4:-2] == [("grow", len(body) + parse), ("resize", len(body) + arrays)]
    # then the answer's encoding (3 JSON values a node), and once encoded its body alone until sent
    answer = graph.num_nodes * 3 * JSON_ANSWER_VALUE_BYTES
    assert charges[-2:] == [("grow", len(body) + arrays + answer), ("resize", len(r.content))]
    assert all(size <= len(body) for what, size in charges[:-4])  # the body as it arrived


def test_a_json_body_whose_parsing_exceeds_the_whole_budget_gets_413(session) -> None:
    limits = ServerLimits(max_body_bytes=MiB, max_inflight_mib=1.0)
    app = create_app([ServedModel("m", session)], limits=limits, warmup=False)
    body = _floats(20_000)  # 160 KB of text, well within the 1 MiB body limit
    charge = len(body) + json_parse_bytes(body)
    assert len(body) < MiB // 4 and charge > MiB
    with BackgroundServer(app) as srv:
        r = _post(srv, body)
        assert r.status_code == 413, r.text
        assert r.json()["error"] == (
            f"request JSON of {len(body)} bytes would take about {charge} bytes of memory to parse (a number costs "
            f"about 50 bytes parsed), more than this server's limit of {MiB} bytes for all requests in flight "
            "(max_inflight_mib); send the tensors as binary data (tritonclient: binary_data=True), or serve with a "
            "larger --max-inflight-mib"
        )
        assert app.state.inflight.held == 0


def test_a_json_body_meeting_a_full_budget_gets_503(session, graph) -> None:
    """Within the whole budget but not within what other requests leave of it: 503, as for body bytes."""
    limits = ServerLimits(max_body_bytes=MiB, max_inflight_mib=1.0, body_timeout_s=30)
    app = create_app([ServedModel("m", session)], limits=limits, warmup=False)
    body = _floats(8_000)
    charge = len(body) + json_parse_bytes(body)
    held = MiB // 2
    assert charge < MiB < held + charge
    with BackgroundServer(app) as srv:
        host, port = srv.url.rsplit(":", 1)
        s = socket.create_connection((host, int(port)), timeout=10)  # sends half a MiB of a MiB, then stalls
        s.sendall(f"POST /v2/models/m/infer HTTP/1.1\r\nHost: {srv.url}\r\nContent-Length: {MiB}\r\n\r\n".encode())
        s.sendall(b" " * held)
        try:
            assert wait_for_held(app, held) == held
            r = _post(srv, body)
            assert r.status_code == 503, r.text
            assert r.json()["error"] == (
                f"server is busy: requests in flight hold {held} bytes, and this one's {charge} would take them past "
                f"this server's limit of {MiB} bytes (max_inflight_mib); retry later"
            )
        finally:
            s.close()
        wait_for_held(app, 0)
        assert _post(srv, _json_request(graph)).status_code == 200


_PARSE_PEAK = """
import sys
from pathlib import Path
from runtime.errors import ProtocolError
from runtime.protocol import json_parse_bytes, parse_infer_request

def kib(key):
    lines = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in lines if line.startswith(key))

kind, n = sys.argv[1], int(sys.argv[2])
head = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[%d],"data":[' % n
item = {"floats": b"0.12345", "nested": b"[-1.5e-10]", "strings": b'"a"', "objects": b'{"a":1}'}.get(kind)
if kind == "string":
    body = bytearray(b'{"id":"' + b"a" * n + b'","inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1]}]}')
else:
    body = bytearray(head + b",".join([item] * n) + b"]}]}")
Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
before = kib("VmRSS")
try:
    parse_infer_request(body)
except ProtocolError:  # strings and objects are refused once parsed
    pass
print(len(body), (kib("VmHWM") - before) * 1024, json_parse_bytes(body))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS is reset and read in /proc (Linux)")
@pytest.mark.parametrize(
    ("kind", "n"),
    [("floats", 400_000), ("nested", 300_000), ("strings", 400_000), ("objects", 200_000), ("string", 40 * MiB)],
)
def test_what_parsing_a_json_body_takes_stays_within_its_charge(kind: str, n: int) -> None:
    """Measured in a fresh process (peak RSS is per process): the body itself was charged, and parsing
    it took 7x more (floats), 14x (nested lists), 22x (strings), 31x (objects); each is now within its
    charge. One long string takes twice its text."""
    out = subprocess.run(
        [sys.executable, "-c", _PARSE_PEAK, kind, str(n)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    size, grown, charged = map(int, out.stdout.split())
    assert grown > size  # the body alone, as charged before, was not what parsing takes
    assert grown <= charged, f"{kind}: parsing {size} bytes took {grown / MiB:.0f} MiB, charged {charged / MiB:.0f}"


@pytest.mark.parametrize("header", ["abc", "0", "huge"])
def test_an_unusable_header_length_gets_its_400_not_a_413_for_parsing_the_binary_data_as_json(
    session, graph, header: str
) -> None:
    """Parsing refuses such a request before reading any JSON; charged as if its whole body were JSON
    (3x its bytes and more), a binary request within max_body_bytes got 413 "send the tensors as binary
    data" instead of the 400 that names the header."""
    limits = ServerLimits(max_body_bytes=MiB, max_inflight_mib=1.0)
    app = create_app([ServedModel("m", session)], limits=limits, warmup=False)
    body, _ = _binary_request(graph)
    body += bytes(300_000)  # binary tensor data past the inputs: within max_body_bytes, over a third of it
    value = str(len(body) + 1) if header == "huge" else header
    want = (
        f"{HEADER_LENGTH} must be an integer, got {value!r}"
        if header == "abc"
        else f"{HEADER_LENGTH} is {value} but the body has {len(body)} bytes"
    )
    with BackgroundServer(app) as srv:
        r = _post(srv, body, {HEADER_LENGTH: value})
        assert r.status_code == 400, r.text
        assert r.json()["error"] == want
        assert app.state.inflight.held == 0


def test_a_binary_body_past_the_budget_with_its_head_parsed_is_told_to_raise_the_budget(session, graph) -> None:
    """A budget equal to max_body_bytes (the floor of --max-inflight-mib) and a binary body of that size:
    its JSON head's parsing takes it past the budget. It sent binary tensor data, so the 413 names its
    head and the budget, where it said "request JSON of <the whole body> bytes ... send the tensors as
    binary data"."""
    body, hl = _binary_request(graph)
    limits = ServerLimits(max_body_bytes=len(body), max_inflight_mib=0.001)
    app = create_app([ServedModel("m", session)], limits=limits, warmup=False)
    charge = len(body) + json_parse_bytes(body, str(hl))
    with BackgroundServer(app) as srv:
        r = _post(srv, body, {HEADER_LENGTH: str(hl)})
        assert r.status_code == 413, r.text
        assert r.json()["error"] == (
            f"request of {len(body)} bytes (a JSON head of {hl} bytes, then binary tensor data) would take about "
            f"{charge} bytes of memory to read, its body and the head parsed, more than this server's limit of "
            f"{len(body)} bytes for all requests in flight (max_inflight_mib); send any tensors still in the JSON "
            "head as binary data, or serve with a larger --max-inflight-mib"
        )
        assert app.state.inflight.held == 0
