"""KServe v2 codec against what tritonclient itself sends and expects (binary and JSON)."""

from __future__ import annotations

import gzip
import json
import sys

import numpy as np
import pytest
from tritonclient.http import InferInput, InferRequestedOutput, InferResult
from tritonclient.http._utils import _get_inference_request

from runtime.errors import ProtocolError
from runtime.protocol import HEADER_LENGTH, decode_body, encode_infer_response, parse_infer_request

ARRAYS = {
    "x": np.arange(12, dtype=np.float32).reshape(4, 3),
    "edge_index": np.array([[0, 1, 2], [1, 2, 3]], dtype=np.int64),
    "pad_mask": np.array([[True, False, True]]),
    "empty": np.zeros((2, 0), dtype=np.int64),
}
DTYPES = {"x": "FP32", "edge_index": "INT64", "pad_mask": "BOOL", "empty": "INT64"}


def _request(binary: bool, outputs: list | None = None) -> tuple[bytes, int | None]:
    inputs = []
    for name, arr in ARRAYS.items():
        t = InferInput(name, list(arr.shape), DTYPES[name])
        t.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(t)
    return _get_inference_request(inputs, "req-1", outputs, 0, False, False, 0, None, None)


@pytest.mark.parametrize("binary", [True, False])
def test_parse_what_tritonclient_sends(binary: bool) -> None:
    body, json_size = _request(binary)
    assert (json_size is not None) == binary
    req = parse_infer_request(body, None if json_size is None else str(json_size))
    assert req.id == "req-1"
    for name, arr in ARRAYS.items():
        np.testing.assert_array_equal(req.inputs[name], arr)
        assert req.inputs[name].dtype == arr.dtype and req.datatypes[name] == DTYPES[name]
    assert req.outputs is None and req.binary_output  # tritonclient asks for binary outputs by default


@pytest.mark.parametrize("binary", [True, False])
def test_response_decodes_in_tritonclient(binary: bool) -> None:
    body, json_size = _request(True, [InferRequestedOutput("output", binary_data=binary)])
    req = parse_infer_request(body, str(json_size))
    assert req.wants_binary("output") is binary
    out = np.linspace(0, 1, 10, dtype=np.float32).reshape(5, 2)
    payload, headers = encode_infer_response("m", "1", req.id, [("output", out, req.wants_binary("output"))])
    assert (HEADER_LENGTH in headers) == binary
    header_length = int(headers[HEADER_LENGTH]) if HEADER_LENGTH in headers else None
    result = InferResult.from_response_body(payload, header_length=header_length)
    np.testing.assert_array_equal(result.as_numpy("output"), out)
    assert result.get_response()["id"] == "req-1"


def test_non_finite_json_outputs_reach_tritonclient_as_they_are() -> None:
    """orjson writes NaN and ±Infinity as null: in JSON mode tritonclient read +inf and -inf as nan,
    and other JSON clients got None. They are now written as the literals NaN/Infinity, which
    tritonclient's reader (and this server's request parser) take."""
    out = np.array([[np.nan, np.inf], [-np.inf, 1.5]], dtype=np.float32)
    payload, headers = encode_infer_response("m", "1", "r", [("output", out, False)])
    assert HEADER_LENGTH not in headers
    assert json.loads(payload)["outputs"][0]["data"][1] == float("inf")
    result = InferResult.from_response_body(payload)
    np.testing.assert_array_equal(result.as_numpy("output"), out)
    payload, _ = encode_infer_response("m", "1", None, [("output", out[1:, 1:], False)])  # finite: unchanged
    assert json.loads(payload)["outputs"][0]["data"] == [1.5] and b" " not in payload  # orjson's, compact


def test_gzip_and_bad_encodings() -> None:
    body, _ = _request(True)
    assert decode_body(gzip.compress(body), "gzip") == body
    with pytest.raises(ProtocolError, match="Content-Encoding"):
        decode_body(body, "br")
    with pytest.raises(ProtocolError, match="not valid gzip"):
        decode_body(body, "gzip")


