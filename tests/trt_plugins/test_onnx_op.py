"""The ONNX op: constants that must agree with the TensorRT plugin, and the schema."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from trt_plugins import onnx_op, spec
from trt_plugins.spec import PluginSpecError


def _model(node: onnx.NodeProto, dtype: int = TensorProto.FLOAT) -> onnx.ModelProto:
    def vi(name: str, elem: int, shape: list) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, elem, shape)

    inputs = [
        vi("q", dtype, ["N", 2, 8]),
        vi("k", dtype, ["N", 2, 8]),
        vi("v", dtype, ["N", 2, 8]),
        vi("rowptr", TensorProto.INT32, ["N1"]),
        vi("col", TensorProto.INT32, ["E"]),
        vi("bias", dtype, ["E", 2]),
    ]
    graph = helper.make_graph([node], "g", inputs, [vi("out", dtype, ["N", 2, 8])])
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid(onnx_op.DOMAIN, onnx_op.OPSET_VERSION)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


def test_names_agree_with_the_plugin() -> None:
    # TensorRT's parser: op_type == plugin name, string attribute plugin_namespace == plugin namespace,
    # attributes reach the plugin only when named like register()'s parameters.
    assert onnx_op.OP_TYPE == spec.PLUGIN_NAME == "SparseGraphAttention"
    assert onnx_op.PLUGIN_NAMESPACE == spec.PLUGIN_NAMESPACE == "gtcompress"
    assert f"{onnx_op.PLUGIN_NAMESPACE}::{onnx_op.OP_TYPE}" == spec.PLUGIN_ID
    names = [a[0] for a in onnx_op.ATTRIBUTE_SPEC]
    assert tuple(names[: len(spec.ATTRIBUTE_NAMES)]) == spec.ATTRIBUTE_NAMES
    assert names[len(spec.ATTRIBUTE_NAMES) :] == [onnx_op.PLUGIN_NAMESPACE_ATTRIBUTE, onnx_op.AOT_ATTRIBUTE]
    kinds = {int: onnx.AttributeProto.INT, float: onnx.AttributeProto.FLOAT}
    assert [kinds[t] for _, t in spec.ATTRIBUTES] == [a[1] for a in onnx_op.ATTRIBUTE_SPEC[:4]]


def test_register_is_idempotent_and_schema_matches() -> None:
    onnx_op.register_onnx_schema()
    assert onnx_op.register_onnx_schema() is False
    schema = onnx.defs.get_schema(onnx_op.OP_TYPE, onnx_op.OPSET_VERSION, onnx_op.DOMAIN)
    assert [i.name for i in schema.inputs] == list(spec.INPUT_NAMES)
    assert [o.name for o in schema.outputs] == list(spec.OUTPUT_NAMES)
    assert set(schema.attributes) == {a[0] for a in onnx_op.ATTRIBUTE_SPEC}
    assert {a for a in schema.attributes if schema.attributes[a].required} == {"heads", "head_dim", "scale"}


@pytest.mark.parametrize("dtype", [TensorProto.FLOAT, TensorProto.FLOAT16])
def test_checker_accepts_a_node(dtype: int) -> None:
    onnx_op.register_onnx_schema()
    node = onnx_op.make_node(["q", "k", "v", "rowptr", "col", "bias"], ["out"], 2, 8, has_bias=True)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["plugin_namespace"] == b"gtcompress" and attrs["aot"] == 1 and attrs["has_bias"] == 1
    assert attrs["scale"] == pytest.approx(8**-0.5)
    assert node.op_type == "SparseGraphAttention" and node.domain == onnx_op.DOMAIN
    onnx.checker.check_model(_model(node, dtype), full_check=True)


def test_checker_rejects_bad_nodes() -> None:
    onnx_op.register_onnx_schema()
    inputs = ["q", "k", "v", "rowptr", "col", "bias"]
    no_scale = helper.make_node(onnx_op.OP_TYPE, inputs, ["out"], domain=onnx_op.DOMAIN, heads=2, head_dim=8)
    with pytest.raises(onnx.checker.ValidationError, match="scale"):
        onnx.checker.check_model(_model(no_scale), full_check=True)
    node = onnx_op.make_node(inputs, ["out"], 2, 8)
    with pytest.raises(onnx.shape_inference.InferenceError, match="unsupported type: tensor\\(double\\)"):
        onnx.checker.check_model(_model(node, TensorProto.DOUBLE), full_check=True)


def test_make_node_validates() -> None:
    with pytest.raises(PluginSpecError, match="takes inputs"):
        onnx_op.make_node(["q", "k", "v"], ["out"], 2, 8)
    with pytest.raises(PluginSpecError, match="'heads'"):
        onnx_op.make_node(["q", "k", "v", "r", "c", "b"], ["out"], 0, 8)
    assert onnx_op.node_attributes(2, 16, 0.5, False, aot=False) == {
        "heads": 2,
        "head_dim": 16,
        "scale": 0.5,
        "has_bias": 0,
        "plugin_namespace": "gtcompress",
        "aot": 0,
    }
