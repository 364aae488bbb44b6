"""Export parity (ONNX Runtime vs PyTorch) for every model and lowering, dense and compressed."""

import json
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from exporters.onnx import (
    ExportError,
    ExportResult,
    _Traced,
    export_onnx,
    read_metadata,
    to_torch,
)
from exporters.opsupport import tensorrt_problems
from gtcompress.data.base import FeatureSpec
from gtcompress.errors import ConfigError
from gtcompress.models import LayerSpec, ModelConfig, build_model
from gtcompress.preprocess import NumpyGraph, union_graphs
from gtcompress.preprocess.inputs import build_inputs
from gtcompress.preprocess.random_graphs import EDGE_CASES, edge_case_batches

CAT = FeatureSpec("categorical", 2, [5, 3])
FLOAT_EDGES = FeatureSpec("float", 2)


def _model(arch: str, compressed: bool, task_level: str = "node", edge=FLOAT_EDGES):
    torch.manual_seed(0)
    layers = [LayerSpec(heads=1, ffn_dim=24), LayerSpec(heads=0, ffn_dim=64), LayerSpec(heads=3, ffn_dim=0)]
    cfg = ModelConfig(
        arch=arch,
        node_features=CAT,
        edge_features=edge,
        out_dim=3,
        hidden=32,
        heads=4,
        num_layers=2,
        pe={"rwse": 4},
        task_level=task_level,
        layers=layers if compressed else [],
    )
    model = build_model(cfg)
    model.train()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


#: (arch, lowering, compressed, task level, edge features): models without edge features take the
#: attention paths without a score bias (the ``E = 0`` failure of scatter once differed there).
#: The ``slow`` ones have a twin of the same architecture and lowering in the default run.
CASES = [
    ("gt", "scatter", False, "node", True),
    ("gt", "scatter", True, "graph", False),
    ("gt", "padded", True, "graph", True),
    ("gt", "dense", False, "graph", True),
    pytest.param("gt", "dense", True, "node", True, marks=pytest.mark.slow),
    ("gt", "plugin", False, "node", False),
    ("gt", "plugin", True, "graph", True),
    pytest.param("gps", "dense", False, "graph", True, marks=pytest.mark.slow),
    ("gps", "dense", True, "node", True),
    pytest.param("graphormer", "dense", False, "node", True, marks=pytest.mark.slow),
    ("graphormer", "dense", True, "graph", True),
]
PARAMS = ("arch", "lowering", "compressed", "level", "edges")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Callable[..., tuple[torch.nn.Module, ExportResult]]:
    """Each of CASES exported once per module run, shared by every test that reads the files (an export
    takes seconds on 2 cores; the suite must stay about a minute)."""
    cache: dict[tuple, tuple[torch.nn.Module, ExportResult]] = {}

    def get(
        arch: str, lowering: str, compressed: bool, level: str, edges: bool = True
    ) -> tuple[torch.nn.Module, ExportResult]:
        key = (arch, lowering, compressed, level, edges)
        if key not in cache:
            model = _model(arch, compressed, level, FLOAT_EDGES if edges else None)
            path = tmp_path_factory.mktemp("export") / "model.onnx"
            cache[key] = model, export_onnx(model, path, lowering, metadata={"compression": {"kept": 0.5}})
        return cache[key]

    return get


@pytest.mark.parametrize(PARAMS, CASES)
def test_export_parity_and_tensorrt_ops(
    exported, arch: str, lowering: str, compressed: bool, level: str, edges: bool
) -> None:
    model, res = exported(arch, lowering, compressed, level, edges)
    path = res.path
    assert res.batches_checked >= 10 and res.max_abs_err <= 1e-4
    assert res.edge_cases == list(EDGE_CASES)  # every lowering ran on every edge case before the file appeared
    assert res.tensorrt_problems == []
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    ops = {(n.domain, n.op_type) for n in proto.graph.node}
    assert ("", "ScatterND") not in ops or all(
        a.s in (b"", b"none")
        for n in proto.graph.node
        if n.op_type == "ScatterND"
        for a in n.attribute
        if a.name == "reduction"
    )
    if lowering == "plugin":
        assert ("gtcompress", "SparseGraphAttention") in ops or any(d == "gtcompress" for d, _ in ops)
        node = next(n for n in proto.graph.node if n.domain == "gtcompress")
        assert {a.name for a in node.attribute} >= {"plugin_namespace", "heads", "head_dim", "scale"}
        assert any(f.domain == "gtcompress" for f in proto.functions)  # ORT's fallback
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    assert dims["x"] == ["num_nodes", 2] and dims["edge_index"] == [2, "num_edges"]
    meta = read_metadata(path)
    assert json.loads(meta["model_config"])["layers"] == [vars(s) for s in model.config.layers]
    assert json.loads(meta["input_spec"])["lowering"] == lowering
    assert json.loads(meta["compression"]) == {"kept": 0.5}
    assert meta["gtcompress_version"]


