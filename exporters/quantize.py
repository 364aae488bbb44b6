"""Dynamic int8 quantization of an exported model, for ONNX Runtime on the CPU.

Weights are quantized once, to int8 per output channel; each call quantizes the activations entering
those products to uint8 over their own range (ONNX Runtime's ``DynamicQuantizeLinear`` and
``MatMulInteger``). Dynamic, not static: a static range is calibrated on sample graphs and clips a request
whose hidden values fall outside it, where a graph's size and degrees move them (a sum readout, a hub's
neighbours), while a per-call range follows each request. Only products with a constant weight are
quantized (``MatMulConstBOnly``): the attention scores (q·k), the softmax, the scatter and gather of the
edge lowerings and the edge biases stay float32, since their error would grow with a node's degree.

What it buys is measured, not assumed: the weights take a quarter of their float32 bytes, and the
products run on int8 dot products where the CPU has them. Whether the model is faster on a given CPU
is ``gtc profile``'s to say (on a model whose time goes to attention and pre-processing, it may not be),
and whether it is as accurate is the val split's: :func:`gtcompress.pipeline.quantize.quantize_measured`
(``gtc export --quantize int8``) evaluates both files and writes the int8 one only within ``--max-drop``.

Products are grouped into *blocks* (:func:`product_blocks`: each layer's attention, FFN and local message
passing, the encoders, the head): a block's products may be kept float32 (``keep_float32``) where int8
costs the model more accuracy than it allows, the rest still int8. Which ones is a measurement:
:func:`gtcompress.pipeline.quantize.quantize_measured` tries them.

TensorRT reads none of these operators (``gtc build`` refuses the file): a quantized file is for ONNX
Runtime on a CPU, where int8 dot products pay; on a GPU, ``gtc build --fp16`` of the float32 export is the
smaller-precision path.
"""

from __future__ import annotations

import ast
import json
import logging
import math
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from exporters.onnx_file import load_model_proto
from gtcompress.errors import ConfigError
from runtime.spec import QUANT_KEY, metadata_json

if TYPE_CHECKING:
    from gtcompress.models.model import GraphModel

__all__ = ["INT8", "QUANT_KEY", "SCHEMES", "check_quantized", "product_blocks", "quantization", "quantize_int8"]

#: ``--quantize`` values
SCHEMES = ("int8",)
#: what :func:`quantize_int8` records under :data:`QUANT_KEY`
INT8 = {"scheme": "int8", "weights": "int8, per output channel", "activations": "uint8, per call (dynamic)"}


def quantization(meta: Mapping[str, str], source: str | Path = "the file") -> dict[str, str] | None:
    """The quantization an exported file's metadata records, or ``None`` for a float32 file (an entry that
    is not JSON: a :class:`~runtime.errors.SessionError` naming ``source``, as the runtime reads it)."""
    return metadata_json(dict(meta), QUANT_KEY, str(source))


#: the block of a product whose node carries no module path (a file from another exporter)
OTHER_BLOCK = "other"
#: a ``layers.<i>.<part>`` block is cut at this depth: the layer's attention, FFN or local message passing
_LAYER_DEPTH = 3


def _block_of(node: onnx.NodeProto) -> str:
    """The block of a product node: from the module path torch's exporter records per node
    (``pkg.torch.onnx.name_scopes``, the innermost module second to last), ``model.`` dropped."""
    scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
    try:
        path = str(ast.literal_eval(scopes)[-2]) if scopes else ""
    except (ValueError, SyntaxError, IndexError):
        path = ""
    parts = path.removeprefix("model.").split(".") if path not in ("", "model") else []
    if not parts:
        return OTHER_BLOCK
    return ".".join(parts[:_LAYER_DEPTH]) if parts[0] == "layers" else parts[0]


