"""Errors of the deployed runtime, each naming the tensor and the expectation.

Every class is a :class:`gtcompress.errors.GTCompressError`, so the CLI prints it as one line, and
the server maps :class:`InputError`/:class:`ProtocolError` to HTTP 400, :class:`BodyTooLargeError` to
413, :class:`BodyTimeoutError` to 408, :class:`ServerBusyError` to 503 and :class:`ModelNotFoundError`
to 404 with the message as the KServe ``{"error": ...}`` body.
"""

from __future__ import annotations

from gtcompress.errors import GraphValidationError, GTCompressError


class InputError(GraphValidationError):
    """A graph tensor is unusable; ``input`` names it (``x``, ``edge_index``, …)."""

    def __init__(self, input: str, message: str) -> None:
        self.input = input
        super().__init__(f"input '{input}': {message}")


class DTypeError(InputError):
    """Wrong element type (e.g. float ``edge_index``, int ``x`` for float features)."""


class ShapeError(InputError):
    """Wrong rank or size (e.g. ``edge_index`` not ``[2, E]``, ``edge_attr`` rows ≠ E)."""


class EdgeIndexError(InputError):
    """An edge endpoint is negative or not smaller than the node count."""


class NonFiniteError(InputError):
    """A float feature is NaN or infinite."""


class FeatureRangeError(InputError):
    """A float feature is finite but beyond what an older model file computes right
    (:mod:`gtcompress.preprocess.legacy_range`): refused, since its answer would be wrong."""


class NonFiniteOutputError(InputError):
    """The model's answer to a request with finite inputs holds NaN or infinity: its float features are
    beyond what the model computes in float32 (``input`` names the one of largest magnitude). The
    server answers 400 with this rather than the NaN a client would take for an answer."""


class CategoryError(InputError):
    """A categorical feature value lies outside ``[0, cardinality)`` of its column."""


class BatchVectorError(InputError):
    """``batch``/``node_counts`` do not describe consecutive, non-empty graphs."""


class GraphTooLargeError(InputError):
    """The graph (or batch) exceeds a hard limit: a TensorRT profile maximum or the server's."""


class ProtocolError(GTCompressError):
    """A malformed inference request (JSON, binary sizes, datatypes, names)."""


class BodyTooLargeError(ProtocolError):
    """A request body passed the server's size limit as sent or once decoded (HTTP 413, not 400).

    ``limit`` is the limit in bytes, ``encoding`` the body's ``Content-Encoding``."""

    def __init__(self, limit: int, encoding: str, *, decoded: bool = False, declared: int | None = None) -> None:
        self.limit, self.encoding = limit, encoding
        limit_text = f"this server's limit of {limit} bytes (max_body_bytes)"
        if declared is not None:  # refused from the header, before any of the body is read
            what = f"request body of {declared} bytes (Content-Length) exceeds {limit_text}"
        else:
            what = f"request body exceeds {limit_text} {'once decoded' if decoded else 'as sent'}"
        super().__init__(f"{what}; Content-Encoding: {encoding}")


class JsonTooLargeError(BodyTooLargeError):
    """A JSON request body whose parsing would hold more than the server's whole in-flight budget
    (``ServerLimits.max_inflight_mib``): HTTP 413 like any body too large, since it could never be
    served, however long the client waited. Parsing JSON holds a Python object per number (about 50
    bytes), so a body within ``max_body_bytes`` may need 7-30 times its size to be read.

    ``size`` is the body's byte count, ``charge`` what reading it is counted at, ``limit`` the budget,
    ``head`` the bytes of it that are JSON where binary tensor data follows them
    (``Inference-Header-Content-Length``): such a request did send its tensors as binary data, so it
    is told which bytes were charged and to raise the budget, not to send binary data (a binary body
    within a few KiB of ``max_body_bytes`` at a budget equal to it is refused so)."""

    def __init__(self, size: int, charge: int, limit: int, head: int | None = None) -> None:
        self.limit, self.encoding = limit, "identity"
        self.size, self.charge, self.head = size, charge, head
        if head is not None and head < size:
            message = (
                f"request of {size} bytes (a JSON head of {head} bytes, then binary tensor data) would take about "
                f"{charge} bytes of memory to read, its body and the head parsed, more than this server's limit "
                f"of {limit} bytes for all requests in flight (max_inflight_mib); send any tensors still in the "
                "JSON head as binary data, or serve with a larger --max-inflight-mib"
            )
        else:
            message = (
                f"request JSON of {size} bytes would take about {charge} bytes of memory to parse (a number "
                f"costs about 50 bytes parsed), more than this server's limit of {limit} bytes for all requests "
                "in flight (max_inflight_mib); send the tensors as binary data (tritonclient: binary_data=True), "
                "or serve with a larger --max-inflight-mib"
            )
        ProtocolError.__init__(self, message)


class ServerBusyError(GTCompressError):
    """The server already holds as many bytes of requests as it may (``ServerLimits.max_inflight_mib``):
    HTTP 503, the client may retry later. Without it, memory grew with every concurrent request."""


class BodyTimeoutError(GTCompressError):
    """A request body stopped arriving for ``ServerLimits.body_timeout_s`` (HTTP 408): the client
    stalled mid-body. Without it a stalled client held its connection and its share of
    ``max_inflight_mib`` forever, and a few of them kept every other request at 503.
    ``shutting_down``: cut short because the server is stopping (HTTP 503, the client may retry)."""

    def __init__(self, message: str, *, shutting_down: bool = False) -> None:
        super().__init__(message)
        self.shutting_down = shutting_down


class ModelNotFoundError(GTCompressError):
    """No model of that name (or version) is served here."""


class SessionError(GTCompressError):
    """A model file cannot be served: missing, not exported by gtcompress, or its backend is absent."""


class AddressError(GTCompressError):
    """The server cannot listen where it was asked: the host does not resolve, or the port is taken."""
