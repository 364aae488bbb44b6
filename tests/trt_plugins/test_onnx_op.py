"""The ONNX ops: constants that must agree with the TensorRT plugins, the schemas, and the split of
the exported node into the two nodes TensorRT runs."""

from __future__ import annotations

import re

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


@pytest.mark.parametrize("dtype", [TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16])
def test_checker_accepts_a_node(dtype: int) -> None:
    """Every dtype of spec.FLOAT_DTYPES, as the two split ops (bfloat16 was refused by this schema only)."""
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


# --- the two ops TensorRT runs, and the split ---------------------------------------------------------

PARSER_ATTRIBUTES = [onnx_op.PLUGIN_NAMESPACE_ATTRIBUTE, onnx_op.AOT_ATTRIBUTE]


def test_split_names_agree_with_the_plugins() -> None:
    from trt_plugins.tensorrt_plugin import COMBINE_ATTRIBUTES

    assert (onnx_op.PARTIALS_OP_TYPE, onnx_op.COMBINE_OP_TYPE) == (
        "SparseGraphAttentionPartials",
        "SparseGraphAttentionCombine",
    )
    assert f"{onnx_op.PLUGIN_NAMESPACE}::{onnx_op.PARTIALS_OP_TYPE}" == spec.PARTIALS_PLUGIN_ID
    assert f"{onnx_op.PLUGIN_NAMESPACE}::{onnx_op.COMBINE_OP_TYPE}" == spec.COMBINE_PLUGIN_ID
    assert [a[0] for a in onnx_op.PARTIALS_ATTRIBUTE_SPEC] == [*spec.ATTRIBUTE_NAMES, *PARSER_ATTRIBUTES]
    assert [a[0] for a in onnx_op.COMBINE_ATTRIBUTE_SPEC] == [*(n for n, _ in COMBINE_ATTRIBUTES), *PARSER_ATTRIBUTES]


def test_schemas_of_the_split_ops() -> None:
    onnx_op.register_onnx_schema()
    assert onnx_op.register_onnx_schema() is False
    partials = onnx.defs.get_schema(onnx_op.PARTIALS_OP_TYPE, onnx_op.OPSET_VERSION, onnx_op.DOMAIN)
    assert [i.name for i in partials.inputs] == list(spec.INPUT_NAMES)
    assert [(o.name, o.type_str) for o in partials.outputs] == [("out", "T"), ("part", "tensor(float)")]
    assert {a for a in partials.attributes if partials.attributes[a].required} == {"heads", "head_dim", "scale"}
    combine = onnx.defs.get_schema(onnx_op.COMBINE_OP_TYPE, onnx_op.OPSET_VERSION, onnx_op.DOMAIN)
    assert [(i.name, i.type_str) for i in combine.inputs] == [
        ("out_in", "T"),
        ("part", "tensor(float)"),
        ("rowptr", "I"),
    ]
    assert [(o.name, o.type_str) for o in combine.outputs] == [("out", "T")]
    assert set(combine.attributes) == {"heads", "head_dim", *PARSER_ATTRIBUTES}
    single = onnx.defs.get_schema(onnx_op.OP_TYPE, onnx_op.OPSET_VERSION, onnx_op.DOMAIN)
    for schema in (single, partials, combine):  # the plugins take every float dtype of spec.FLOAT_DTYPES
        (floats,) = [c for c in schema.type_constraints if c.type_param_str == "T"]
        assert sorted(floats.allowed_type_strs) == ["tensor(bfloat16)", "tensor(float)", "tensor(float16)"]