@pytest.mark.parametrize(PARAMS, CASES)
def test_edge_case_requests_match_pytorch(
    exported, arch: str, lowering: str, compressed: bool, level: str, edges: bool
) -> None:
    """What ``gtc serve`` runs: a whole request without edges (5 nodes, ``edge_index [2, 0]``), a lone
    1-node graph, isolated nodes, duplicates and self-loops, through :class:`GraphSession` on ONNX
    Runtime, equal to PyTorch on the same inputs. The scatter and plugin lowerings once failed here
    (ONNX Runtime ignores a negative ReduceSum axis on an empty tensor)."""
    from runtime.session import GraphSession

    model, res = exported(arch, lowering, compressed, level, edges)
    sess = GraphSession(res.path, ["CPUExecutionProvider"])
    traced = _Traced(model, res.spec)
    for case, g in edge_case_batches(res.spec.x, res.spec.edge_attr):
        inputs = sess.prepare([g]).inputs
        out = sess.run_inputs(inputs)["output"]
        with torch.no_grad():
            ref = traced(*to_torch(inputs)).numpy()
        assert out.shape == ref.shape, case
        assert np.abs(out - ref).max() <= 1e-4, case


def test_issue_request_edgeless_five_nodes(exported) -> None:
    """The reported request itself (5 nodes, ``edge_index [2, 0]``) per graph through ``GraphSession.run``
    on every scatter and plugin export (with and without edge features), equal to PyTorch."""
    from runtime.session import GraphSession

    rng = np.random.default_rng(3)
    x = np.stack([rng.integers(0, 5, 5), rng.integers(0, 3, 5)], axis=1)
    for case in (c for c in CASES if not hasattr(c, "marks") and c[1] in ("scatter", "plugin")):
        model, res = exported(*case)
        attr = np.zeros((0, 2), np.float32) if res.spec.edge_attr else None
        g = NumpyGraph(x=x, edge_index=np.zeros((2, 0), np.int64), edge_attr=attr)
        (out,) = GraphSession(res.path, ["CPUExecutionProvider"]).run(g)
        with torch.no_grad():
            ref = _Traced(model, res.spec)(*to_torch(build_inputs(g, res.spec))).numpy()
        np.testing.assert_allclose(out, ref[0] if res.spec.task_level == "graph" else ref, atol=1e-5, err_msg=case)


def test_verify_parity_reports_error_and_output_scale(exported, tmp_path) -> None:
    """Export checks the error against atol x max(1, |output|): verify_parity reports both."""
    from exporters.onnx import verify_parity
    from gtcompress.preprocess.random_graphs import random_batches

    model, res = exported("gt", "dense", False, "graph")  # a file of CASES, exported once
    batches = random_batches(res.spec.x, res.spec.edge_attr, 3)
    err, scale, n = verify_parity(res.path, model, res.spec, batches)
    traced = _Traced(model, res.spec)
    with torch.no_grad():
        ref = max(float(traced(*to_torch(build_inputs(g, res.spec))).abs().max()) for g in batches)
    assert n == 3 and 0.0 <= err <= 1e-4
    assert scale == pytest.approx(ref, rel=1e-6)

    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(res.path))  # a weight corrupted to NaN: the error was max(0.0, nan) = 0.0
    init = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    init.CopyFrom(numpy_helper.from_array(np.full_like(numpy_helper.to_array(init), np.nan), init.name))
    onnx.save(proto, str(tmp_path / "nan.onnx"))
    err, _, _ = verify_parity(tmp_path / "nan.onnx", model, res.spec, batches)
    assert np.isnan(err)