def _products(proto: onnx.ModelProto) -> dict[str, str]:
    """Each product :func:`quantize_int8` would store in int8, by the name ONNX Runtime's quantizer gives its
    node (a Gemm becomes ``<name>_MatMul``), and its block. A product's weight is an initializer or a
    Constant node's output (``MatMulConstBOnly``)."""
    constants = {t.name for t in proto.graph.initializer}
    constants |= {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    out: dict[str, str] = {}
    for node in proto.graph.node:
        if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and node.input[1] in constants:
            out[f"{node.name}_MatMul" if node.op_type == "Gemm" else node.name] = _block_of(node)
    return out


def product_blocks(src: str | Path) -> dict[str, int]:
    """The blocks of the float32 export ``src`` whose products :func:`quantize_int8` stores in int8, in the
    file's order, with the number of products each holds: the names ``keep_float32`` takes."""
    blocks: dict[str, int] = {}
    for block in _products(load_model_proto(Path(src))).values():
        blocks[block] = blocks.get(block, 0) + 1
    return blocks


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantizer warns on the root logger ("consider pre-processing", a tensor it
    skips): advice for image models, printed into the export's table."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_int8(src: str | Path, dst: str | Path, keep_float32: Collection[str] = ()) -> Path:
    """Write ``src`` (an ONNX file ``gtc export`` wrote) to ``dst`` with its weight products in int8
    (module docstring), but those of the blocks ``keep_float32`` (:func:`product_blocks`) left float32;
    ``dst`` appears only once whole. The metadata is kept (the runtime reads the model's inputs from it)
    and :data:`QUANT_KEY` added, naming the blocks kept float32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from gtcompress.io import atomic_path

    src, dst = Path(src), Path(dst)
    proto = load_model_proto(src)
    meta = {p.key: p.value for p in proto.metadata_props}
    if "input_spec" not in meta:
        raise ConfigError(f"{src}: not a model gtc export wrote (its metadata has no input_spec)")
    if (done := quantization(meta, src)) is not None:
        raise ConfigError(f"{src}: already quantized ({done['scheme']}); quantize the float32 export")
    lowering = json.loads(meta["input_spec"]).get("lowering")
    if lowering == "plugin":
        raise ConfigError(
            f"{src}: the 'plugin' lowering is for TensorRT, which reads no ONNX Runtime int8 operators; "
            "quantize a file of another lowering"
        )
    # torch's exporter records the shape of every weight in value_info. The quantizer turns each Gemm
    # into a MatMul by transposing its weight in place, leaves that record as it was, and its own shape
    # inference then stops on the contradiction ("Inferred shape and existing shape differ"). The
    # records of initializers say nothing the initializers do not.
    products = _products(proto)
    blocks = list(dict.fromkeys(products.values()))
    unknown = [b for b in keep_float32 if b not in blocks]
    if unknown:
        raise ConfigError(
            f"{src}: no block {', '.join(map(repr, unknown))} among its weight products; its blocks are "
            f"{', '.join(blocks) or '(none)'}"
        )
    if blocks and set(keep_float32) >= set(blocks):
        raise ConfigError(f"{src}: keeping every block float32 ({', '.join(blocks)}) leaves nothing in int8")
    weights = {t.name for t in proto.graph.initializer}
    kept = [v for v in proto.graph.value_info if v.name not in weights]
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(kept)
    entry = {**INT8, "float32_blocks": [b for b in blocks if b in keep_float32]} if keep_float32 else INT8
    proto.metadata_props.add(key=QUANT_KEY, value=json.dumps(entry))  # the quantizer keeps metadata_props
    with atomic_path(dst) as tmp, _quiet_root_logger():
        quantize_dynamic(
            proto,
            tmp,
            weight_type=QuantType.QInt8,
            per_channel=True,
            # the products only: its default also stores Gather tables in int8, a node encoder's embeddings
            # among them, every node's input then one per-tensor step off (GPS on CLUSTER: 5 points of
            # accuracy, where the products alone cost under 1)
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=[name for name, block in products.items() if block in keep_float32],
            extra_options={"MatMulConstBOnly": True},
        )
        onnx.checker.check_model(str(tmp), full_check=True)
    return dst


def check_quantized(path: str | Path, model: GraphModel, verify_batches: int, label: str | Path) -> tuple[float, int]:
    """Run the quantized file ``path`` of ``model`` on the export's verification graphs (its edge cases and
    ``verify_batches`` random batches): ONNX Runtime raising, an output of another shape, or a NaN or
    infinite one is an :class:`~exporters.onnx.ExportError` naming ``label`` and the graph. Returns the
    largest |int8 - PyTorch| and the number of graphs run. No float32 tolerance applies: the int8 error
    is the scheme's, and whether it matters is the metric's to say."""
    from exporters.onnx import check_parity, read_spec
    from gtcompress.preprocess.random_graphs import edge_case_batches, random_batches

    spec = read_spec(Path(path))
    batches = random_batches(spec.x, spec.edge_attr, verify_batches)
    cases = [*edge_case_batches(spec.x, spec.edge_attr), *((f"random batch {i + 1}", g) for i, g in enumerate(batches))]
    return check_parity(path, model, spec, cases, atol=math.inf, label=label), len(cases)