def _two_layer_model(node1_name: str = "layer0") -> onnx.ModelProto:
    """Two attentions in a row (the second's queries are the first's output) and an Identity, with
    the exporter's ONNX Runtime fallback function: the shape of an exported model."""
    from exporters.plugin_op import add_plugin_function

    def vi(name: str, elem: int, shape: list) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, elem, shape)

    inputs = ["q", "k", "v", "rowptr", "col", "bias"]
    nodes = [
        onnx_op.make_node(inputs, ["h"], 2, 8, scale=0.25, has_bias=True, name=node1_name),
        onnx_op.make_node(["h", *inputs[1:]], ["att2"], 2, 8),  # unnamed, no bias, default scale
        helper.make_node("Identity", ["att2"], ["out"], name="last"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [vi(x, TensorProto.FLOAT, ["N", 2, 8]) for x in "qkv"]
        + [vi("rowptr", TensorProto.INT32, ["N1"]), vi("col", TensorProto.INT32, ["E"])]
        + [vi("bias", TensorProto.FLOAT, ["E", 2])],
        [vi("out", TensorProto.FLOAT, ["N", 2, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    add_plugin_function(model)
    return model


def _attrs(node: onnx.NodeProto) -> list[tuple[str, object]]:
    return [(a.name, helper.get_attribute_value(a)) for a in node.attribute]


def test_ort_runs_the_exported_model() -> None:
    import onnxruntime as ort
    import torch

    from gtcompress.nn.attention import sparse_attention
    from trt_plugins.csr import edge_index_to_csr

    n, e = 9, 30
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(n, 2, 8, generator=g) for _ in range(3))
    ei = torch.randint(0, n - 1, (2, e), generator=g)  # node n-1 gets no edge
    bias = torch.randn(e, 2, generator=g)
    rowptr, col, perm = edge_index_to_csr(ei, n)
    feeds = {"q": q, "k": k, "v": v, "rowptr": rowptr.int(), "col": col.int(), "bias": bias[perm]}
    sess = ort.InferenceSession(_two_layer_model().SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {name: t.numpy() for name, t in feeds.items()})
    h = sparse_attention(q.double(), k.double(), v.double(), ei, bias.double(), scale=0.25)
    ref = sparse_attention(h, k.double(), v.double(), ei)
    torch.testing.assert_close(torch.from_numpy(out).double(), ref, atol=1e-5, rtol=1e-5)


def test_split_for_tensorrt() -> None:
    model = _two_layer_model()
    before = model.SerializeToString()
    split = onnx_op.split_for_tensorrt(model)
    assert model.SerializeToString() == before  # the input is not modified
    nodes = [(n.domain, n.op_type, n.name, list(n.input), list(n.output)) for n in split.graph.node]
    rest = ["k", "v", "rowptr", "col", "bias"]
    assert nodes == [
        ("gtcompress", "SparseGraphAttentionPartials", "layer0/partials", ["q", *rest], ["h__partial", "h__part"]),
        ("gtcompress", "SparseGraphAttentionCombine", "layer0/combine", ["h__partial", "h__part", "rowptr"], ["h"]),
        (
            "gtcompress",
            "SparseGraphAttentionPartials",
            "att2/partials",
            ["h", *rest],
            ["att2__partial", "att2__part"],
        ),
        (
            "gtcompress",
            "SparseGraphAttentionCombine",
            "att2/combine",
            ["att2__partial", "att2__part", "rowptr"],
            ["att2"],
        ),
        ("", "Identity", "last", ["att2"], ["out"]),
    ]
    p1, c1, p2, c2, _ = split.graph.node
    # register() order, then what the parser reads; a float attribute keeps its float32 value
    assert _attrs(p1) == [
        ("heads", 2),
        ("head_dim", 8),
        ("scale", 0.25),
        ("has_bias", 1),
        ("plugin_namespace", b"gtcompress"),
        ("aot", 1),
    ]
    assert _attrs(p2)[2:4] == [("scale", pytest.approx(8**-0.5)), ("has_bias", 0)]
    assert _attrs(c1) == _attrs(c2) == [("heads", 2), ("head_dim", 8), ("plugin_namespace", b"gtcompress"), ("aot", 1)]
    assert list(split.functions) == []  # ORT's fallback is of no use to TensorRT
    assert [(o.domain, o.version) for o in split.opset_import] == [("", 18), ("gtcompress", 1)]
    onnx.checker.check_model(split, full_check=True)


def test_onnx_runtime_cannot_run_the_split_model() -> None:
    """Why the exported file keeps the single node: only TensorRT has the two ops."""
    import onnxruntime as ort
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    split = onnx_op.split_for_tensorrt(_two_layer_model())
    with pytest.raises(Fail, match=re.escape("gtcompress:SparseGraphAttentionPartials(-1) is not a registered")):
        ort.InferenceSession(split.SerializeToString(), providers=["CPUExecutionProvider"])


def test_split_keeps_aot_zero_and_fills_a_missing_scale() -> None:
    model = _two_layer_model()
    node = model.graph.node[0]
    kept = [a for a in node.attribute if a.name not in ("aot", "scale")]
    del node.attribute[:]
    node.attribute.extend([*kept, helper.make_attribute("aot", 0)])
    p1, c1 = onnx_op.split_for_tensorrt(model).graph.node[:2]
    assert dict(_attrs(p1))["scale"] == pytest.approx(8**-0.5) and dict(_attrs(p1))["aot"] == 0
    assert dict(_attrs(c1))["aot"] == 0


def test_split_leaves_nodes_in_subgraphs_and_keeps_their_function() -> None:
    """Not handled (the exporter puts attentions at the top level): such a node stays whole, and so
    does the function TensorRT would then run it through."""
    model = _two_layer_model()
    inner = onnx_op.make_node(["q", "k", "v", "rowptr", "col", "bias"], ["y"], 2, 8, name="inner")
    then_branch = helper.make_graph([inner], "then", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    else_branch = helper.make_graph(
        [helper.make_node("Identity", ["q"], ["z"])],
        "else",
        [],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
    )
    cond = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
    model.graph.initializer.append(cond)
    model.graph.node.append(helper.make_node("If", ["cond"], ["w"], then_branch=then_branch, else_branch=else_branch))
    split = onnx_op.split_for_tensorrt(model)
    assert [n.op_type for n in split.graph.node] == [
        "SparseGraphAttentionPartials",
        "SparseGraphAttentionCombine",
        "SparseGraphAttentionPartials",
        "SparseGraphAttentionCombine",
        "Identity",
        "If",
    ]
    assert split.graph.node[-1].attribute[1].g.node[0] == inner  # then_branch, untouched
    assert [f.name for f in split.functions] == ["SparseGraphAttention"]


def test_split_refuses_a_name_clash() -> None:
    model = _two_layer_model()
    model.graph.node.append(helper.make_node("Identity", ["q"], ["att2__part"], name="clash"))
    with pytest.raises(
        ValueError, match="node 'att2': cannot split it, the graph already has a tensor named 'att2__part'"
    ):
        onnx_op.split_for_tensorrt(model)


def test_split_validates_the_node() -> None:
    model = _two_layer_model("bad")
    heads = next(a for a in model.graph.node[0].attribute if a.name == "heads")
    heads.i = 0
    with pytest.raises(PluginSpecError, match=re.escape("node 'bad': attribute 'heads' must be an int >= 1, got 0")):
        onnx_op.split_for_tensorrt(model)
    model = _two_layer_model("short")
    del model.graph.node[0].input[5]
    with pytest.raises(PluginSpecError, match=re.escape("node 'short': SparseGraphAttention takes inputs")):
        onnx_op.split_for_tensorrt(model)


def test_split_of_an_exported_model(tmp_path) -> None:
    """A model exported with the plugin lowering: every attention becomes the two plugin nodes, the
    result passes the checker, and the exported file (which ONNX Runtime ran to verify the export)
    keeps the single node."""
    import torch

    from exporters.onnx import export_onnx
    from gtcompress.data.base import FeatureSpec
    from gtcompress.models import ModelConfig, build_model

    torch.manual_seed(0)
    config = ModelConfig(
        arch="gt",
        node_features=FeatureSpec("categorical", 2, [5, 3]),
        edge_features=FeatureSpec("float", 2),
        out_dim=3,
        hidden=16,
        heads=2,
        num_layers=2,
        pe={},
        task_level="graph",
    )
    res = export_onnx(build_model(config).eval(), tmp_path / "m.onnx", "plugin", verify_batches=2)
    assert res.batches_checked == 2 and res.max_abs_err <= 1e-4
    exported = onnx.load(str(res.path))
    ops = [n.op_type for n in exported.graph.node if n.domain == onnx_op.DOMAIN]
    assert ops == ["SparseGraphAttention"] * 2
    split = onnx_op.split_for_tensorrt(exported)
    onnx.checker.check_model(split, full_check=True)
    assert [n.op_type for n in split.graph.node if n.domain == onnx_op.DOMAIN] == [
        "SparseGraphAttentionPartials",
        "SparseGraphAttentionCombine",
    ] * 2
    assert len(split.graph.node) == len(exported.graph.node) + 2 and list(split.functions) == []
