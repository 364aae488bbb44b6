"""The plugin lowering: one ``SparseGraphAttention`` node per attention, runnable everywhere.

The exported file carries the op as one node in the ``gtcompress`` domain. ONNX Runtime knows no
such op, so the model also carries a *model-local ONNX function* of that name and domain, built
from standard ops (Gather, ScatterElements add/max, CumSum), which ORT inlines. TensorRT runs the
op as two plugins (the kernel's partials, then its in-place combine): before parsing,
:func:`trt_plugins.onnx_op.split_for_tensorrt` rewrites each node into that chain
(:mod:`trt_plugins.engine` does it), and the parser imports each node as a registered plugin
because its ``op_type`` equals the plugin's name and it carries the string attribute
``plugin_namespace``; attributes are passed when named like the plugin's ``register()`` parameters
(``trt_plugins.spec.ATTRIBUTES``). One file, one meaning; TensorRT gets the kernel, everything else
the function.
"""

from __future__ import annotations

from typing import Any

import onnx
import torch
from onnx import TensorProto, helper

from trt_plugins.onnx_op import ATTRIBUTE_SPEC, DOMAIN, INPUT_NAMES, OP_TYPE, node_attributes, register_onnx_schema


def plugin_op_ids() -> frozenset[tuple[str, str]]:
    """``(domain, op_type)`` of the node TensorRT's plugin implements."""
    return frozenset({(DOMAIN, OP_TYPE)})


def translation_table() -> dict[Any, Any]:
    """``custom_translation_table`` entry mapping our torch op to the plugin node."""
    import onnxscript

    from gtcompress.nn import fused  # noqa: F401  (registers torch.ops.gtcompress.sparse_graph_attention)

    register_onnx_schema()
    op = onnxscript.opset18
    custom = onnxscript.values.Opset(DOMAIN, 1)

    def translate(q: Any, k: Any, v: Any, rowptr: Any, col: Any, bias: Any = None, scale: float = 1.0) -> Any:
        heads, head_dim = int(q.shape[1]), int(q.shape[2])
        has_bias = bias is not None
        if not has_bias:  # a QDP plugin has a fixed input count: an empty [0, H] placeholder
            bias = op.ConstantOfShape(op.Constant(value_ints=[0, heads]), value=_zero_float())
        node = getattr(custom, OP_TYPE)
        return node(
            q,
            k,
            v,
            op.Cast(rowptr, to=TensorProto.INT32),
            op.Cast(col, to=TensorProto.INT32),
            bias,
            **node_attributes(heads, head_dim, float(scale), has_bias),
        )

    return {torch.ops.gtcompress.sparse_graph_attention.default: translate}


def _zero_float() -> onnx.TensorProto:
    return helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])


def _ref(node: onnx.NodeProto, attr: str, ref: str, kind: int) -> onnx.NodeProto:
    a = helper.make_attribute_ref(attr, kind)
    a.ref_attr_name = ref
    node.attribute.append(a)
    return node