def test_failed_verification_writes_nothing(tmp_path) -> None:
    """A file that fails its check never appears (nor its temp); the error names the target, the lowering,
    the first case checked (a batch of edgeless graphs) and the max |difference|."""
    path = tmp_path / "model.onnx"
    with pytest.raises(ExportError) as info:
        export_onnx(_model("gt", False), path, "scatter", atol=-1.0, verify_batches=2)
    number = r"(?:\d+(?:\.\d+)?(?:e[-+]\d+)?)"
    expected = (
        re.escape(f"{path}: the 'scatter' lowering fails its check on a batch of edgeless graphs: ")
        + re.escape("max |ONNX Runtime - PyTorch| = ")
        + number
        + re.escape(" > -1 x max(1, max |PyTorch output| = ")
        + number
        + re.escape(") — not written")
    )
    assert re.fullmatch(expected, str(info.value)), str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_check_names_the_case_onnx_runtime_raises_on(exported, monkeypatch) -> None:
    """A case ONNX Runtime cannot run fails the check with its error, named (a server would answer 500)."""
    import onnxruntime as ort

    from exporters.onnx import check_parity

    model, res = exported("gt", "scatter", False, "node")
    real_run = ort.InferenceSession.run

    def run(self: ort.InferenceSession, output_names: Any, feed: dict[str, np.ndarray], *args: Any, **kw: Any) -> Any:
        if feed["x"].shape[0] == 1 and feed["edge_index"].shape[1] == 0:
            raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : injected\nsecond line")
        return real_run(self, output_names, feed, *args, **kw)

    monkeypatch.setattr(ort.InferenceSession, "run", run)
    cases = edge_case_batches(res.spec.x, res.spec.edge_attr)
    assert check_parity(res.path, model, res.spec, cases[:2]) <= 1e-4  # edgeless batches of 9 and 5 nodes pass
    with pytest.raises(ExportError) as info:
        check_parity(res.path, model, res.spec, cases, label="gt.onnx")
    assert str(info.value) == (
        "gt.onnx: the 'scatter' lowering fails its check on a lone 1-node graph: "
        "ONNX Runtime raised [ONNXRuntimeError] : 1 : FAIL : injected"
    )


def test_edge_case_batches_are_what_they_say() -> None:
    spec = {"kind": "categorical", "dim": 2, "cardinalities": [5, 3]}
    cases = dict(edge_case_batches(spec, {"kind": "float", "dim": 2, "cardinalities": []}))
    assert list(cases) == list(EDGE_CASES)
    edgeless = cases["a batch of edgeless graphs"]
    assert edgeless.num_edges == 0 and edgeless.num_graphs > 1 and edgeless.edge_attr.shape == (0, 2)
    assert (cases["a lone edgeless graph"].num_nodes, cases["a lone edgeless graph"].num_edges) == (5, 0)
    assert (cases["a lone 1-node graph"].num_nodes, cases["a lone 1-node graph"].num_edges) == (1, 0)
    assert cases["a 1-node graph with a self-loop"].edge_index.tolist() == [[0], [0]]
    iso = cases["isolated nodes"]
    assert iso.num_edges > 0 and set(range(iso.num_nodes)) - set(iso.edge_index.ravel().tolist())
    rep = cases["duplicate edges and self-loops"]
    pairs = [tuple(e) for e in rep.edge_index.T.tolist()]
    assert len(set(pairs)) < len(pairs) and any(s == d for s, d in pairs)
    assert all(g.batch is None for name, g in cases.items() if name != "a batch of edgeless graphs")


def test_lowering_errors(tmp_path) -> None:
    """Refusals say what the model really uses (a sparsified GPS does not use full attention)."""
    from gtcompress.compress.attention_graph import with_attention_topk

    never = tmp_path / "never.onnx"
    with pytest.raises(ConfigError, match="unknown attention lowering 'sparse'"):
        export_onnx(_model("gt", False), never, "sparse")
    cases = [
        (_model("gps", False), "gps uses full attention per graph, on the per-graph padded layout"),
        (
            _model("graphormer", False),
            "graphormer uses full attention per graph with shortest-path biases, on the per-graph padded layout",
        ),
        (
            with_attention_topk(_model("gps", True), 4, "degree"),
            "gps with attention_topk=4 attends over a sparsified attention graph (input edges, self-loops and each "
            "graph's top-4 nodes by degree score) that it builds inside the model on the per-graph padded layout",
        ),
    ]
    for model, uses in cases:
        with pytest.raises(ConfigError) as info:
            export_onnx(model, never, "plugin")
        assert str(info.value) == f"{uses}: only the 'dense' lowering applies; got 'plugin'"
    assert list(tmp_path.iterdir()) == []