ONE_INPUT = {"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.pop("inputs"), "non-empty 'inputs'"),
        (lambda r: r["inputs"][0].update(datatype="FP128"), "unknown datatype"),
        (lambda r: r["inputs"][0].update(shape=[4, "3"]), "list of integers"),
        (lambda r: r["inputs"][0].update(shape=[-4, 3]), "negative dimension"),
        (lambda r: r["inputs"][0].update(data=[1, 2]), "has 2 elements"),
        (lambda r: r["inputs"][1].update(data=[[0.5, 1, 2], [1, 2, 3]]), "needs integers"),
        (lambda r: r["inputs"][0].update(data=["a"] * 12), "must hold numbers"),
        (lambda r: r["inputs"][1].update(name="x"), "appears twice"),
        (lambda r: r["inputs"][0].pop("data"), "neither 'data' nor"),
        (lambda r: r.update(outputs=[{"name": "output", "parameters": {"classification": 2}}]), "classification"),
    ],
)
def test_json_request_errors(mutate, message: str) -> None:
    body, _ = _request(False)
    req = json.loads(body)
    mutate(req)
    with pytest.raises(ProtocolError, match=message):
        parse_infer_request(json.dumps(req).encode())


def test_binary_request_errors() -> None:
    body, json_size = _request(True)
    for bad in ("abc", "1_0", " 10", "+10", "١٠"):  # int() reads all but the first
        with pytest.raises(ProtocolError) as info:
            parse_infer_request(body, bad)
        assert str(info.value) == f"Inference-Header-Content-Length must be an integer, got {bad!r}"
    with pytest.raises(ProtocolError, match="after the declared inputs"):
        parse_infer_request(body + b"\0\0", str(json_size))
    with pytest.raises(ProtocolError, match="runs past"):
        parse_infer_request(body[:-4], str(json_size))
    with pytest.raises(ProtocolError, match="Inference-Header-Content-Length"):
        parse_infer_request(body)  # binary body without the header
    head = json.loads(body[:json_size])
    head["inputs"][0]["parameters"]["binary_data_size"] -= 4
    head["inputs"][1]["parameters"]["binary_data_size"] += 4
    new_head = json.dumps(head).encode()
    with pytest.raises(ProtocolError, match="needs 48"):
        parse_infer_request(new_head + body[json_size:], str(len(new_head)))


