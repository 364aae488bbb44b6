"""Fuzzing the server's request decoder and validator: every request gets a 4xx or a correct answer.

Requests are built from random graphs (raw, raw with ``batch``/``node_counts``, or the full
pre-processed set), each tensor as JSON ``data`` or with Triton's binary tensor extension, the body
identity, gzip or deflate; then zero to three mutations make them wrong in a random way (dtypes,
shapes, byte sizes, header length, values out of range or non-finite, edges between graphs, missing,
unknown or duplicated tensors, junk request fields, broken compression). The property: no 5xx and no
dropped connection ever; an unmutated request is answered; every answer equals
:class:`GraphSession` on the request's own tensors (TEDDY applied only to raw graphs).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from gtcompress.preprocess import NumpyGraph
from gtcompress.preprocess.random_graphs import random_graph
from runtime.batcher import BatchConfig
from runtime.client import make_inputs
from runtime.protocol import HEADER_LENGTH, KNOWN_DATATYPES, decode_body, parse_infer_request
from runtime.served import RAW_INPUTS
from runtime.server import BackgroundServer, ServerLimits, create_app
from runtime.session import GraphSession
from runtime.spec import KSERVE_TO_NUMPY, NUMPY_TO_KSERVE

MODELS = {"gt_node": "node", "gt_graph": "graph", "gt_teddy": "teddy"}
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def sessions(exported) -> dict[str, GraphSession]:
    return {name: GraphSession(exported[key].path) for name, key in MODELS.items()}


@pytest.fixture(scope="module")
def http(sessions) -> Iterator[httpx.Client]:
    app = create_app(dict(sessions), BatchConfig(max_delay_ms=0), limits=ServerLimits(max_body_bytes=256 * 1024))
    with BackgroundServer(app) as srv, httpx.Client(base_url=f"http://{srv.url}", timeout=30) as client:
        yield client


# ------------------------------------------------------------------------------------------ requests
UNSET = object()


@dataclass
class Tensor:
    name: Any
    datatype: Any
    shape: Any
    array: np.ndarray
    binary: bool
    size_delta: int = 0  # added to the declared binary_data_size
    params: Any = UNSET  # replaces the tensor's "parameters" object


@dataclass
class Case:
    model: str
    tensors: list[Tensor]
    encoding: str
    graphs: int = 1  # in the unmutated request
    nodes: int = 0
    fields: dict[str, Any] = field(default_factory=dict)  # request-level: id, parameters, outputs
    header_delta: int = 0  # added to Inference-Header-Content-Length
    trailing: bytes = b""  # appended to the body before compression
    truncate: int = 0  # bytes cut from the compressed body
    mutations: list[str] = field(default_factory=list)


def _wire(arr: np.ndarray, datatype: Any) -> bytes:
    """``arr`` as the binary tensor extension carries a tensor of ``datatype`` (any bytes otherwise)."""
    with np.errstate(invalid="ignore", over="ignore"):
        if datatype == "BYTES":
            items = [str(v).encode() for v in arr.ravel()]
            return b"".join(struct.pack("<I", len(b)) + b for b in items)
        if datatype == "BF16":
            return (np.asarray(arr, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        if isinstance(datatype, str) and datatype in KSERVE_TO_NUMPY:
            return np.asarray(arr).astype(np.dtype(KSERVE_TO_NUMPY[datatype]).newbyteorder("<")).tobytes()
    return np.asarray(arr).tobytes()


def encode(case: Case) -> tuple[bytes, dict[str, str]]:
    """Body and headers of ``case`` as a client would send them."""
    entries, blobs = [], []
    for t in case.tensors:
        entry: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": t.shape}
        if t.binary:
            blob = _wire(t.array, t.datatype)
            entry["parameters"] = {"binary_data_size": len(blob) + t.size_delta}
            blobs.append(blob)
        else:
            entry["data"] = t.array.ravel().tolist()
        if t.params is not UNSET:
            entry["parameters"] = t.params
        entries.append(entry)
    head = json.dumps({"inputs": entries, **case.fields}).encode()
    headers = {}
    if blobs:
        headers[HEADER_LENGTH] = str(len(head) + case.header_delta)
    body = head + b"".join(blobs) + case.trailing
    if case.encoding != "identity":
        wbits = {"gzip": 31, "deflate": 15, "deflate-raw": -15}[case.encoding]
        c = zlib.compressobj(6, zlib.DEFLATED, wbits)
        body = c.compress(body) + c.flush()
        body = body[: len(body) - case.truncate]
        headers["Content-Encoding"] = case.encoding.split("-")[0]
    return body, headers


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
SPECIAL_INTS = [-1, 0, 1, 5, 7, 12, 2**31, 2**62, -(2**63)]
SPECIAL_FLOATS = [float("nan"), float("inf"), -float("inf"), 1e38, -0.0]


def _graphs(draw: st.DrawFn, spec: dict[str, Any]) -> list[NumpyGraph]:
    sizes = draw(st.lists(st.integers(1, 7), min_size=1, max_size=3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return [
        random_graph(rng, n, int(rng.integers(0, 2 * n + 1)), spec.x, spec.edge_attr, int(rng.integers(0, 2)))
        for n in sizes
    ]


def _tensors(draw: st.DrawFn, sess: GraphSession, graphs: list[NumpyGraph]) -> dict[str, np.ndarray]:
    form = draw(st.sampled_from(["raw", "batch", "node_counts", "both", "full"]))
    if form == "full":
        return make_inputs(graphs, sess.spec, teddy=sess.model.teddy)
    n = np.array([g.num_nodes for g in graphs])
    offsets = np.concatenate([[0], np.cumsum(n)[:-1]])
    out = {
        "x": np.concatenate([g.x for g in graphs]),
        "edge_index": np.concatenate([g.edge_index + o for g, o in zip(graphs, offsets, strict=True)], axis=1),
    }
    if sess.spec.edge_attr:
        out["edge_attr"] = np.concatenate([g.edge_attr for g in graphs])
    if form in ("batch", "both"):
        out["batch"] = np.repeat(np.arange(len(graphs), dtype=np.int64), n)
    if form in ("node_counts", "both"):
        out["node_counts"] = n.astype(np.int64)
    return out


def _mutate(draw: st.DrawFn, case: Case, kind: str) -> None:
    """Apply one mutation of ``kind`` to ``case`` and record it; where it does not apply, change nothing."""
    tensors = case.tensors
    i = draw(st.integers(0, len(tensors) - 1))
    t = tensors[i]
    if kind == "drop":
        del tensors[i]
    elif kind == "duplicate":
        tensors.append(replace(t))
    elif kind == "unknown":
        tensors.append(Tensor(draw(st.text(max_size=6)), "FP32", [1], np.zeros(1, np.float32), draw(st.booleans())))
    elif kind == "datatype":
        t.datatype = draw(st.sampled_from(sorted(KNOWN_DATATYPES)) | JSON_VALUES)
    elif kind == "shape":
        dims = st.integers(-2, 3) | st.integers(0, 2**64) | st.sampled_from(list(t.array.shape))
        t.shape = draw(st.lists(dims, max_size=4) | JSON_VALUES)
    elif kind == "size":  # fewer or more elements than the declared shape
        cut = draw(st.integers(0, t.array.size))
        t.array = np.concatenate([t.array.ravel()[:cut], t.array.ravel()[: draw(st.integers(0, 2))]])
    elif kind == "value" and t.array.size:
        special = SPECIAL_FLOATS if t.array.dtype.kind == "f" else SPECIAL_INTS
        flat = t.array.ravel().copy()
        with np.errstate(invalid="ignore", over="ignore"):
            flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from(special))
        t.array = flat.reshape(t.array.shape)
    elif (
        kind == "cross"
        and case.graphs > 1
        and (ei := _find(tensors, "edge_index"))
        and ei.array.ndim == 2  # a "size" mutation before this one may have flattened it
        and ei.array.shape[-1]
    ):
        ei.array = ei.array.copy()  # edge 0 from node 0 (first graph) to the last node (last graph)
        ei.array[:, 0] = [0, case.nodes - 1]
    elif kind == "binary_size" and t.binary:
        t.size_delta = draw(st.integers(-9, 9).filter(bool))
    elif kind == "header" and any(u.binary for u in tensors):
        case.header_delta = draw(st.integers(-40, 40).filter(bool))
    elif kind == "trailing":
        case.trailing = draw(st.binary(min_size=1, max_size=16))
    elif kind == "truncate" and case.encoding != "identity":
        case.truncate = draw(st.integers(1, 12))
    elif kind == "field":
        key = draw(st.sampled_from(["id", "parameters", "outputs", "tensor-parameters"]))
        value = draw(JSON_VALUES | st.sampled_from([[{"name": "output", "parameters": {"binary_data": True}}], []]))
        if key == "tensor-parameters":
            t.params = value
        else:
            case.fields[key] = value
    else:
        return
    case.mutations.append(kind)


def _find(tensors: list[Tensor], name: str) -> Tensor | None:
    return next((t for t in tensors if t.name == name), None)


MUTATIONS = [
    "drop",
    "duplicate",
    "unknown",
    "datatype",
    "shape",
    "size",
    "value",
    "cross",
    "binary_size",
    "header",
    "trailing",
    "truncate",
    "field",
]


@st.composite
def cases(draw: st.DrawFn, sessions: dict[str, GraphSession]) -> Case:
    model = draw(st.sampled_from(sorted(MODELS)))
    sess = sessions[model]
    graphs = _graphs(draw, sess.spec)
    inputs = _tensors(draw, sess, graphs)
    dtypes = {t.name: NUMPY_TO_KSERVE[t.dtype] for t in sess.get_inputs()}
    tensors = [Tensor(n, dtypes[n], list(a.shape), a, draw(st.booleans())) for n, a in inputs.items()]
    encoding = draw(st.sampled_from(["identity", "identity", "gzip", "deflate", "deflate-raw"]))
    case = Case(model, tensors, encoding, graphs=len(graphs), nodes=sum(g.num_nodes for g in graphs))
    for kind in draw(st.lists(st.sampled_from(MUTATIONS), max_size=3)):
        if case.tensors:
            _mutate(draw, case, kind)
    return case


# ------------------------------------------------------------------------------------------ oracle
def reference(sess: GraphSession, body: bytes, headers: dict[str, str]) -> np.ndarray:
    """What the request means, computed without the server: its tensors as one graph (union) run
    by the session, TEDDY only when it is raw. Raises if the request should have been refused."""
    req = parse_infer_request(decode_body(body, headers.get("Content-Encoding")), headers.get(HEADER_LENGTH))
    inputs = req.inputs
    want = {t.name: NUMPY_TO_KSERVE[t.dtype] for t in sess.get_inputs()}
    assert all(req.datatypes[n] == want[n] for n in inputs), "accepted a datatype the model does not take"
    full = set(inputs) == set(want)
    assert full or set(inputs) <= set(RAW_INPUTS), "accepted an incomplete pre-processed set"
    batch = inputs.get("batch")
    if batch is None and "node_counts" in inputs:
        counts = inputs["node_counts"]
        batch = np.repeat(np.arange(counts.shape[0], dtype=np.int64), counts)
    pe = {k[3:]: v for k, v in inputs.items() if k.startswith("pe_")}
    g = NumpyGraph(inputs["x"], inputs["edge_index"], inputs.get("edge_attr"), batch, pe)
    return sess.run_prepared(sess.prepare([g], teddy=not full))[0]


def _outputs(r: httpx.Response) -> list[tuple[str, np.ndarray]]:
    """The response's outputs (JSON or binary) as (name, array)."""
    jl = r.headers.get(HEADER_LENGTH)
    head = json.loads(r.content if jl is None else r.content[: int(jl)])
    out, pos = [], 0 if jl is None else int(jl)
    for o in head["outputs"]:
        if "data" in o:
            arr = np.asarray(o["data"], np.float32)
        else:
            size = o["parameters"]["binary_data_size"]
            arr, pos = np.frombuffer(r.content[pos : pos + size], "<f4"), pos + size
        out.append((o["name"], arr.reshape(o["shape"])))
    return out