def test_a_directory_is_not_an_output_file(tmp_path) -> None:
    with pytest.raises(ConfigError) as info:
        export_onnx(_model("gt", False), tmp_path, "dense")
    assert str(info.value) == f"{tmp_path}: is a directory; give the ONNX file to write, e.g. {tmp_path}/model.onnx"
    assert list(tmp_path.iterdir()) == []


def _sbm_like(rng) -> NumpyGraph:
    gs = []
    for _ in range(32):
        n = int(rng.integers(100, 140))
        a = rng.random((n, n)) < 0.3
        src, dst = np.nonzero(a)
        gs.append(NumpyGraph(np.zeros((n, 2), np.int64), np.stack([src, dst])))
    return union_graphs(gs)


def test_auto_picks_dense_for_small_dense_graphs_and_padded_for_big_sparse_ones() -> None:
    from gtcompress.preprocess.spec import Lowering, choose_lowering, estimate_costs

    rng = np.random.default_rng(0)
    assert choose_lowering("gt", profile=_sbm_like(rng)) is Lowering.DENSE
    n = 100_000
    big = NumpyGraph(np.zeros((n, 2), np.int64), rng.integers(0, n, (2, 10 * n)))
    costs = estimate_costs(big)
    assert costs[Lowering.PADDED] < costs[Lowering.SCATTER] < costs[Lowering.DENSE]
    assert choose_lowering("gt", profile=big) is Lowering.PADDED
    assert choose_lowering("gt", profile=lambda: big) is Lowering.PADDED  # a profile loaded only when needed
    assert choose_lowering("gps", profile=big) is Lowering.DENSE
    assert choose_lowering("gt", token_pruned=True, profile=big) is Lowering.DENSE
    assert choose_lowering("gt", device="cuda:0", profile=big) is Lowering.PLUGIN


def test_op_support_check_flags_scatternd_reduction() -> None:
    from onnx import helper

    node = helper.make_node("ScatterND", ["a", "i", "u"], ["o"], reduction="add", name="bad")
    graph = helper.make_graph([node], "g", [], [])
    problems = tensorrt_problems(helper.make_model(graph))
    assert problems == ["node 'bad': ScatterND with a reduction is rejected by TensorRT (use scatter_add)"]
    unknown = helper.make_graph([helper.make_node("Foo", [], ["o"], domain="x", name="f")], "g", [], [])
    assert "custom op x::Foo has no TensorRT plugin" in tensorrt_problems(helper.make_model(unknown))[0]


@pytest.mark.parametrize("arch", ["gt", pytest.param("gps", marks=pytest.mark.slow)])
def test_token_pruned_models_export_with_ties(tmp_path, arch: str) -> None:
    """Token selection must match after export: ties among identical nodes, and k_b computed in
    integer arithmetic (float32 vs float64 once disagreed on 5 · 0.7 + 0.5)."""
    torch.manual_seed(1)
    layers = [LayerSpec(heads=2, ffn_dim=16, token_keep=0.5), LayerSpec(heads=4, ffn_dim=16, token_keep=0.7)]
    cfg = ModelConfig(
        arch=arch, node_features=FeatureSpec("categorical", 1, [2]), out_dim=2, hidden=16, heads=4, layers=layers
    )
    model = build_model(cfg).eval()
    res = export_onnx(model, tmp_path / "m.onnx", "auto", verify_batches=10)
    assert res.lowering == "dense" and res.max_abs_err <= 1e-4
    if arch == "gt":
        with pytest.raises(ConfigError, match="token-pruned model exports with the 'dense' lowering only"):
            export_onnx(model, tmp_path / "n.onnx", "plugin")


