"""The plugin op as an ONNX node: names, attributes and an ``OpSchema`` for our custom domain.

One node carries the op into every backend: TensorRT's ONNX parser turns it into our plugin
because its ``op_type`` equals the registered plugin name and it carries the string attribute
``plugin_namespace`` (attributes named like ``register()``'s parameters are handed to the plugin;
``aot=1`` asks for the ahead-of-time implementation). ONNX Runtime runs the same node through a
model-local ONNX function of the same (domain, name) built from standard ops -- that function is
the exporter's job, not this module's. The schema registered here lets ``onnx.checker``, shape
inference and ``torch.onnx`` custom translations accept the node.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from onnx import helper
from onnx.defs import OpSchema

from trt_plugins import spec

DOMAIN = "gtcompress"
OP_TYPE = spec.PLUGIN_NAME  # "SparseGraphAttention": must equal the TensorRT plugin name
OPSET_VERSION = 1
PLUGIN_NAMESPACE_ATTRIBUTE = "plugin_namespace"
PLUGIN_NAMESPACE = spec.PLUGIN_NAMESPACE
AOT_ATTRIBUTE = "aot"
INPUT_NAMES = spec.INPUT_NAMES
OUTPUT_NAMES = spec.OUTPUT_NAMES

#: ``(name, ONNX attribute type, required, description)`` for every attribute of the node. The
#: first four are the plugin's ``register()`` parameters; the last two are read by the parser.
ATTRIBUTE_SPEC: tuple[tuple[str, int, bool, str], ...] = (
    ("heads", onnx.AttributeProto.INT, True, "number of heads H (dim 1 of q, k, v)"),
    ("head_dim", onnx.AttributeProto.INT, True, "head size D (dim 2 of q, k, v)"),
    ("scale", onnx.AttributeProto.FLOAT, True, "softmax scale tau multiplying q.k (usually 1/sqrt(D))"),
    ("has_bias", onnx.AttributeProto.INT, False, "1: add input 'bias' [E, H] to the scores; 0: ignore it"),
    (PLUGIN_NAMESPACE_ATTRIBUTE, onnx.AttributeProto.STRING, False, "TensorRT plugin namespace"),
    (AOT_ATTRIBUTE, onnx.AttributeProto.INT, False, "1: TensorRT uses the plugin's AOT (PTX) implementation"),
)
_DEFAULTS: dict[str, int | str] = {"has_bias": 0, PLUGIN_NAMESPACE_ATTRIBUTE: PLUGIN_NAMESPACE, AOT_ATTRIBUTE: 1}

_DOC = (
    "Sparse graph attention over a CSR graph (edges sorted by destination): for each destination i "
    "and head h, softmax over its incoming edges e of scale * q[i,h].k[col[e],h] + bias[e,h] "
    "weights v[col[e],h]; nodes without incoming edges give 0. Duplicate edges count once each."
)


def node_attributes(
    heads: int, head_dim: int, scale: float | None = None, has_bias: bool = False, aot: bool = True
) -> dict[str, int | float | str]:
    """The attributes a node of this op carries (validated; ``scale`` defaults to ``1/sqrt(head_dim)``)."""
    tau = spec.default_scale(head_dim) if scale is None else scale
    attrs = spec.validate_attributes(heads, head_dim, tau, has_bias)
    return {**attrs.as_dict(), PLUGIN_NAMESPACE_ATTRIBUTE: PLUGIN_NAMESPACE, AOT_ATTRIBUTE: int(aot)}


def make_node(
    inputs: Sequence[str],
    outputs: Sequence[str],
    heads: int,
    head_dim: int,
    scale: float | None = None,
    has_bias: bool = False,
    name: str | None = None,
) -> onnx.NodeProto:
    """A ``SparseGraphAttention`` node; ``inputs`` are the six tensor names in :data:`INPUT_NAMES` order."""
    if len(inputs) != len(INPUT_NAMES) or len(outputs) != len(OUTPUT_NAMES):
        raise spec.PluginSpecError(
            f"{OP_TYPE} takes inputs {INPUT_NAMES} and outputs {OUTPUT_NAMES}; got {list(inputs)} -> {list(outputs)}"
        )
    attrs = node_attributes(heads, head_dim, scale, has_bias)
    return helper.make_node(OP_TYPE, list(inputs), list(outputs), name=name, domain=DOMAIN, **attrs)


def op_schema() -> OpSchema:
    """The ``OpSchema`` of the op in :data:`DOMAIN` (not registered; see :func:`register_onnx_schema`)."""
    float_t, index_t = "T", "I"
    kinds = {"q": float_t, "k": float_t, "v": float_t, "rowptr": index_t, "col": index_t, "bias": float_t}
    docs = {
        "q": "queries [N, H, D]",
        "k": "keys [N, H, D]",
        "v": "values [N, H, D]",
        "rowptr": "CSR row pointer by destination [N + 1]",
        "col": "source node of each edge, edges sorted by destination [E]",
        "bias": "additive score bias [E, H] in CSR order; a placeholder such as [0, H] when has_bias = 0",
    }
    attributes = []
    for name, attr_type, required, doc in ATTRIBUTE_SPEC:
        if required:
            attributes.append(OpSchema.Attribute(name, OpSchema.AttrType(attr_type), doc, required=True))
        else:
            attributes.append(OpSchema.Attribute(name, helper.make_attribute(name, _DEFAULTS[name]), doc))
    return OpSchema(
        OP_TYPE,
        DOMAIN,
        OPSET_VERSION,
        _DOC,
        inputs=[OpSchema.FormalParameter(n, kinds[n], docs[n]) for n in INPUT_NAMES],
        outputs=[OpSchema.FormalParameter("out", float_t, "attention output [N, H, D], dtype of q")],
        type_constraints=[
            (float_t, ["tensor(float)", "tensor(float16)"], "floating-point q, k, v, bias and output"),
            (index_t, ["tensor(int32)"], "int32 CSR indices"),
        ],
        attributes=attributes,
    )


def register_onnx_schema() -> bool:
    """Register :func:`op_schema` with ``onnx.defs`` once per process; ``True`` if this call registered it."""
    if onnx.defs.has(OP_TYPE, OPSET_VERSION, DOMAIN):
        return False
    onnx.defs.register_schema(op_schema())
    return True