@FUZZ
@given(data=st.data())
def test_every_request_gets_a_4xx_or_the_right_answer(http, sessions, data) -> None:
    case = data.draw(cases(sessions))
    body, headers = encode(case)
    note(f"{case.model} {case.encoding} mutations={case.mutations} headers={headers} body={body[:600]!r}")
    r = http.post(f"/v2/models/{case.model}/infer", content=body, headers=headers)
    note(f"-> {r.status_code} {r.content[:300]!r}")
    event(f"{'+'.join(sorted(set(case.mutations))) or 'unmutated'} -> {r.status_code}")  # --hypothesis-show-statistics
    assert r.status_code == 200 or 400 <= r.status_code < 500
    if not case.mutations:
        assert r.status_code == 200, "a well-formed request was refused"
    if r.status_code == 200:
        want = reference(sessions[case.model], body, headers)
        asked = case.fields.get("outputs")
        # an accepted list names outputs; none, or an empty one (as Triton reads it), asks for every output
        names = [o["name"] for o in asked] if asked else ["output"]
        got = _outputs(r)
        assert [name for name, _ in got] == names
        for _, arr in got:
            np.testing.assert_allclose(arr, want, atol=1e-4, rtol=1e-4)
    else:
        assert set(r.json()) == {"error"} and r.json()["error"]


@FUZZ
@given(
    model=st.sampled_from(sorted(MODELS)),
    body=st.binary(max_size=200) | JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    header=st.none() | st.integers(-5, 300).map(str) | st.text(max_size=4),
    encoding=st.none() | st.sampled_from(["gzip", "deflate", "identity", "br", ""]),
)
def test_arbitrary_bodies_and_headers_get_a_4xx(http, model, body, header, encoding) -> None:
    headers = {}
    if header is not None and header.isascii() and header.isprintable():
        headers[HEADER_LENGTH] = header.strip() or "0"
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    r = http.post(f"/v2/models/{model}/infer", content=body, headers=headers)
    assert 400 <= r.status_code < 500, r.text
    assert set(r.json()) == {"error"}