@pytest.mark.parametrize(
    ("arch", "edges"),
    [
        pytest.param("gt", False, marks=pytest.mark.slow),
        ("gt", True),
        ("graphormer", False),
        pytest.param("graphormer", True, marks=pytest.mark.slow),
    ],
)
def test_a_token_ratio_keeping_one_node_of_the_export_example_serves_larger_graphs(
    tmp_path, arch: str, edges: bool
) -> None:
    """Keep 0.1 keeps one token of the export's largest example graph (9 nodes), so the traced gathered
    bias had one query row, and the export took the per-key bias path for every input: ONNX Runtime
    refused (MatMul dimension mismatch) every graph keeping two tokens or more, at export's check
    (keep 0.1, graphs of 15 nodes up) or, past the check's sizes (keep 0.01: 150 nodes up), when served.
    With edge features a Graphormer sums each edge's bias into the kept pairs' ``[B*L'*L', H]``, and a
    GT merges it there by log-sum-exp."""
    from gtcompress.graph import GraphBatch
    from gtcompress.preprocess.random_graphs import random_graph
    from runtime.session import GraphSession

    torch.manual_seed(0)
    layers = [LayerSpec(heads=2, ffn_dim=16, token_keep=0.1), LayerSpec(heads=2, ffn_dim=16, token_keep=0.01)]
    cfg = ModelConfig(
        arch=arch,
        node_features=FeatureSpec("float", 3),
        edge_features=FLOAT_EDGES if edges else None,
        out_dim=2,
        hidden=16,
        heads=2,
        layers=layers,
    )
    model = build_model(cfg).eval()
    res = export_onnx(model, tmp_path / "m.onnx", "dense")
    assert res.max_abs_err <= 1e-4
    rng = np.random.default_rng(0)
    # tokens the two layers keep: 4 and 1, 16 and 2, 1 and 1
    graphs = [random_graph(rng, n, 3 * n, res.spec.x, res.spec.edge_attr) for n in (40, 160, 3)]
    outs = GraphSession(res.path).run(graphs)
    for g, out in zip(graphs, outs, strict=True):
        with torch.no_grad():
            ref = model(GraphBatch.from_numpy(g)).numpy()
        assert out.shape == ref.shape
        np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)


# GT's twin, a token-pruned GT without edge features, is also tests/exporters/test_onnx_token_bias.py's
# (its softmaxes checked there, on its export): the default run exports that model once
@pytest.mark.parametrize(("arch", "lifted"), [pytest.param("gt", True, marks=pytest.mark.slow), ("gps", False)])
def test_token_pruned_layers_lift_masked_scores_where_the_bias_is_a_graph(tmp_path, arch: str, lifted: bool) -> None:
    """A token-pruned GT's kept tokens attend over the input edges, most pairs masked: exported without the
    masked-score lift of ``dense_attention``, ONNX Runtime CPU ran their Softmax through float32 denormals
    (a token-pruned GT slower than its dense parent, ``bench/HISTORY.md``). The lift is a Max of the scores
    and a floor ahead of each Softmax. GPS's kept tokens mask only padding and keep the plain softmax."""
    torch.manual_seed(0)
    layers = [LayerSpec(heads=2, ffn_dim=16, token_keep=0.5), LayerSpec(heads=2, ffn_dim=16, token_keep=0.8)]
    cfg = ModelConfig(arch=arch, node_features=FeatureSpec("float", 3), out_dim=2, hidden=16, heads=2, layers=layers)
    res = export_onnx(build_model(cfg).eval(), tmp_path / "m.onnx", "dense", verify_batches=2)
    graph = onnx.load(str(res.path)).graph
    producer = {out: node.op_type for node in graph.node for out in node.output}
    softmax_inputs = [producer[node.input[0]] for node in graph.node if node.op_type == "Softmax"]
    assert softmax_inputs == (["Max", "Max"] if lifted else ["MatMul", "MatMul"])


def _tiny_onnx_bytes() -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [x])
    graph.output[0].name = "y"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    helper.set_model_props(model, {"input_spec": "{}"})
    return model.SerializeToString()


