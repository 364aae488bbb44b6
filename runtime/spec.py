"""What an exported model expects, read from its metadata: the input spec and TEDDY settings.

``exporters.onnx`` stores ``input_spec`` (JSON) in the ONNX ``metadata_props``; a Triton model
repository carries the same spec as the ``gtcompress_input_spec`` parameter of ``config.pbtxt``.
TEDDY edge sparsification, when the model was fine-tuned on sparsified graphs, is found under
``teddy`` (``{"edges": 0.3, "per_graph": true}``), the spec's own ``teddy``/``preprocess.teddy``
entry, or the compression report's ``preprocess.teddy``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gtcompress.errors import json_limit
from gtcompress.preprocess.spec import InputSpec
from gtcompress.preprocess.teddy import finite_threshold, recompute_kinds
from runtime.errors import SessionError

# KServe v2 / Triton tensor datatypes of the numpy dtypes an exported model uses.
NUMPY_TO_KSERVE = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
}
KSERVE_TO_NUMPY = {v: k for k, v in NUMPY_TO_KSERVE.items()}
#: Metadata key of a file quantized after export (``exporters.quantize``): JSON saying what was quantized
#: and how; absent, the file is float32 throughout. Read here for reports, written by the exporter.
QUANT_KEY = "quantization"
# ONNX Runtime's type strings for the same dtypes.
ORT_TO_NUMPY = {
    "tensor(bool)": "bool",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(float16)": "float16",
    "tensor(float)": "float32",
    "tensor(double)": "float64",
}


@dataclass(frozen=True)
class TeddyConfig:
    """TEDDY edge sparsification applied to every incoming graph before the model sees it.

    ``threshold`` (TEDDY's global rule, fixed on the training split) drops every non-loop edge
    scoring below it; otherwise ``ratio`` of each graph's non-loop edges go. ``recompute_pe`` lists
    the PE kinds to recompute on the sparsified graph (``None``: every PE kind of the model)."""

    ratio: float
    per_graph: bool = True
    threshold: float | None = None
    recompute_pe: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "edges": self.ratio,
            "per_graph": self.per_graph,
            "threshold": self.threshold,
            "pe": None if self.recompute_pe is None else list(self.recompute_pe),
        }


@dataclass
class ModelSpec:
    """The input spec plus everything else of the metadata the runtime uses."""

    spec: InputSpec
    metadata: dict[str, str] = field(default_factory=dict)
    teddy: TeddyConfig | None = None

    @property
    def inputs(self) -> list[str]:
        return self.spec.inputs

    @property
    def output_name(self) -> str:
        return self.spec.output.name

    @property
    def node_level(self) -> bool:
        return self.spec.node_level


def metadata_json(metadata: dict[str, Any], key: str, source: str) -> Any:
    """Metadata entry ``key`` decoded from JSON (``None`` when absent). Invalid JSON is a
    :class:`SessionError` naming the file and the key: read as absent, a corrupt ``teddy`` entry
    would serve the model without its sparsification, a silently wrong answer to every request."""
    value = metadata.get(key)
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as e:
        raise SessionError(f"{source}: metadata '{key}' is not valid JSON ({e})") from None
    except (RecursionError, ValueError) as e:  # json's own limits: a raw traceback from `gtc serve` otherwise
        raise SessionError(f"{source}: metadata '{key}' is not valid JSON ({json_limit(e)})") from None


def _number(c: Mapping[str, Any], key: str, where: str, infinite: bool = False) -> float | None:
    """``c[key]`` as a finite float (``infinite``: or ±inf), ``None`` when absent or null; JSON
    true/false are no numbers."""
    v = c.get(key)
    if v is None:
        return None
    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    if not number or not (math.isfinite(v) or (infinite and math.isinf(v))):
        raise SessionError(f"{where} '{key}' must be a number, got {v!r:.80}")
    return float(v)


def _teddy(c: Any, where: str) -> TeddyConfig | None:
    """One TEDDY entry checked at load time (``where`` names the file and the key in errors): a bad
    value found only by the first request would turn every request into a 500."""
    if not isinstance(c, Mapping):
        raise SessionError(f'{where} must be a JSON object like {{"edges": 0.3, "per_graph": true}}, got {c!r:.80}')
    key = "edges" if "edges" in c else "ratio"
    ratio = _number(c, key, where) or 0.0
    if not 0.0 <= ratio <= 1.0:
        raise SessionError(f"{where} '{key}' is the fraction of edges TEDDY removes, in [0, 1]; got {c[key]!r}")
    # An older gtcompress recorded a threshold that keeps (drops) every edge as -Infinity (Infinity):
    # the same rule as the finite constants written now, so such a model file is served, not refused.
    threshold = _number(c, "threshold", where, infinite=True)
    threshold = None if threshold is None else finite_threshold(threshold)
    per_graph = c.get("per_graph", True)
    if not isinstance(per_graph, bool):
        raise SessionError(f"{where} 'per_graph' must be true or false, got {per_graph!r:.80}")
    pe = c.get("pe")
    try:
        recompute = recompute_kinds(pe)
    except ValueError:
        raise SessionError(f"{where} 'pe' must list the PE kinds to recompute, got {pe!r:.80}") from None
    if ratio <= 0.0:
        return None
    return TeddyConfig(ratio=ratio, per_graph=per_graph, threshold=threshold, recompute_pe=recompute)


def teddy_config(
    metadata: dict[str, Any], spec: InputSpec | None = None, source: str = "model metadata"
) -> TeddyConfig | None:
    """TEDDY settings from model metadata (or the spec itself); ``None`` when edges are not removed.

    The first entry present wins: the spec's own, metadata ``teddy``, ``preprocess.teddy``, then the
    compression report's ``preprocess.teddy``. Any entry that is not valid JSON, or whose values are
    of the wrong type or range, is a :class:`SessionError` naming ``source`` (the file) and the key."""
    candidates: list[tuple[str, Any]] = []
    if spec is not None:
        candidates.append(("input_spec.teddy", spec.teddy))
    candidates.append(("teddy", metadata_json(metadata, "teddy", source)))
    pre = metadata_json(metadata, "preprocess", source)
    if isinstance(pre, Mapping):
        candidates.append(("preprocess.teddy", pre.get("teddy")))
    comp = metadata_json(metadata, "compression", source)
    if isinstance(comp, Mapping) and isinstance(comp.get("preprocess"), Mapping):
        candidates.append(("compression.preprocess.teddy", comp["preprocess"].get("teddy")))
    for key, c in candidates:
        if c is not None:
            return _teddy(c, f"{source}: metadata {key}")
    return None


def model_spec(metadata: dict[str, str], source: str) -> ModelSpec:
    """A :class:`ModelSpec` from ``metadata_props``; ``source`` names the file in errors."""
    if "input_spec" not in metadata:
        raise SessionError(f"{source}: no gtcompress input_spec in its metadata (export it with `gtc export`)")
    raw = metadata_json(metadata, "input_spec", source)
    if not isinstance(raw, dict):
        raise SessionError(f"{source}: metadata input_spec is not a gtcompress input spec")
    try:
        spec = InputSpec.from_json(raw)
    except (ValueError, KeyError, TypeError) as e:
        raise SessionError(f"{source}: metadata input_spec is not a gtcompress input spec ({e})") from None
    return ModelSpec(spec, dict(metadata), teddy_config(metadata, spec, source))


def spec_from_pbtxt(text: str) -> dict[str, Any] | None:
    """The ``gtcompress_input_spec`` parameter of a Triton ``config.pbtxt`` (``None`` if absent)."""
    m = re.search(r'key:\s*"gtcompress_input_spec"\s*value\s*\{\s*string_value:\s*"((?:[^"\\]|\\.)*)"', text)
    if not m:
        return None
    raw = re.sub(r"\\(.)", r"\1", m.group(1))
    return json.loads(raw)


def plan_metadata_path(engine: Path) -> Path:
    """Where a TensorRT engine's metadata lives: ``<engine>.json`` beside it (an engine has no
    ``metadata_props``), as ``gtc build`` writes it and a Triton repository holds it (``model.plan.json``)."""
    return engine.with_name(engine.name + ".json")


def engine_metadata(path: Path) -> tuple[Path, dict[str, str]] | None:
    """The metadata of the TensorRT engine ``path`` and the file it came from, looked up beside it:
    ``<engine>.json`` (:func:`plan_metadata_path`: the ONNX ``metadata_props`` as a JSON object), else
    ``<stem>.onnx`` (its metadata); ``None`` where neither is there.

    Values come back as ``metadata_props`` hold them, strings: a value that is JSON of its own (an
    ``input_spec`` object, as a side file written by hand or before every value was a string holds
    it) is given as its JSON text, so readers parse every file alike. The exporter writes a Triton
    repository's copy from this (``exporters.triton_repo``), so it is read as it was written."""
    side = plan_metadata_path(path)
    if side.is_file():
        try:
            data = json.loads(side.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            why = f"not valid JSON ({e}); it holds the ONNX metadata_props as a JSON object"
            raise SessionError(f"{side}: {why}") from None
        except (RecursionError, ValueError) as e:  # json's own limits: a raw traceback from `gtc serve` otherwise
            why = f"not valid JSON ({json_limit(e)}); it holds the ONNX metadata_props as a JSON object"
            raise SessionError(f"{side}: {why}") from None
        if not isinstance(data, dict):
            raise SessionError(f"{side}: must be a JSON object (the ONNX metadata_props), got {type(data).__name__}")
        return side, {k: v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}
    onnx_file = path.with_suffix(".onnx")
    if onnx_file.is_file():
        return onnx_file, onnx_metadata(onnx_file)
    return None


def plan_metadata(path: Path) -> dict[str, str]:
    """Metadata of a TensorRT engine, which has no ``metadata_props`` of its own.

    Looked up next to it, in order: ``<engine>.json`` and ``<stem>.onnx`` (:func:`engine_metadata`),
    then a Triton repository's ``../config.pbtxt`` (the input spec alone)."""
    found = engine_metadata(path)
    if found is not None:
        return found[1]
    pbtxt = path.parent.parent / "config.pbtxt"
    if pbtxt.is_file():
        try:
            spec = spec_from_pbtxt(pbtxt.read_text())
        except json.JSONDecodeError as e:
            raise SessionError(f"{pbtxt}: parameter gtcompress_input_spec is not valid JSON ({e})") from None
        except (RecursionError, ValueError) as e:  # nested too deeply, or a number of 5000 digits
            raise SessionError(
                f"{pbtxt}: parameter gtcompress_input_spec is not valid JSON ({json_limit(e)})"
            ) from None
        if spec is not None:
            return {"input_spec": json.dumps(spec)}
    raise SessionError(
        f"{path}: a TensorRT engine carries no input spec; put {plan_metadata_path(path).name} (the ONNX "
        f"metadata_props as JSON, which gtc build writes) or {path.with_suffix('.onnx').name} next to it (from "
        "Python, GraphSession(..., spec=) also works)"
    )


def onnx_metadata(path: Path) -> dict[str, str]:
    """``metadata_props`` of an ONNX file via ONNX Runtime (the ``onnx`` package is not needed)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types for unreadable models
        raise SessionError(f"{path}: ONNX Runtime cannot load it: {e}") from None
    return dict(sess.get_modelmeta().custom_metadata_map)