def test_an_input_with_both_data_and_binary_bytes_is_refused() -> None:
    """An input carrying JSON 'data' and a binary_data_size was answered from its binary bytes, the
    'data' ignored: a client whose two copies disagree got an answer to values it may not have meant.
    Triton refuses such an input with a 400; so does this server."""
    body, json_size = _request(True)
    head = json.loads(body[:json_size])
    head["inputs"][1]["data"] = [9, 9, 9, 9, 9, 9]  # edge_index: the binary bytes say [[0, 1, 2], [1, 2, 3]]
    new_head = json.dumps(head).encode()
    with pytest.raises(ProtocolError) as info:
        parse_infer_request(new_head + body[json_size:], str(len(new_head)))
    assert str(info.value) == (
        "input 'edge_index': gives both 'data' and parameters.binary_data_size; send its values one way only"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"inputs": [{"name": "x", "datatype": ["FP32"], "shape": [1], "data": [1.0]}]},
            "input 'x': unknown datatype ['FP32']",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "INT64", "shape": [0, 2**63], "data": []}]},
            "input 'x': dimension 1 of 'shape' is larger than 2**63-1 (9223372036854775807)",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "INT64", "shape": [0, 2**62, 2], "data": []}]},
            f"input 'x': shape [0, {2**62}, 2] is not a valid array shape",
        ),
        (b"[" * 100_000, "request JSON is nested too deeply"),
    ],
)
def test_hostile_requests_are_protocol_errors_not_crashes(body, message: str) -> None:
    """Found by tests/runtime/test_protocol_fuzz.py: each raised TypeError, ValueError or RecursionError (a 500)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(ProtocolError) as info:
        parse_infer_request(raw)
    assert str(info.value) == message


def test_decode_body_with_a_limit() -> None:
    from runtime.errors import BodyTooLargeError

    packed = gzip.compress(b" " * 1000)
    assert decode_body(packed, "gzip", limit=1000) == b" " * 1000
    with pytest.raises(BodyTooLargeError) as info:
        decode_body(packed, "gzip", limit=999)
    assert str(info.value) == (
        "request body exceeds this server's limit of 999 bytes (max_body_bytes) once decoded; Content-Encoding: gzip"
    )


# ------------------------------------------------------------------ found by the runtime audit
def _one(**tensor: object) -> bytes:
    return json.dumps({"inputs": [{"name": "x", "datatype": "INT64", "shape": [3, 2], **tensor}]}).encode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (  # json's reader raised ValueError (int max str digits) past the JSONDecodeError handler: a 500
            b'{"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [' + b"1" * 5000 + b"]}]}",
            "request JSON is malformed: a number has more than 4300 digits",
        ),
        (  # the element count, a bignum of 5400 digits, could not even be formatted into the error: a 500
            json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [10**18] * 300, "data": []}]}).encode(),
            "input 'x': 'shape' has 300 dimensions, more than the 32 allowed",
        ),
        (
            json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1] * 33, "data": [1.0]}]}).encode(),
            "input 'x': 'shape' has 33 dimensions, more than the 32 allowed",
        ),
        (  # refused before any product is taken, with no 4000-digit number in the message
            json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [10**4000, 0], "data": []}]}).encode(),
            "input 'x': dimension 0 of 'shape' is larger than 2**63-1 (9223372036854775807)",
        ),
        (  # counted to 2**120 before; now bounded to int64 as numpy's own shapes are
            json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2**40] * 3, "data": []}]}).encode(),
            f"input 'x': shape {[2**40] * 3} is not a valid array shape",
        ),
        (_one(data=[[0, 1, 2], [3, 4, 5]]), "input 'x': nested 'data' has shape [2, 3] but 'shape' is [3, 2]; "
         "nest it as the shape or send it flat"),
        (_one(data=[[True, False]] * 3), "input 'x': datatype INT64 needs numbers in 'data', got true/false"),
        (_one(data=[[1, 2], [3, True], [5, 6]]), "input 'x': datatype INT64 needs numbers in 'data', got true/false"),
        (
            json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [0.5, False]}]}).encode(),
            "input 'x': datatype FP32 needs numbers in 'data', got true/false",
        ),
        (_one(data=[2**64 - 1, 0, 0, 0, 0, 0]), "input 'x': a value does not fit INT64"),  # was read as -1
        (_one(data=[2**63] + [0] * 5), "input 'x': a value does not fit INT64"),  # was "non-integers"
        (_one(data=[2**64 - 1] * 6), "input 'x': a value does not fit INT64"),  # a uint64 array
        (
            json.dumps({"inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": [2**31]}]}).encode(),
            "input 'x': a value does not fit INT32",
        ),
        # orjson read integers past 64 bits as floats: "non-integers" / "must hold numbers" before
        (_one(data=[2**64] + [0] * 5), "input 'x': a value does not fit INT64"),
        (_one(data=[-(2**63) - 1] + [0] * 5), "input 'x': a value does not fit INT64"),
        (_one(data=[[10**29, 0]] + [[0, 0]] * 2), "input 'x': a value does not fit INT64"),
        (
            json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [10**400]}]}).encode(),
            "input 'x': a value does not fit FP32",
        ),
        (  # became inf silently
            json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1.0, 1e39]}]}).encode(),
            "input 'x': a value does not fit FP32",
        ),
        (
            json.dumps({"inputs": [{"name": "x", "datatype": "FP16", "shape": [1], "data": [70000]}]}).encode(),
            "input 'x': a value does not fit FP16",
        ),
        (
            json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}],
                        "parameters": {"binary_data_output": "false"}}).encode(),
            "request parameter 'binary_data_output' must be true or false, got 'false'",
        ),
        (
            json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}],
                        "outputs": [{"name": "output", "parameters": {"binary_data": 1}}]}).encode(),
            "output 'output': parameter 'binary_data' must be true or false, got 1",
        ),
        (  # echoed back as the Python repr of the object
            json.dumps({"id": {"a": 1}, "inputs": [ONE_INPUT]}).encode(),
            "request 'id' must be a string, got an object",
        ),
        (  # 0, "" or [] were read as no parameters
            json.dumps({"parameters": 0, "inputs": [ONE_INPUT]}).encode(),
            "request 'parameters' must be an object, got a number",
        ),
        (
            json.dumps({"inputs": [{**ONE_INPUT, "parameters": []}]}).encode(),
            "input 'x': 'parameters' must be an object, got a list",
        ),
        (  # the output came back twice
            json.dumps({"inputs": [ONE_INPUT], "outputs": [{"name": "output"}, {"name": "output"}]}).encode(),
            "output 'output' is requested twice",
        ),
        (  # JSON's escape of a lone surrogate: no UTF-8 response could echo the id (orjson raised: a 500)
            json.dumps({"id": "a\udc80", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]})
            .encode(),
            "request 'id' is not valid Unicode (it holds a lone surrogate escape): 'a\\udc80'",
        ),
    ],
)  # fmt: skip
def test_audit_requests_are_protocol_errors(body: bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_infer_request(body)
    assert str(info.value) == message


def test_json_data_flat_or_nested_as_the_shape() -> None:
    for data in ([0, 1, 2, 3, 4, 5], [[0, 1], [2, 3], [4, 5]]):
        req = parse_infer_request(_one(data=data))
        np.testing.assert_array_equal(req.inputs["x"], np.arange(6).reshape(3, 2))
    body = json.dumps({"inputs": [{"name": "m", "datatype": "BOOL", "shape": [1, 2], "data": [[True, False]]}]})
    req = parse_infer_request(body.encode())
    np.testing.assert_array_equal(req.inputs["m"], [[True, False]])
    assert parse_infer_request(_one(data=list(range(6)))).binary_output is False


def test_integers_past_64_bits_stay_exact() -> None:
    """orjson turns integers past int64/uint64 into floats without a word: a request id of 10**29
    came back as "1e+29". Such bodies are read by json, which keeps them exact."""
    body = {"id": 10**29, "inputs": [{"name": "x", "datatype": "FP64", "shape": [2], "data": [-(2**63) - 1, 2**70]}]}
    req = parse_infer_request(json.dumps(body).encode())
    assert req.id == "100000000000000000000000000000"
    np.testing.assert_array_equal(req.inputs["x"], [-(2.0**63), 2.0**70])
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [float("inf"), float("nan"), 3e38]}]}
    np.testing.assert_array_equal(
        parse_infer_request(json.dumps(body).encode()).inputs["x"], np.array([np.inf, np.nan, 3e38], np.float32)
    )


def _bytes_body(count: int, name: str = "x") -> tuple[bytes, str]:
    entry = {"name": name, "datatype": "BYTES", "shape": [count], "parameters": {"binary_data_size": 6 * count}}
    head = json.dumps({"inputs": [entry]}).encode()
    return head + b"\x02\x00\x00\x00ab" * count, str(len(head))


def test_bytes_and_unknown_inputs_are_refused_before_their_data_is_decoded() -> None:
    """BYTES used to be decoded into one Python object per element before the model's inputs were
    checked: an 11 MB body cost the server 120 MB. Now refused with nothing decoded."""
    import tracemalloc

    body, hl = _bytes_body(200_000)
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError) as info:
            parse_infer_request(body, hl)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(info.value) == "input 'x': datatype BYTES is not supported by this server"
    assert peak < 256 * 1024  # decoding the elements took 10+ MB

    seen: list[tuple[str, str]] = []

    def check(name: str, datatype: str) -> None:
        seen.append((name, datatype))
        if name != "x":
            raise ProtocolError(f"input '{name}' is not an input of the model")

    body, hl = _bytes_body(3, name="y")
    with pytest.raises(ProtocolError) as info:
        parse_infer_request(body[:-1], hl, check)  # its data is broken too: never looked at
    assert (str(info.value), seen) == ("input 'y' is not an input of the model", [("y", "BYTES")])


def _traced_events(fn) -> int:  # type: ignore[no-untyped-def]
    """Python trace events (calls, lines, returns) ``fn()`` runs: a count of work, not a timing."""
    count = 0

    def tracer(frame, event, arg):  # type: ignore[no-untyped-def]
        nonlocal count
        count += 1
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(previous)
    return count


def test_the_outputs_list_is_read_in_linear_work() -> None:
    """Each requested output was checked against every one before it (``any(...)`` over the list):
    40,000 output names, a 692 KiB body, took 47 s of the server's CPU before the names were found
    unknown, and 4,000 of them (64 KiB, decoded on the event loop) stalled every connection for 0.5 s."""

    def parse(n: int) -> None:
        outputs = [{"name": f"o{i}"} for i in range(n)]
        body = json.dumps(
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}], "outputs": outputs}
        )
        assert len(parse_infer_request(body.encode()).outputs or []) == n

    small, large = _traced_events(lambda: parse(500)), _traced_events(lambda: parse(2000))
    assert large < 5 * small  # 4x the outputs: 4x the work (it was 16x)


@pytest.mark.parametrize("header_length", [None, "0"])
def test_an_empty_body_is_named_as_empty_not_as_malformed_json(header_length: str | None) -> None:
    """A POST without Content-Length or chunking has an empty body by HTTP's rules; the refusal said
    "request JSON is malformed: Expecting value: line 1 column 1 (char 0)", which sent the user to
    look at JSON they had sent."""
    with pytest.raises(ProtocolError) as e:
        parse_infer_request(b"", header_length)
    assert str(e.value) == (
        "request body is empty: an infer request is a JSON object with an 'inputs' list, sent with a "
        "Content-Length header or chunked"
    )