def test_read_metadata_names_a_bad_file_instead_of_a_protobuf_error(tmp_path) -> None:
    """Before: a truncated or non-ONNX file raised google.protobuf DecodeError without the path."""
    from gtcompress.errors import ModelFileError

    data = _tiny_onnx_bytes()
    good = tmp_path / "good.onnx"
    good.write_bytes(data)
    assert read_metadata(good) == {"input_spec": "{}"}
    cases = {
        "trunc.onnx": (data[:-3], "not a valid ONNX model (protobuf decode failed: Error parsing message"),
        "junk.onnx": (b"\xff" * 15, "not a valid ONNX model (protobuf decode failed: Error parsing message"),
        "empty.onnx": (b"", "not a valid ONNX model (the file is empty)"),
        # cut after the first field: decodes, but to a model with no graph (and no metadata)
        "head.onnx": (data[:2], "not a valid ONNX model (it holds no graph; truncated?)"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ModelFileError) as e:
            read_metadata(tmp_path / name)
        assert str(e.value).startswith(f"{tmp_path / name}: {message}"), name
    with pytest.raises(ModelFileError, match=re.escape(f"{tmp_path / 'missing.onnx'}: file does not exist")):
        read_metadata(tmp_path / "missing.onnx")
    with pytest.raises(ModelFileError, match=re.escape(f"{tmp_path}: is a directory, not an ONNX file")):
        read_metadata(tmp_path)


def test_export_leaves_the_model_in_the_mode_it_was_in(tmp_path) -> None:
    """Export traces and checks in eval mode, but the model is the caller's: one exported between
    training epochs must go on training (BatchNorm statistics, dropout), and a submodule the caller
    keeps in eval (a frozen norm) must stay so. Export used to leave every module in eval mode."""
    from exporters.onnx import check_parity, verify_parity
    from gtcompress.preprocess.random_graphs import random_batches

    model = _model("gt", compressed=False).train()
    frozen = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d))
    frozen.eval()
    before = {name: m.training for name, m in model.named_modules()}
    assert any(before.values()) and not all(before.values())
    res = export_onnx(model, tmp_path / "m.onnx", "scatter", verify_batches=1)
    assert {name: m.training for name, m in model.named_modules()} == before
    batches = random_batches(res.spec.x, res.spec.edge_attr, 1)
    assert check_parity(res.path, model, res.spec, [("b", batches[0])]) <= 1e-4
    assert verify_parity(res.path, model, res.spec, batches)[0] <= 1e-4
    assert {name: m.training for name, m in model.named_modules()} == before


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_a_model_that_is_not_float32_is_refused_by_name(tmp_path, dtype: torch.dtype) -> None:
    """from_pyg keeps a PyG model's dtype; exporting a float64 model failed inside ONNX shape inference
    ("B has inconsistent type tensor(double)" on a Gemm node). Now one ConfigError, before tracing."""
    model = _model("gt", compressed=False).to(dtype)
    with pytest.raises(ConfigError) as e:
        export_onnx(model, tmp_path / "m.onnx", "scatter", verify_batches=1)
    name = str(dtype).removeprefix("torch.")
    assert str(e.value) == (
        f"node_encoder.embeddings.0.weight is {name}: ONNX export writes float32 models (inputs, weights and "
        "output); convert the model first with model.float()"
    )
    assert not (tmp_path / "m.onnx").exists()
    res = export_onnx(model.float(), tmp_path / "m.onnx", "scatter", verify_batches=1)
    assert res.max_abs_err <= 1e-4


def test_sparsified_gps_exports_as_masked_padded_attention(tmp_path) -> None:
    """A GPS from ``gtc sparsify --attention-topk`` exported its attention over the listed pairs
    (NonZero, then Gather + ScatterElements per layer): 14x the dense GPS's time on ONNX Runtime CPU at
    16 graphs of 128 nodes. It now exports as the padded attention with its graph as a mask, and gives
    the answers of the pair path on every edge case and on random batches."""
    from dataclasses import replace

    from gtcompress.compress.attention_graph import with_attention_topk
    from gtcompress.preprocess.random_graphs import random_batches
    from runtime.session import GraphSession

    model = with_attention_topk(_model("gps", True, "graph"), 2, "teddy").eval()
    pairs = build_model(replace(model.config, attention_layout="sparse")).eval()
    pairs.load_state_dict(model.state_dict())
    res = export_onnx(model, tmp_path / "sa.onnx", "dense", verify_batches=3)
    proto = onnx.load(str(res.path))
    ops = [n.op_type for n in proto.graph.node]
    assert "NonZero" not in ops and ops.count("Softmax") == 2  # one per attending layer, no pair list
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    assert dims["x"] == ["num_nodes", 2] and dims["edge_index"] == [2, "num_edges"]
    sess = GraphSession(res.path, ["CPUExecutionProvider"])
    traced = _Traced(pairs, res.spec)
    cases = [*edge_case_batches(res.spec.x, res.spec.edge_attr)]
    cases += [("random", g) for g in random_batches(res.spec.x, res.spec.edge_attr, 3)]
    for case, g in cases:
        inputs = sess.prepare([g]).inputs
        with torch.no_grad():
            ref = traced(*to_torch(inputs)).numpy()
        assert np.abs(sess.run_inputs(inputs)["output"] - ref).max() <= 1e-4, case
