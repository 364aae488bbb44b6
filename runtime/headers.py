"""The request headers an inference request is read by, with a header given twice refused where the two
copies disagree.

The server reads three headers of an inference request: ``Content-Length`` (a declared size over the
limit is refused before the body is read), ``Content-Encoding`` (how the body is decoded) and
``Inference-Header-Content-Length`` (where the JSON ends and the binary tensors begin, KServe v2's binary
extension). A dict of the header list keeps one copy of a repeated header, so the answer depended on
which copy it kept: gzip sent as ``Content-Encoding: identity`` then ``Content-Encoding: gzip`` was
served, the other order refused as malformed JSON. Conflicting copies are a 400 naming the header and
both values. ``Content-Encoding`` is refused when repeated at all: HTTP reads repeated lines of a header
as one comma-separated list (RFC 9110 section 5.3), so two ``gzip`` lines say that the body was gzipped
twice, which this server does not decode (as it refuses ``Content-Encoding: gzip, gzip``).

uvicorn's httptools parser (llhttp) already refuses any repeated ``Content-Length`` with its own 400, and
its h11 parser conflicting ones; the check here covers the app under any ASGI server.
"""

from __future__ import annotations

from collections.abc import Iterable

from runtime.errors import ProtocolError
from runtime.protocol import HEADER_LENGTH

#: The headers an inference request is read by, lower-case, with their names as written in messages.
READ = {name.lower(): name for name in ("Content-Length", "Content-Encoding", HEADER_LENGTH)}


def request_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """``{lower-case name: value}`` of an ASGI header list (``scope["headers"]``); :class:`ProtocolError`
    for a header of :data:`READ` given twice with different values (surrounding whitespace aside), or for
    ``Content-Encoding`` given twice at all."""
    out: dict[str, str] = {}
    for k, v in raw:
        name, value = k.decode("latin-1").lower(), v.decode("latin-1")
        first = out.get(name)
        if first is not None and name in READ:
            shown = READ[name]
            if name == "content-encoding":
                raise ProtocolError(
                    f"{shown} is given twice ({first!r} and {value!r}), which HTTP reads as a body encoded twice "
                    f"({first.strip()}, {value.strip()}); this server decodes one encoding: send the header once"
                )
            if first.strip() != value.strip():
                raise ProtocolError(
                    f"{shown} is given twice with different values, {first!r} and {value!r}: which one the body "
                    "is read by is ambiguous; send the header once"
                )
            continue
        out[name] = value
    return out
