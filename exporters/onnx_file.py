"""Reading an ONNX file a user names, before anything else touches it.

Both the metadata readers (``gtc measure``, serving) and the TensorRT engine build take the file from
the user, so every way it can be wrong is one :class:`ModelFileError` naming it, not a protobuf
``DecodeError`` without a path. Kept free of torch and TensorRT so that either path reports a bad
file the same way on every machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gtcompress.errors import ModelFileError


def load_model_proto(path: str | Path) -> Any:
    """The ``onnx.ModelProto`` in ``path`` (external weights not loaded), refused by name when it is
    missing, a directory, unreadable, empty, not protobuf or cut short, or decodes to something that
    is not a model: no graph or no operator set, which is what a file cut between two fields decodes
    to (its metadata would then be silently missing too)."""
    import onnx
    from google.protobuf.message import DecodeError

    p = Path(path)
    if not p.exists():
        raise ModelFileError(f"{p}: file does not exist")
    if p.is_dir():
        raise ModelFileError(f"{p}: is a directory, not an ONNX file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ModelFileError(f"{p}: cannot be read ({e.strerror or e})") from None
    if not data:
        raise ModelFileError(f"{p}: not a valid ONNX model (the file is empty)")
    try:
        proto = onnx.load_model_from_string(data)
    except DecodeError as e:
        raise ModelFileError(f"{p}: not a valid ONNX model (protobuf decode failed: {e})") from None
    if not proto.HasField("graph") or not proto.graph.node or not proto.opset_import:
        raise ModelFileError(f"{p}: not a valid ONNX model (it holds no graph; truncated?)")
    return proto