def plugin_function() -> onnx.FunctionProto:
    """Reference semantics on CSR in standard ops (see :mod:`gtcompress.nn.attention`).

    Total on every valid input, ``E = 0`` and ``N = 1`` included (a request of one edgeless graph is
    ordinary traffic for a server): every shape is derived from an input's shape, never assumed
    non-empty, and the per-edge dot product reduces over axis ``2``, not ``-1``, because ONNX Runtime
    (1.31, CPU) ignores a negative ReduceSum axis on an empty tensor and returns ``[0, H, D]``
    unreduced, which the bias ``Add`` and the ScatterElements then reject. For ``E > 0`` the two axes
    are the same axis of the rank-3 product, so the function computes exactly what it did before."""
    n = helper.make_node
    i64 = TensorProto.INT64
    nodes = [
        n("Cast", ["rowptr"], ["rp"], to=i64),
        n("Cast", ["col"], ["src"], to=i64),
        n("Shape", ["q"], ["q_shape"]),
        n("Constant", [], ["c0"], value_ints=[0]),
        n("Constant", [], ["c1"], value_ints=[1]),
        n("Constant", [], ["c2"], value_ints=[2]),
        n("Constant", [], ["cm1"], value_ints=[-1]),
        n("Gather", ["q_shape", "c0"], ["num_nodes"], axis=0),
        n("Shape", ["src"], ["num_edges"]),
        # destination of every edge from rowptr: a +1 mark at each interior row start, cumsum
        n("Slice", ["rp", "c1", "cm1"], ["starts"]),
        n("Add", ["num_edges", "c1"], ["e_plus_1"]),
        n("ConstantOfShape", ["e_plus_1"], ["zeros_e1"], value=helper.make_tensor("z", i64, [1], [0])),
        n("Shape", ["starts"], ["starts_shape"]),
        n("ConstantOfShape", ["starts_shape"], ["ones_s"], value=helper.make_tensor("o", i64, [1], [1])),
        n("ScatterElements", ["zeros_e1", "starts", "ones_s"], ["marks"], axis=0, reduction="add"),
        n("CumSum", ["marks", "c0"], ["dst_e1"]),
        n("Slice", ["dst_e1", "c0", "num_edges"], ["dst"]),
        # scores [E, H]
        n("Gather", ["q", "dst"], ["q_e"], axis=0),
        n("Gather", ["k", "src"], ["k_e"], axis=0),
        n("Gather", ["v", "src"], ["v_e"], axis=0),
        n("Mul", ["q_e", "k_e"], ["qk"]),
        n("ReduceSum", ["qk", "c2"], ["dot"], keepdims=0),  # axis 2, not -1: see the docstring
        _ref(n("Constant", [], ["scale_c"]), "value_float", "scale", onnx.AttributeProto.FLOAT),
        n("Mul", ["dot", "scale_c"], ["score0"]),
        _ref(n("Constant", [], ["has_bias_i"]), "value_int", "has_bias", onnx.AttributeProto.INT),
        n("Cast", ["has_bias_i"], ["has_bias_b"], to=TensorProto.BOOL),
        n(
            "If",
            ["has_bias_b"],
            ["score_b"],
            then_branch=helper.make_graph(
                [n("Add", ["score0", "bias"], ["with_bias"])], "then", [], [_vi("with_bias")]
            ),
            else_branch=helper.make_graph(
                [n("Identity", ["score0"], ["without_bias"])], "else", [], [_vi("without_bias")]
            ),
        ),
        # an overflowed (infinite) score makes its node NaN: gtcompress.nn.attention.overflow_to_nan
        n("IsInf", ["score_b"], ["score_inf"]),
        n("Constant", [], ["nan_c"], value=helper.make_tensor("nan", TensorProto.FLOAT, [], [float("nan")])),
        n("Where", ["score_inf", "nan_c", "score_b"], ["score"]),
        # segment softmax over each destination's incoming edges
        n("Unsqueeze", ["dst", "c1"], ["dst_col"]),
        n("Shape", ["score"], ["score_shape"]),
        n("Expand", ["dst_col", "score_shape"], ["dst_eh"]),
        n("Shape", ["score"], ["eh_shape"]),
        n("Gather", ["eh_shape", "c1"], ["heads"], axis=0),
        n("Concat", ["num_nodes", "heads"], ["nh_shape"], axis=0),
        # the running maximum starts at -inf, as in the reference and the kernel: a finite start (-1e30)
        # stood above a node's every score when all lay below it, and its softmax was 0 / 0
        n(
            "ConstantOfShape",
            ["nh_shape"],
            ["ninf"],
            value=helper.make_tensor("m", TensorProto.FLOAT, [1], [float("-inf")]),
        ),
        n("ScatterElements", ["ninf", "dst_eh", "score"], ["seg_max"], axis=0, reduction="max"),
        n("Gather", ["seg_max", "dst"], ["max_e"], axis=0),
        n("Sub", ["score", "max_e"], ["shifted"]),
        n("Exp", ["shifted"], ["ex"]),
        n("ConstantOfShape", ["nh_shape"], ["zeros_nh"], value=helper.make_tensor("z", TensorProto.FLOAT, [1], [0])),
        n("ScatterElements", ["zeros_nh", "dst_eh", "ex"], ["denom"], axis=0, reduction="add"),
        n("Gather", ["denom", "dst"], ["denom_e"], axis=0),
        n("Div", ["ex", "denom_e"], ["alpha"]),
        # weighted sum of V
        n("Unsqueeze", ["alpha", "cm1"], ["alpha3"]),
        n("Mul", ["alpha3", "v_e"], ["msg"]),
        n("Shape", ["msg"], ["msg_shape"]),
        n("Unsqueeze", ["dst_eh", "cm1"], ["dst_eh1"]),
        n("Expand", ["dst_eh1", "msg_shape"], ["dst_ehd"]),
        n("ConstantOfShape", ["q_shape"], ["zeros_q"], value=helper.make_tensor("z", TensorProto.FLOAT, [1], [0])),
        n("ScatterElements", ["zeros_q", "dst_ehd", "msg"], ["out"], axis=0, reduction="add"),
    ]
    return helper.make_function(
        DOMAIN,
        OP_TYPE,
        list(INPUT_NAMES),
        ["out"],
        nodes,
        opset_imports=[helper.make_opsetid("", 18)],
        attributes=[name for name, *_ in ATTRIBUTE_SPEC],
    )


def _vi(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)


def add_plugin_function(model: onnx.ModelProto) -> None:
    """Attach the fallback function (once) and make sure the custom domain is imported."""
    if not any(f.domain == DOMAIN and f.name == OP_TYPE for f in model.functions):
        model.functions.append(plugin_function())
    if not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
