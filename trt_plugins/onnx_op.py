"""The op as ONNX nodes: names, attributes, ``OpSchema``\\s for our custom domain, and the TensorRT split.

The exported file carries one ``SparseGraphAttention`` node (domain ``gtcompress``) per attention,
plus a model-local ONNX function of the same (domain, name) built from standard ops, which ONNX
Runtime inlines -- that function is the exporter's job, not this module's.

TensorRT runs the op as two plugins, because an AOT plugin launches one kernel and the op is two
(:mod:`trt_plugins.tensorrt_plugin`). :func:`split_for_tensorrt` therefore rewrites the model
TensorRT parses: each node becomes ``SparseGraphAttentionPartials`` then
``SparseGraphAttentionCombine``. TensorRT's ONNX parser imports a node as a plugin when its
``op_type`` equals the registered plugin name and it carries the string attribute
``plugin_namespace``; attributes named like the plugin's ``register()`` parameters are handed to
it, and ``aot=1`` asks for the ahead-of-time implementation. ONNX Runtime cannot run the split
model (it has no kernels for the two ops); it runs the exported one.

The schemas registered here (all three ops) let ``onnx.checker``, shape inference and
``torch.onnx`` custom translations accept the nodes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import onnx
from onnx import helper
from onnx.defs import OpSchema

from trt_plugins import spec

DOMAIN = "gtcompress"
#: The exported node ("SparseGraphAttention"); TensorRT sees the two nodes :func:`split_for_tensorrt` makes.
OP_TYPE = spec.PLUGIN_NAME
#: The split nodes: each ``op_type`` must equal the name of the TensorRT plugin that runs it.
PARTIALS_OP_TYPE = spec.PARTIALS_PLUGIN_NAME
COMBINE_OP_TYPE = spec.COMBINE_PLUGIN_NAME
OPSET_VERSION = 1
PLUGIN_NAMESPACE_ATTRIBUTE = "plugin_namespace"
PLUGIN_NAMESPACE = spec.PLUGIN_NAMESPACE
AOT_ATTRIBUTE = "aot"
INPUT_NAMES = spec.INPUT_NAMES
OUTPUT_NAMES = spec.OUTPUT_NAMES
#: Suffixes of the tensors the split adds between the two nodes, after the original output's name.
PARTIAL_SUFFIX = "__partial"
PART_SUFFIX = "__part"

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
#: The same for ``SparseGraphAttentionPartials`` (its ``register()`` takes the four attributes).
PARTIALS_ATTRIBUTE_SPEC = ATTRIBUTE_SPEC
#: The same for ``SparseGraphAttentionCombine``: ``heads`` and ``head_dim`` only.
COMBINE_ATTRIBUTE_SPEC: tuple[tuple[str, int, bool, str], ...] = tuple(
    a for a in ATTRIBUTE_SPEC if a[0] not in ("scale", "has_bias")
)
_DEFAULTS: dict[str, int | str] = {"has_bias": 0, PLUGIN_NAMESPACE_ATTRIBUTE: PLUGIN_NAMESPACE, AOT_ATTRIBUTE: 1}
#: ONNX tensor types of :data:`spec.FLOAT_DTYPES`: what the two TensorRT plugins accept.
_PLUGIN_FLOAT_TYPES = [
    {"float32": "tensor(float)", "float16": "tensor(float16)", "bfloat16": "tensor(bfloat16)"}[d]
    for d in spec.FLOAT_DTYPES
]

_DOC = (
    "Sparse graph attention over a CSR graph (edges sorted by destination): for each destination i "
    "and head h, softmax over its incoming edges e of scale * q[i,h].k[col[e],h] + bias[e,h] "
    "weights v[col[e],h]; nodes without incoming edges give 0. Duplicate edges count once each."
)
_PARTIALS_DOC = (
    "First half of SparseGraphAttention as TensorRT runs it: splits the CSR edges into chunks, writes "
    "every row whose edges lie in one chunk to 'out' and the partial softmax states of the rows cut by "
    "chunk borders to 'part'. SparseGraphAttentionCombine completes 'out'."
)
_COMBINE_DOC = (
    "Second half of SparseGraphAttention as TensorRT runs it: zeroes the rows of 'out_in' without "
    "incoming edge and merges the partial states in 'part' into the rows cut by chunk borders. The "
    "output is 'out_in', completed in place (TensorRT aliases the two)."
)
_INPUT_DOCS = {
    "q": "queries [N, H, D]",
    "k": "keys [N, H, D]",
    "v": "values [N, H, D]",
    "rowptr": "CSR row pointer by destination [N + 1]",
    "col": "source node of each edge, edges sorted by destination [E]",
    "bias": "additive score bias [E, H] in CSR order; a placeholder such as [0, H] when has_bias = 0",
    "out_in": "the 'out' output of SparseGraphAttentionPartials [N, H, D]",
    "part": f"partial states, float32 {spec.PART_SHAPE_FORMULA.removesuffix(' float32')}",
}


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


def _schema(
    op_type: str,
    doc: str,
    inputs: Sequence[tuple[str, str]],
    outputs: Sequence[tuple[str, str, str]],
    float_types: Sequence[str],
    attribute_spec: Sequence[tuple[str, int, bool, str]],
) -> OpSchema:
    """An ``OpSchema`` in :data:`DOMAIN`; ``inputs`` are ``(name, type)`` (docs from :data:`_INPUT_DOCS`),
    ``outputs`` ``(name, type, doc)``; type ``"T"`` is one of ``float_types``, ``"I"`` int32."""
    attributes = []
    for name, attr_type, required, attr_doc in attribute_spec:
        if required:
            attributes.append(OpSchema.Attribute(name, OpSchema.AttrType(attr_type), attr_doc, required=True))
        else:
            attributes.append(OpSchema.Attribute(name, helper.make_attribute(name, _DEFAULTS[name]), attr_doc))
    return OpSchema(
        op_type,
        DOMAIN,
        OPSET_VERSION,
        doc,
        inputs=[OpSchema.FormalParameter(n, t, _INPUT_DOCS[n]) for n, t in inputs],
        outputs=[OpSchema.FormalParameter(n, t, d) for n, t, d in outputs],
        type_constraints=[
            ("T", list(float_types), "floating-point attention tensors"),
            ("I", ["tensor(int32)"], "int32 CSR indices"),
        ],
        attributes=attributes,
    )


#: Type constraint of each input in both schemas: T the float type, I the index type.
_INPUT_KINDS = {"q": "T", "k": "T", "v": "T", "rowptr": "I", "col": "I", "bias": "T"}


def op_schema() -> OpSchema:
    """The ``OpSchema`` of the op in :data:`DOMAIN` (not registered; see :func:`register_onnx_schema`)."""
    return _schema(
        OP_TYPE,
        _DOC,
        [(n, _INPUT_KINDS[n]) for n in INPUT_NAMES],
        [("out", "T", "attention output [N, H, D], dtype of q")],
        _PLUGIN_FLOAT_TYPES,  # as the split ops: the node they replace takes what they take
        ATTRIBUTE_SPEC,
    )


def partials_op_schema() -> OpSchema:
    """The ``OpSchema`` of ``SparseGraphAttentionPartials`` (inputs and attributes of the op)."""
    return _schema(
        PARTIALS_OP_TYPE,
        _PARTIALS_DOC,
        [(n, _INPUT_KINDS[n]) for n in INPUT_NAMES],
        [
            ("out", "T", "rows complete within one chunk [N, H, D], dtype of q; the rest is left to Combine"),
            ("part", "tensor(float)", _INPUT_DOCS["part"]),
        ],
        _PLUGIN_FLOAT_TYPES,
        PARTIALS_ATTRIBUTE_SPEC,
    )


def combine_op_schema() -> OpSchema:
    """The ``OpSchema`` of ``SparseGraphAttentionCombine``."""
    kinds = {"out_in": "T", "part": "tensor(float)", "rowptr": "I"}
    return _schema(
        COMBINE_OP_TYPE,
        _COMBINE_DOC,
        [(n, kinds[n]) for n in spec.COMBINE_INPUTS],
        [("out", "T", "attention output [N, H, D]: 'out_in', completed in place")],
        _PLUGIN_FLOAT_TYPES,
        COMBINE_ATTRIBUTE_SPEC,
    )


def register_onnx_schema() -> bool:
    """Register the schemas of all three ops with ``onnx.defs`` once per process; ``True`` if this call
    registered any of them."""
    registered = False
    for make in (op_schema, partials_op_schema, combine_op_schema):
        schema = make()
        if not onnx.defs.has(schema.name, OPSET_VERSION, DOMAIN):
            onnx.defs.register_schema(schema)
            registered = True
    return registered


def _plugin_node(
    op_type: str, inputs: Sequence[str], outputs: Sequence[str], name: str, attrs: Mapping[str, int | float | str]
) -> onnx.NodeProto:
    """A node whose attributes keep the order of ``attrs`` (``helper.make_node`` would sort them)."""
    node = helper.make_node(op_type, list(inputs), list(outputs), name=name, domain=DOMAIN)
    node.attribute.extend(helper.make_attribute(key, value) for key, value in attrs.items())
    return node


def _subgraphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every graph nested in its nodes' attributes (``If``/``Loop``/``Scan`` bodies)."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs:
                yield from _subgraphs(sub)


def _is_op(node: onnx.NodeProto) -> bool:
    return node.domain == DOMAIN and node.op_type == OP_TYPE


def split_node(node: onnx.NodeProto, taken: set[str] | None = None) -> tuple[onnx.NodeProto, onnx.NodeProto]:
    """The two nodes TensorRT runs for one ``SparseGraphAttention`` node.

    ``SparseGraphAttentionPartials`` takes the node's six inputs and writes ``<out>__partial`` and
    ``<out>__part``; ``SparseGraphAttentionCombine`` takes those and the node's ``rowptr`` and writes
    the node's output. Attributes are validated (a missing ``scale`` defaults to ``1/sqrt(head_dim)``)
    and written in ``register()`` order, then ``plugin_namespace`` and ``aot`` (the node's, default 1).
    ``taken``: tensor names already in the graph; the new names must not be among them (they are added).
    """
    label = node.name or (node.output[0] if node.output else "")
    if len(node.input) != len(INPUT_NAMES) or len(node.output) != len(OUTPUT_NAMES):
        raise spec.PluginSpecError(
            f"node {label!r}: {OP_TYPE} takes inputs {INPUT_NAMES} and outputs {OUTPUT_NAMES}; "
            f"got {list(node.input)} -> {list(node.output)}"
        )
    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    try:
        attrs = spec.attributes_from_mapping(values)
    except spec.PluginSpecError as err:
        raise spec.PluginSpecError(f"node {label!r}: {err}") from None
    out = node.output[0]
    partial, part = out + PARTIAL_SUFFIX, out + PART_SUFFIX
    taken = set() if taken is None else taken
    clash = [name for name in (partial, part) if name in taken]
    if clash:
        raise ValueError(f"node {label!r}: cannot split it, the graph already has a tensor named {clash[0]!r}")
    taken.update((partial, part))
    parser = {PLUGIN_NAMESPACE_ATTRIBUTE: PLUGIN_NAMESPACE, AOT_ATTRIBUTE: int(values.get(AOT_ATTRIBUTE, 1))}
    partials = _plugin_node(
        PARTIALS_OP_TYPE, node.input, (partial, part), f"{node.name or out}/partials", {**attrs.as_dict(), **parser}
    )
    combine = _plugin_node(
        COMBINE_OP_TYPE,
        (partial, part, node.input[INPUT_NAMES.index("rowptr")]),
        (out,),
        f"{node.name or out}/combine",
        {"heads": attrs.heads, "head_dim": attrs.head_dim, **parser},
    )
    return partials, combine


def split_for_tensorrt(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` in which every top-level ``SparseGraphAttention`` node is replaced, in place
    in the node order, by the two nodes of :func:`split_node`; ``model`` is not modified.

    The model-local ``SparseGraphAttention`` function (ONNX Runtime's fallback) is dropped once no
    node uses it. Nodes inside subgraphs (``If``/``Loop`` bodies) or inside other functions are *not*
    split -- our exporter puts every attention at the top level -- and keep the function, so TensorRT
    would run them through it (its parser imports a node through a model-local function when no
    plugin has its name). Registers the ONNX schemas, so ``onnx.checker`` accepts the result.
    """
    register_onnx_schema()
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    taken = {v.name for v in (*graph.input, *graph.output, *graph.value_info)}
    taken |= {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    taken |= {name for n in graph.node for name in (*n.input, *n.output)}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if _is_op(node):
            nodes.extend(split_node(node, taken))
        else:
            nodes.append(onnx.NodeProto())
            nodes[-1].CopyFrom(node)  # a detached copy: the repeated field is cleared below
    del graph.node[:]
    graph.node.extend(nodes)
    still_used = any(_is_op(n) for g in _subgraphs(graph) for n in g.node) or any(
        _is_op(n) for f in out.functions if not (f.domain == DOMAIN and f.name == OP_TYPE) for n in f.node
    )
    if not still_used:
        functions = [f for f in out.functions if not (f.domain == DOMAIN and f.name == OP_TYPE)]
        del out.functions[:]
        out.functions.extend(functions)
    return out
