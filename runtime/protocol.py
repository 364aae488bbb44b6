"""KServe v2 / Open Inference Protocol HTTP codec, with Triton's binary tensor data extension.

Request body: a JSON object, optionally followed by raw tensor bytes. With binary data the HTTP
header ``Inference-Header-Content-Length`` gives the JSON's byte length; every binary input carries
``"parameters": {"binary_data_size": n}`` and its bytes follow in input order, little-endian,
row-major, BOOL one byte per element. An input without that parameter carries ``"data"``: flat
row-major, or nested exactly as its ``shape``; one with both is refused, as Triton refuses it.
BYTES and BF16 are refused before their data is read (no exported model takes them, and BYTES would
cost a Python object per element).

Response: outputs are binary when the request's output entry asks ``"binary_data": true`` or the
request parameters say ``"binary_data_output": true`` (what ``tritonclient.http`` sends by
default); the response then carries ``Inference-Header-Content-Length`` too. A JSON output holding
NaN or ±inf writes them as the literals ``NaN``/``Infinity`` (what the request parser and
tritonclient read), not as ``null``. Errors are
``{"error": "<message>"}`` with a 4xx/5xx status — what tritonclient turns into an exception.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

from runtime.body import BodyDecoder
from runtime.errors import ProtocolError
from runtime.spec import KSERVE_TO_NUMPY, NUMPY_TO_KSERVE

#: A run of 19 or more digits may be an integer past int64/uint64, which orjson reads as a float
#: without a word (an id of 10**29 would come back as "1e+29", an INT64 value of 2**64 would read
#: as "not an integer"); such bodies go to json, which keeps integers exact.
_LONG_DIGITS = re.compile(rb"\d{19,}")

try:  # about 3x faster than json for request headers; json stays the reference (and the fallback)
    import orjson

    def _loads(data: bytes) -> Any:
        if _LONG_DIGITS.search(data):
            return json.loads(data)
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:  # NaN/Infinity, >64-bit integers...: json's reading and messages
            return json.loads(data)

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

except ImportError:  # pragma: no cover - orjson is optional

    def _loads(data: bytes) -> Any:
        return json.loads(data)

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()


HEADER_LENGTH = "Inference-Header-Content-Length"
#: Request parameter (a boolean) by which a request says it is a pre-processed input set (true) or a
#: raw graph (false), where the inputs alone cannot tell (:func:`runtime.served.is_preprocessed`).
PREPROCESSED_PARAMETER = "gtcompress_preprocessed"
KNOWN_DATATYPES = frozenset((*KSERVE_TO_NUMPY, "BYTES", "BF16"))
#: numpy's most dimensions (NPY_MAXDIMS of numpy 1.x): a longer shape is refused before any arithmetic
#: on it, since the product of 100,000 large dimensions takes seconds and holds the GIL.
MAX_DIMS = 32
INT64_MAX = 2**63 - 1
#: Called with each input's name and datatype before its data is decoded (the server checks them
#: against the model there, so a tensor the model cannot take costs nothing to refuse).
InputCheck = Callable[[str, str], None]
_WIRE_DTYPES = {k: np.dtype(v).newbyteorder("<") for k, v in KSERVE_TO_NUMPY.items()}  # little-endian on the wire


@dataclass
class RequestedOutput:
    name: str
    binary: bool


@dataclass
class InferRequest:
    """A decoded inference request: named numpy inputs (in request order) and output wishes."""

    inputs: dict[str, np.ndarray]
    datatypes: dict[str, str]
    id: str | None = None
    outputs: list[RequestedOutput] | None = None  # None: every output
    binary_output: bool = False  # request parameter binary_data_output
    parameters: dict[str, Any] = field(default_factory=dict)

    def wants_binary(self, name: str) -> bool:
        if self.outputs is not None:
            for o in self.outputs:
                if o.name == name:
                    return o.binary
        return self.binary_output


def decode_body(body: bytes, content_encoding: str | None, limit: int | None = None) -> bytearray:
    """A whole body decoded per its ``Content-Encoding`` (identity, gzip, deflate); with ``limit``,
    :class:`runtime.errors.BodyTooLargeError` past it. The server streams instead (:mod:`runtime.body`)."""
    decoder = BodyDecoder(content_encoding, sys.maxsize if limit is None else limit)
    decoder.feed(body)
    return decoder.finish()


#: What parsing a request's JSON holds at its peak beyond the body itself, counted from its text
#: (:func:`json_parse_bytes`). Measured peak RSS growth of :func:`parse_infer_request` (orjson; json
#: where it falls back), bytes per value: a number 52-65 beyond its text (a Python float and its list
#: slot, orjson's document node, the float64 array ``np.asarray`` makes, the target array), 24 for
#: small integers (cached), 75-84 for 18-19 digit integers; a string in a list 88 (its object), a
#: one-element list nested in another 150 (``[[0.5], ...]``), an object ``{"a":1}`` 249; a long string
#: twice its text (orjson copies the text, and the string object holds it again). Each text byte is
#: counted twice and a sixteenth (three times with ``Inference-Header-Content-Length``, whose head is
#: sliced off as a copy), each ``,`` as a value, each ``[``, ``{`` and ``"`` for the list, object and
#: string it opens or closes: every case measured took 0.3-0.97 of its charge (flat floats 0.77, one
#: long string 0.97), so a 2 GiB budget lets about 190 MiB of JSON floats be parsed at once.
JSON_TEXT_FACTOR = 2
JSON_VALUE_BYTES = 56
JSON_LIST_BYTES = 112
JSON_OBJECT_BYTES = 192
JSON_QUOTE_BYTES = 24
_CHARGED_CHARS = (
    (ord(","), JSON_VALUE_BYTES),
    (ord("["), JSON_LIST_BYTES),
    (ord("{"), JSON_OBJECT_BYTES),
    (ord('"'), JSON_QUOTE_BYTES),
)
_COUNT_STEP = 1 << 20


def json_head_length(body: bytes | bytearray, header_length: str | None) -> int:
    """Bytes of ``body`` that :func:`parse_infer_request` reads as JSON: all of it, the
    ``Inference-Header-Content-Length`` prefix, or none where that header is unusable (not digits, 0,
    past the body): the request is refused then before any JSON is read, so parsing takes nothing.
    Counting the whole body as JSON there turned that 400 naming the header into a 413 telling a
    client that sends binary tensor data to send binary tensor data (or a 503 while others held the
    budget)."""
    try:
        return _head_length(body, header_length)
    except ProtocolError:
        return 0


def _head_length(body: bytes | bytearray, header_length: str | None) -> int:
    """Bytes of ``body`` that are JSON: all of it without ``Inference-Header-Content-Length``, else the
    prefix it names, checked (:class:`ProtocolError` for one not digits, 0 or past the body)."""
    if header_length is None:
        return len(body)
    if not (header_length.isascii() and header_length.isdigit()):  # int() also reads "1_0", " 10", "+10"
        raise ProtocolError(f"{HEADER_LENGTH} must be an integer, got {header_length!r}")
    hl = int(header_length)
    if not 0 < hl <= len(body):
        raise ProtocolError(f"{HEADER_LENGTH} is {hl} but the body has {len(body)} bytes")
    return hl


def json_parse_bytes(body: bytes | bytearray, header_length: str | None = None) -> int:
    """Memory that :func:`parse_infer_request` may hold at its peak beyond ``body``, read off the JSON
    text in four vectorised scans (under 1 ms a MiB, a MiB of scratch), so the server can hold it to its
    in-flight budget before parsing. Charging the body alone let a 92 MiB JSON body of floats take
    642 MiB while parsed: the 2 GiB default could mean 14 GiB at once. Binary tensor data costs
    nothing here: its arrays view the body."""
    head = json_head_length(body, header_length)
    factor = JSON_TEXT_FACTOR + (header_length is not None)  # body[:hl] copies the head
    total = factor * head + head // 16  # page and allocator rounding of the copies (one long string: 2.00x)
    text = np.frombuffer(body, dtype=np.uint8, count=head)  # a view; numpy counts 5x faster than bytes.count
    for start in range(0, head, _COUNT_STEP):  # a step at a time: each comparison's mask is a step long
        step = text[start : start + _COUNT_STEP]
        for char, cost in _CHARGED_CHARS:
            total += cost * int(np.count_nonzero(step == char))
    return total


def tensor_bytes(req: InferRequest) -> int:
    """Bytes of ``req``'s input arrays that are their own: JSON ``data`` decoded, BOOL binary data made
    true/false; binary data otherwise views the body and costs nothing more."""
    total = 0
    for arr in req.inputs.values():
        owner = arr
        while isinstance(owner.base, np.ndarray):
            owner = owner.base
        if owner.base is None:
            total += arr.nbytes
    return total


def _element_count(shape: Any, name: str) -> int:
    """The element count of a declared shape, checked before any arithmetic: at most :data:`MAX_DIMS`
    non-negative integer dimensions, each and their product (zeros aside, as numpy counts) within
    int64. Unchecked, a huge dimension made a bignum whose formatting raised (a 500), and a long
    shape stalled the whole server in ``math.prod``."""
    if type(shape) is not list:
        raise ProtocolError(f"input '{name}': 'shape' must be a list of integers, got {shape!r:.200}")
    if len(shape) > MAX_DIMS:
        raise ProtocolError(f"input '{name}': 'shape' has {len(shape)} dimensions, more than the {MAX_DIMS} allowed")
    for i, d in enumerate(shape):
        if type(d) is not int:  # bool is no int here
            raise ProtocolError(f"input '{name}': 'shape' must be a list of integers, got {shape!r:.200}")
        if d < 0:
            raise ProtocolError(f"input '{name}': negative dimension in shape {shape}")
        if d > INT64_MAX:
            raise ProtocolError(f"input '{name}': dimension {i} of 'shape' is larger than 2**63-1 ({INT64_MAX})")
    count, nonzero = 1, 1
    for d in shape:
        count *= d
        nonzero *= d or 1
        if nonzero > INT64_MAX:  # at most 32 factors below 2**63 each: cheap, and refused at once
            raise ProtocolError(f"input '{name}': shape {shape} is not a valid array shape")
    return count


def _leaf_types(data: Any, ndim: int) -> set[type]:
    """The Python types of a rectangular JSON ``data`` array's numbers (``ndim`` levels deep), which
    numpy's dtype hides: true/false next to numbers become 1/0, and integers past int64 make a float
    array. Level by level, in C loops."""
    if not ndim:
        return {type(data)}
    items = data
    for _ in range(ndim - 1):
        items = list(chain.from_iterable(items))
    return set(map(type, items))


def _json_data(data: Any, datatype: str, shape: list[int], count: int, name: str) -> np.ndarray:
    """JSON ``data`` as a flat array of ``datatype``: numbers only (true/false only for BOOL, never
    numpy's silent 1/0), within the datatype's range (never wrapped), flat or nested exactly as ``shape``."""
    target = np.dtype(KSERVE_TO_NUMPY[datatype])
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError) as e:
        raise ProtocolError(f"input '{name}': 'data' is not a rectangular array of numbers ({e})") from None
    if arr.size and arr.dtype.kind == "O" and _leaf_types(data, arr.ndim) <= {int, float}:  # ints past uint64
        if target.kind != "f":
            raise ProtocolError(f"input '{name}': a value does not fit {datatype}")
        try:
            arr = np.asarray(data, dtype=np.float64)
        except OverflowError:
            raise ProtocolError(f"input '{name}': a value does not fit {datatype}") from None
    if arr.size and arr.dtype.kind not in "biuf":
        raise ProtocolError(f"input '{name}': 'data' must hold numbers (or true/false for BOOL)")
    if arr.size and target.kind == "b" and arr.dtype.kind != "b":
        raise ProtocolError(f"input '{name}': datatype BOOL needs true/false in 'data'")
    if arr.size and target.kind != "b":
        leaves = _leaf_types(data, arr.ndim)
        if bool in leaves:
            raise ProtocolError(f"input '{name}': datatype {datatype} needs numbers in 'data', got true/false")
        if target.kind in "iu" and arr.dtype.kind == "f":
            if float in leaves:
                raise ProtocolError(f"input '{name}': datatype {datatype} needs integers in 'data', got non-integers")
            raise ProtocolError(f"input '{name}': a value does not fit {datatype}")  # ints past int64 and uint64
    if arr.ndim > 1 and list(arr.shape) != shape:  # nested: a 3x2 array is no [2, 3] tensor
        raise ProtocolError(
            f"input '{name}': nested 'data' has shape {list(arr.shape)} but 'shape' is {shape}; "
            "nest it as the shape or send it flat"
        )
    if arr.size != count:
        raise ProtocolError(f"input '{name}': 'data' has {arr.size} elements but shape needs {count}")
    if arr.size and arr.dtype.kind in "iu" and target.kind in "iu":  # astype would wrap 2**64-1 to -1 silently
        info = np.iinfo(target)
        if int(arr.min()) < info.min or int(arr.max()) > info.max:  # Python ints: exact at 2**63
            raise ProtocolError(f"input '{name}': a value does not fit {datatype}")
    try:
        with np.errstate(over="ignore"):
            out = arr.astype(target, copy=False).reshape(-1)
    except OverflowError:
        raise ProtocolError(f"input '{name}': a value does not fit {datatype}") from None
    if target.kind == "f" and (np.isinf(out) & np.isfinite(arr.reshape(-1))).any():  # 1e39 as FP32; Infinity stays
        raise ProtocolError(f"input '{name}': a value does not fit {datatype}")
    return out


def _flag(value: Any, what: str) -> bool:
    """A JSON boolean parameter: ``bool("false")`` is True, so anything but true/false is refused."""
    if type(value) is not bool:
        raise ProtocolError(f"{what} must be true or false, got {value!r:.80}")
    return value


def parse_infer_request(
    body: bytes | bytearray, header_length: str | None = None, check: InputCheck | None = None
) -> InferRequest:
    """Decode a (decompressed) request body; every problem is a :class:`ProtocolError` naming its input.

    ``check`` sees each input's name and datatype before its data is decoded (see :data:`InputCheck`)."""
    if not len(body):  # a POST with neither Content-Length nor chunking has none, by HTTP's rules
        raise ProtocolError(
            "request body is empty: an infer request is a JSON object with an 'inputs' list, sent with a "
            "Content-Length header or chunked"
        )
    hl = _head_length(body, header_length)
    if header_length is not None:
        head, binary = body[:hl], memoryview(body)[hl:]
    else:
        head, binary = body, memoryview(b"")
    try:
        req = _loads(head)
    except RecursionError:  # json's reader recurses per nesting level (orjson stops at 1024 and defers to it)
        raise ProtocolError("request JSON is nested too deeply") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:  # before ValueError: both are ValueErrors
        hint = (
            ""
            if header_length is not None or b"binary_data_size" not in body[:4096]
            else (f" (binary tensor data needs the {HEADER_LENGTH} header)")
        )
        raise ProtocolError(f"request JSON is malformed: {e}{hint}") from None
    except ValueError:  # json's reader refuses integers past sys.get_int_max_str_digits() (4300 digits)
        raise ProtocolError(
            f"request JSON is malformed: a number has more than {sys.get_int_max_str_digits()} digits"
        ) from None
    if not isinstance(req, dict):
        raise ProtocolError("request JSON must be an object with an 'inputs' list")
    raw_inputs = req.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError("request JSON needs a non-empty 'inputs' list")
    params = _object(req.get("parameters"), "request 'parameters'")
    rid = req.get("id")
    if isinstance(rid, bool) or not isinstance(rid, str | int | float | None):  # an object came back as its repr
        raise ProtocolError(f"request 'id' must be a string, got {_json_kind(rid)}")
    rid = None if rid is None else str(rid)  # a number is taken as its text
    if rid is not None and not rid.isascii():
        # JSON may escape a lone surrogate ("\\ud800"), which no UTF-8 response can echo (a 500
        # once the model had run): refused here, before any tensor is decoded
        try:
            rid.encode()
        except UnicodeEncodeError:
            raise ProtocolError(
                f"request 'id' is not valid Unicode (it holds a lone surrogate escape): {rid!r:.80}"
            ) from None
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    pos = 0
    for i, t in enumerate(raw_inputs):
        if not isinstance(t, dict):
            raise ProtocolError(f"inputs[{i}] must be an object with name, datatype, shape")
        name = t.get("name")
        if not isinstance(name, str) or not name:
            raise ProtocolError(f"inputs[{i}] has no 'name'")
        if name in inputs:
            raise ProtocolError(f"input '{name}' appears twice")
        datatype = t.get("datatype")
        if not isinstance(datatype, str) or datatype not in KNOWN_DATATYPES:
            raise ProtocolError(f"input '{name}': unknown datatype {datatype!r}")
        if check is not None:
            check(name, datatype)
        if datatype in ("BYTES", "BF16"):
            raise ProtocolError(f"input '{name}': datatype {datatype} is not supported by this server")
        shape = t.get("shape")
        count = _element_count(shape, name)
        tparams = _object(t.get("parameters"), f"input '{name}': 'parameters'")
        if "shared_memory_region" in tparams:
            raise ProtocolError(f"input '{name}': shared-memory inputs are not supported by this server")
        size = tparams.get("binary_data_size")
        if size is not None and "data" in t:
            # two values for one tensor: answering with either is a guess the client cannot see (Triton refuses it too)
            raise ProtocolError(
                f"input '{name}': gives both 'data' and parameters.binary_data_size; send its values one way only"
            )
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ProtocolError(f"input '{name}': binary_data_size must be a non-negative integer")
            if pos + size > len(binary):
                raise ProtocolError(
                    f"input '{name}': binary_data_size {size} runs past the {len(binary)} binary bytes in the body"
                )
            chunk = binary[pos : pos + size]
            pos += size
            dt = _WIRE_DTYPES[datatype]
            if size != count * dt.itemsize:
                raise ProtocolError(
                    f"input '{name}': binary_data_size is {size} bytes but shape {shape} of {datatype} "
                    f"needs {count * dt.itemsize}"
                )
            arr = np.frombuffer(chunk, dtype=dt)
            if dt.kind == "b":
                arr = np.frombuffer(chunk, dtype=np.uint8) != 0
            elif not dt.isnative:
                arr = arr.astype(dt.newbyteorder("="))
        elif "data" in t:
            arr = _json_data(t["data"], datatype, shape, count, name)
        else:
            raise ProtocolError(f"input '{name}': neither 'data' nor parameters.binary_data_size given")
        try:  # an empty tensor may still declare dimensions numpy cannot hold (2**63, or more than 32 of them)
            inputs[name] = arr.reshape(shape)
        except (ValueError, OverflowError):
            raise ProtocolError(f"input '{name}': shape {shape} is not a valid array shape") from None
        datatypes[name] = datatype
    if pos != len(binary):
        raise ProtocolError(
            f"body has {len(binary) - pos} binary bytes after the declared inputs (binary_data_size values "
            f"sum to {pos})"
        )
    outputs = None
    if "outputs" in req:
        raw_out = req["outputs"]
        if not isinstance(raw_out, list):
            raise ProtocolError("request 'outputs' must be a list")
        outputs = []
        seen: set[str] = set()  # a scan of the list per output was quadratic: 40,000 outputs (692 KiB) took 47 s
        for j, o in enumerate(raw_out):
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise ProtocolError(f"outputs[{j}] must be an object with a 'name'")
            op = _object(o.get("parameters"), f"output '{o['name']}': 'parameters'")
            if o["name"] in seen:
                raise ProtocolError(f"output '{o['name']}' is requested twice")
            seen.add(o["name"])
            if op.get("classification"):
                raise ProtocolError(f"output '{o['name']}': the classification extension is not supported")
            if "shared_memory_region" in op:
                raise ProtocolError(f"output '{o['name']}': shared-memory outputs are not supported by this server")
            binary_out = _flag(op.get("binary_data", False), f"output '{o['name']}': parameter 'binary_data'")
            outputs.append(RequestedOutput(o["name"], binary_out))
    # An empty list asks for every output, as Triton reads it (InferenceRequest::Normalize) and as
    # tritonclient sends outputs=[] (no "outputs" key): the same request answered alike by both servers.
    return InferRequest(
        inputs=inputs,
        datatypes=datatypes,
        id=rid,
        outputs=outputs or None,
        binary_output=_flag(params.get("binary_data_output", False), "request parameter 'binary_data_output'"),
        parameters=params,
    )


def encode_infer_response(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: list[tuple[str, np.ndarray, bool]],
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of an inference response; ``outputs`` are ``(name, array, binary)``."""
    entries, blobs = [], []
    finite = True  # orjson writes NaN and ±Infinity as null: a client read +inf as nan, or None
    for name, arr, binary in outputs:
        arr = np.ascontiguousarray(arr)
        entry: dict[str, Any] = {
            "name": name,
            "datatype": NUMPY_TO_KSERVE[arr.dtype.name],
            "shape": [int(d) for d in arr.shape],
        }
        if binary:
            raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            if finite and arr.dtype.kind == "f" and not np.isfinite(arr).all():
                finite = False
            entry["data"] = arr.reshape(-1).tolist()
        entries.append(entry)
    resp: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": entries}
    if request_id is not None:
        resp["id"] = request_id
    # NaN/Infinity literals, as the request parser reads them and tritonclient's rapidjson does too
    head = _dumps(resp) if finite else json.dumps(resp, separators=(",", ":")).encode()
    if not blobs:
        return head, {"Content-Type": "application/json"}
    return b"".join([head, *blobs]), {
        "Content-Type": "application/octet-stream",
        HEADER_LENGTH: str(len(head)),
    }


def error_body(message: str) -> bytes:
    """The KServe v2 error response body, ``{"error": message}``: the one encoder of every 4xx/5xx."""
    return json.dumps({"error": message}).encode()


def _object(value: Any, what: str) -> dict[str, Any]:
    """A ``parameters`` object; absent or null is none. ``0``, ``""`` or ``[]`` were read as ``{}``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} must be an object, got {_json_kind(value)}")
    return value


def _json_kind(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)
