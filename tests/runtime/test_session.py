"""GraphSession: parity with PyTorch, validation errors, TEDDY, providers, no torch import."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from gtcompress.errors import GraphValidationError, GTCompressError
from gtcompress.graph import GraphBatch, collate
from gtcompress.preprocess import NumpyGraph, union_graphs
from gtcompress.preprocess.teddy import teddy_sparsify
from runtime.client import prepare_request, raw_request
from runtime.errors import (
    BatchVectorError,
    CategoryError,
    DTypeError,
    EdgeIndexError,
    GraphTooLargeError,
    NonFiniteError,
    SessionError,
    ShapeError,
)
from runtime.graphs import Limits
from runtime.session import GraphSession

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("key", ["node", "graph"])
def test_parity_with_pytorch_per_graph(exported, key: str) -> None:
    ex = exported[key]
    sess = GraphSession(ex.path, ["cpu"])
    graphs = ex.graphs(6, seed=1)
    outs = sess.run(graphs)
    assert len(outs) == len(graphs)
    for g, out in zip(graphs, outs, strict=True):
        ref = ex.torch_output(g)
        if key == "node":
            assert out.shape == (g.num_nodes, 3)
        else:
            assert out.shape == (2,)
            ref = ref[0]
        np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_union_item_and_single_graph(exported, node_sess) -> None:
    ex = exported["node"]
    graphs = ex.graphs(4, seed=2)
    single = node_sess.run(graphs[0])
    assert len(single) == 1 and single[0].shape == (graphs[0].num_nodes, 3)
    union = union_graphs(graphs[1:])
    outs = node_sess.run([graphs[0], union])
    np.testing.assert_allclose(outs[0], single[0], atol=1e-5)
    np.testing.assert_allclose(outs[1], np.concatenate(node_sess.run(graphs[1:])), atol=1e-5)
    gsess = GraphSession(exported["graph"].path)
    g_outs = gsess.run([exported["graph"].graphs(1)[0], union_graphs(exported["graph"].graphs(3, seed=5))])
    assert g_outs[0].shape == (2,) and g_outs[1].shape == (3, 2)


def test_prepare_then_run_inputs_equals_run(exported, node_sess) -> None:
    graphs = exported["node"].graphs(3, seed=3)
    prepared = node_sess.prepare(graphs)
    assert list(prepared.inputs) == node_sess.input_names
    assert prepared.nodes == [g.num_nodes for g in graphs] and prepared.graphs == [1, 1, 1]
    out = node_sess.run_inputs(prepared.inputs)["output"]
    np.testing.assert_allclose(out, np.concatenate(node_sess.run(graphs)), atol=1e-6)


def test_a_graph_without_nodes_is_refused_on_both_request_paths(exported) -> None:
    """A raw-graph request (the server pre-processes) refuses a graph without nodes as the
    pre-processing path does, instead of sending a union the server reads as fewer graphs."""
    ex = exported["graph"]
    empty = NumpyGraph(
        np.zeros((0, ex.spec.x.dim), np.float32), np.zeros((2, 0), np.int64), np.zeros((0, 2), np.float32)
    )
    graphs = [*ex.graphs(2, seed=6), empty]
    for make in (raw_request, prepare_request):
        with pytest.raises(ShapeError, match=r"^input 'x': graph 2: a graph needs at least one node$"):
            make(graphs, ex.spec)


def test_a_union_ending_in_a_graph_without_nodes_is_refused(exported) -> None:
    """union_graphs and GraphBatch.to_numpy count graphs without nodes at a union's end, which its batch
    vector cannot name; validation dropped the count, and a graph-level model answered 1 row for 2 graphs."""
    ex = exported["graph"]
    sess = GraphSession(ex.path, ["cpu"])
    empty = NumpyGraph(np.zeros((0, ex.spec.x.dim), np.float32), np.zeros((2, 0), np.int64))
    union = union_graphs([ex.graphs(1, seed=7)[0], empty])
    assert union.num_graphs == 2
    msg = r"^input 'x': graph 1 of the union has no nodes \(it counts 2 graphs, its batch vector names 1\); "
    for make in (sess.run, lambda u: prepare_request(u, ex.spec), lambda u: raw_request([u], ex.spec)):
        with pytest.raises(ShapeError, match=msg):
            make(union)
    as_torch = GraphBatch.from_numpy(union)  # a batch object's num_graphs counts the empty graph too
    with pytest.raises(ShapeError, match=msg):
        sess.run(as_torch)
    with pytest.raises(ShapeError, match=r"^input 'x': graph 1: graph 1 of the union has no nodes"):
        sess.run([ex.graphs(1, seed=8)[0], union])
    assert len(sess.run(union_graphs([ex.graphs(1, seed=7)[0], ex.graphs(1, seed=8)[0]]))[0]) == 2


def test_raw_requests_are_in_the_models_dtypes_like_the_preprocessed_ones(exported) -> None:
    """raw_request (the Python-backend Triton variant and gtc serve) sent x and edge_attr as given:
    float64 features were refused by the server (FP64 for an FP32 input) and lists crashed, while
    GraphSession and the native variant's request took the same graphs."""
    ex = exported["node"]
    g = ex.graphs(1, seed=3)[0]
    as64 = {"x": g.x.tolist(), "edge_index": g.edge_index.tolist(), "edge_attr": g.edge_attr.astype(np.float64)}
    raw, _, _ = raw_request([as64, as64], ex.spec)
    pre = prepare_request([as64, as64], ex.spec)
    assert {k: raw[k].dtype for k in raw} == {"x": np.int64, "edge_index": np.int64, "edge_attr": np.float32,
                                              "batch": np.int64}  # fmt: skip
    for name in ("x", "edge_attr"):
        assert raw[name].dtype == pre.inputs[name].dtype
    with pytest.raises(ShapeError, match=r"^input 'x': no graphs given$"):
        raw_request([], ex.spec)


def test_a_graph_without_edges_may_be_written_as_lists(exported, node_sess) -> None:
    """numpy reads an empty list as float64: a graph without edges sent as lists ([[], []] or [], edge
    features []) was refused with "expected integer node ids (int64), got float64"."""
    ex = exported["node"]
    x = [[1, 2], [0, 1], [4, 0]]
    typed = NumpyGraph(np.array(x), np.zeros((2, 0), np.int64), np.zeros((0, 2), np.float32))
    want = node_sess.run(typed)[0]
    for ei in ([[], []], []):
        for ea in ([], np.zeros((0, 2))):
            listed = {"x": x, "edge_index": ei, "edge_attr": ea}
            np.testing.assert_array_equal(node_sess.run(listed)[0], want)
            inputs = prepare_request([listed, listed], ex.spec).inputs
            assert inputs["edge_index"].dtype == np.int64 and inputs["edge_index"].shape == (2, 0)
            assert inputs["edge_attr"].dtype == np.float32 and inputs["edge_attr"].shape == (0, 2)
    with pytest.raises(ShapeError, match=r"^input 'edge_index': expected shape \[2, num_edges\], got \[3, 0\]$"):
        node_sess.run({"x": x, "edge_index": np.zeros((3, 0)), "edge_attr": []})
    with pytest.raises(DTypeError, match=r"^input 'edge_index': expected integer node ids \(int64\), got float64$"):
        node_sess.run({"x": x, "edge_index": [[0.0], [1.0]], "edge_attr": [[0.5, 0.5]]})


def test_accepts_pyg_like_objects_with_torch_tensors(exported, node_sess) -> None:
    g = exported["node"].graphs(1, seed=4)[0]
    data = SimpleNamespace(
        x=torch.from_numpy(g.x), edge_index=torch.from_numpy(g.edge_index), edge_attr=torch.from_numpy(g.edge_attr)
    )
    np.testing.assert_allclose(node_sess.run(data)[0], node_sess.run(g)[0], atol=1e-6)


def test_description(node_sess) -> None:
    assert node_sess.providers == ["CPUExecutionProvider"]  # no NVIDIA device here → CPU only
    assert node_sess.platform == "onnxruntime_onnx"
    assert [t.name for t in node_sess.get_inputs()] == node_sess.input_names
    assert node_sess.get_outputs()[0].shape == [-1, 3]
    assert "dense" in repr(node_sess)


def _bad(g: NumpyGraph, **kw) -> NumpyGraph:
    d = {"x": g.x, "edge_index": g.edge_index, "edge_attr": g.edge_attr, "batch": g.batch, "pe": g.pe}
    d.update(kw)
    return NumpyGraph(**d)


def test_validation_errors_are_specific(exported, node_sess) -> None:
    g = exported["node"].graphs(1, seed=6, lo=6)[0]
    g = _bad(g, edge_index=np.concatenate([g.edge_index, [[0], [1]]], axis=1), edge_attr=None)
    g = _bad(g, edge_attr=np.ones((g.num_edges, 2), np.float32))
    n, e = g.num_nodes, g.num_edges
    cases = [
        (_bad(g, x=g.x.astype(np.float32)), DTypeError, "categorical features must be integers"),
        (_bad(g, x=g.x[:, :1]), ShapeError, "expected 2 feature columns"),
        (_bad(g, x=np.concatenate([g.x[:, :1], np.full((n, 1), 3)], axis=1)), CategoryError, "outside [0, 3)"),
        (_bad(g, x=np.zeros((0, 2), np.int64), edge_index=np.zeros((2, 0), np.int64)), ShapeError, "at least one"),
        (_bad(g, edge_index=g.edge_index.astype(np.float32)), DTypeError, "integer node ids"),
        (_bad(g, edge_index=g.edge_index[:1]), ShapeError, "[2, num_edges]"),
        (_bad(g, edge_index=g.edge_index + n), EdgeIndexError, "out of range"),
        (_bad(g, edge_index=g.edge_index - n), EdgeIndexError, "negative"),
        (_bad(g, edge_attr=None), ShapeError, "needs edge features"),
        (_bad(g, edge_attr=np.ones((e + 1, 2), np.float32)), ShapeError, f"but the graph has {e} edges"),
        (_bad(g, edge_attr=np.full((e, 2), np.nan, np.float32)), NonFiniteError, "non-finite"),
        (_bad(g, batch=np.arange(n)[::-1].copy()), BatchVectorError, "start at 0"),
        (_bad(g, batch=np.r_[np.zeros(n - 1, np.int64), 2]), BatchVectorError, "consecutive"),
        (_bad(g, pe={"rwse": np.zeros((n, 3), np.float32)}), ShapeError, "pe_rwse"),
    ]
    for bad, cls, text in cases:
        with pytest.raises(cls) as info:
            node_sess.run(bad)
        assert text in str(info.value), (cls, str(info.value))
        assert isinstance(info.value, GraphValidationError) and isinstance(info.value, GTCompressError)
    with pytest.raises(EdgeIndexError, match="graph 1: "):
        node_sess.run([g, _bad(g, edge_index=g.edge_index + n)])


def test_an_edge_joining_two_graphs_of_a_union_is_an_edge_index_error(exported, node_sess) -> None:
    """A union item's edges must stay inside one graph of its ``batch``: with PE such an edge crashed
    the per-graph eigendecomposition, without PE messages silently crossed between graphs."""
    from runtime.graphs import validate_graph

    g = exported["node"].graphs(2, seed=8, lo=6, hi=7)
    x = np.concatenate([g[0].x, g[1].x])
    joined = NumpyGraph(x, np.array([[0, 7], [7, 0]]), np.ones((2, 2), np.float32), np.repeat([0, 1], 6))
    message = "input 'edge_index': edge 0 (0 -> 7) joins graph 0 and graph 1"
    with pytest.raises(EdgeIndexError) as info:
        node_sess.run(joined)
    assert str(info.value) == message
    with pytest.raises(EdgeIndexError) as info:
        node_sess.run([g[0], joined])
    assert str(info.value) == "input 'edge_index': graph 1: edge 0 (0 -> 7) joins graph 0 and graph 1"
    no_pe = dataclasses.replace(exported["node"].spec, pe={})  # nothing downstream would notice: the check must
    with pytest.raises(EdgeIndexError) as info:
        validate_graph(joined, no_pe)
    assert str(info.value) == message
    inside = NumpyGraph(x, np.array([[0, 7, 5], [5, 11, 0]]), np.ones((3, 2), np.float32), np.repeat([0, 1], 6))
    assert validate_graph(inside, no_pe).num_edges == 3


def test_limits_give_graph_too_large(exported) -> None:
    sess = GraphSession(exported["node"].path, limits=Limits(max_nodes=10))
    graphs = exported["node"].graphs(3, lo=8)
    with pytest.raises(GraphTooLargeError, match="maximum 10"):
        sess.run(graphs)


def test_teddy_from_metadata_sparsifies_incoming_graphs(exported) -> None:
    ex = exported["teddy"]
    sess = GraphSession(ex.path)
    assert sess.model.teddy is not None and sess.model.teddy.ratio == 0.3
    graphs = [g for g in ex.graphs(8, seed=7, lo=8, hi=14) if g.num_edges >= 6][:3]
    outs = sess.run(graphs)
    plain = GraphSession(exported["node"].path).run(graphs)
    for g, out, dense in zip(graphs, outs, plain, strict=True):
        sparse = teddy_sparsify(g, 0.3, per_graph=True)
        assert sparse.num_edges < g.num_edges
        np.testing.assert_allclose(out, ex.torch_output(sparse), atol=1e-4, rtol=1e-4)
        assert not np.allclose(out, dense, atol=1e-4)
    prepared = sess.prepare(graphs)
    assert prepared.inputs["edge_index"].shape[1] < sum(g.num_edges for g in graphs)
    assert sess.prepare(graphs, teddy=False).inputs["edge_index"].shape[1] == sum(g.num_edges for g in graphs)


def test_teddy_keeps_the_original_graphs_pe_where_training_did_not_recompute_it() -> None:
    """SparsifyConfig(recompute_pe=False) trains on the dataset's PE of the original graphs and records
    'pe': {}; deployments computed the missing PE after TEDDY, on the sparsified graph (|diff| 0.42)."""
    from gtcompress.compress.teddy import TeddyEdges
    from gtcompress.preprocess.pe import rwse
    from gtcompress.preprocess.spec import FeatureInput, InputSpec, OutputSpec

    rng = np.random.default_rng(0)
    graphs, trained = [], []
    for n in (12, 9):
        a = np.triu(rng.random((n, n)) < 0.4, 1)
        ei = np.stack(np.nonzero(a | a.T))
        graphs.append(NumpyGraph(np.zeros((n, 1), np.float32), ei))
        pe = {"rwse": torch.from_numpy(rwse(ei, np.array([0, n]), 4))}  # data.base.add_pe, then TEDDY
        trained.append(GraphBatch(torch.zeros(n, 1), torch.from_numpy(ei), pe=pe))
    tf = TeddyEdges(0.3, pe={})
    spec = InputSpec(
        "gt", "node", "scatter", FeatureInput("float", 1), OutputSpec("out", 2, "node"), pe={"rwse": 4},
        teddy=tf.to_dict(),
    )  # fmt: skip
    want = [tf(g) for g in trained]
    for items, ref in (([graphs[0]], want[:1]), (graphs, want), ([union_graphs(graphs)], want)):
        got, batch = prepare_request(items, spec).inputs, collate(ref)
        np.testing.assert_array_equal(got["edge_index"], batch.edge_index.numpy())
        np.testing.assert_array_equal(got["pe_rwse"], batch.pe["rwse"].numpy())


def test_session_errors(tmp_path: Path, exported) -> None:
    with pytest.raises(SessionError, match="does not exist"):
        GraphSession(tmp_path / "missing.onnx")
    with pytest.raises(SessionError, match="not available"):
        GraphSession(exported["node"].path, ["NoSuchExecutionProvider"])
    plain = tmp_path / "plain.onnx"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]))
    model.ir_version = 10
    model.opset_import[0].version = 18
    onnx.save(model, str(plain))
    with pytest.raises(SessionError, match="no gtcompress input_spec"):
        GraphSession(plain)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(SessionError, match="cannot load"):
        GraphSession(tmp_path / "junk.onnx")


JSON_ERROR = "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"  # json's, for "{bad"
BAD_JSON = f"is not valid JSON ({JSON_ERROR})"
TEDDY_METADATA_ERRORS = [  # a corrupt entry was read as "no TEDDY" (silently wrong answers) or failed per request
    ("teddy", "{bad", f"metadata 'teddy' {BAD_JSON}"),
    ("preprocess", "{bad", f"metadata 'preprocess' {BAD_JSON}"),
    ("compression", "{bad", f"metadata 'compression' {BAD_JSON}"),
    ("input_spec", "{bad", f"metadata 'input_spec' {BAD_JSON}"),
    # before: json's RecursionError / ValueError (not JSONDecodeError) as a traceback from `gtc serve`
    ("input_spec", "[" * 100_000 + "]" * 100_000, "metadata 'input_spec' is not valid JSON (nested too deeply)"),
    ("teddy", '{"edges": ' + "1" * 5000 + "}",
     "metadata 'teddy' is not valid JSON (a number has more than 4300 digits)"),
    ("teddy", '{"edges": "x"}', "metadata teddy 'edges' must be a number, got 'x'"),
    ("teddy", '{"edges": 5}', "metadata teddy 'edges' is the fraction of edges TEDDY removes, in [0, 1]; got 5"),
    ("teddy", '{"edges": true}', "metadata teddy 'edges' must be a number, got True"),
    ("teddy", '{"edges": 0.3, "threshold": "low"}', "metadata teddy 'threshold' must be a number, got 'low'"),
    ("teddy", '{"edges": 0.3, "per_graph": "no"}', "metadata teddy 'per_graph' must be true or false, got 'no'"),
    ("teddy", '{"edges": 0.3, "pe": 5}', "metadata teddy 'pe' must list the PE kinds to recompute, got 5"),
    ("teddy", "0.3", 'metadata teddy must be a JSON object like {"edges": 0.3, "per_graph": true}, got 0.3'),
    ("preprocess", '{"teddy": {"edges": -1}}',
     "metadata preprocess.teddy 'edges' is the fraction of edges TEDDY removes, in [0, 1]; got -1"),
]  # fmt: skip


@pytest.mark.parametrize(("key", "value", "message"), TEDDY_METADATA_ERRORS)
def test_corrupt_metadata_is_a_session_error_naming_file_and_key(
    tmp_path: Path, exported, key: str, value: str, message: str
) -> None:
    path = tmp_path / "m.onnx"
    proto = onnx.load(str(exported["node"].path))
    entry = next((p for p in proto.metadata_props if p.key == key), None) or proto.metadata_props.add(key=key)
    entry.value = value
    onnx.save(proto, str(path))
    with pytest.raises(SessionError) as info:
        GraphSession(path)
    assert str(info.value) == f"{path}: {message}"


def test_teddy_config_reads_what_it_writes() -> None:
    """``ServedModel.config`` publishes ``TeddyConfig.to_dict`` (``pe`` a list) for clients to read back."""
    from runtime.spec import TeddyConfig, teddy_config

    cfg = TeddyConfig(0.3, per_graph=False, threshold=0.5, recompute_pe=("lap",))
    assert teddy_config({"teddy": json.dumps(cfg.to_dict())}) == cfg
    assert teddy_config({"teddy": '{"edges": 0.3, "pe": {"lap": true, "rwse": false}}'}) == TeddyConfig(
        0.3, recompute_pe=("lap",)
    )
    assert teddy_config({"teddy": '{"edges": 0}'}) is None and teddy_config({"teddy": "null"}) is None


def test_plan_without_spec_or_tensorrt(tmp_path: Path, exported) -> None:
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"\0" * 16)
    with pytest.raises(SessionError) as e:
        GraphSession(plan)
    assert str(e.value) == (  # the CLI prints it too: no Python-only advice alone
        f"{plan}: a TensorRT engine carries no input spec; put m.plan.json (the ONNX metadata_props as JSON, "
        "which gtc build writes) or m.onnx next to it (from Python, GraphSession(..., spec=) also works)"
    )
    from exporters.triton_repo import write_model_repository
    from runtime.spec import plan_metadata

    spec = exported["node"].spec
    side = tmp_path / "m.plan.json"
    for text, why in (
        ("{bad", f"not valid JSON ({JSON_ERROR}); it holds the ONNX metadata_props as a JSON object"),
        ("[1]", "must be a JSON object (the ONNX metadata_props), got list"),
    ):
        side.write_text(text)  # was a raw JSONDecodeError (a traceback from `gtc serve`)
        with pytest.raises(SessionError) as info:
            GraphSession(plan)
        assert str(info.value) == f"{side}: {why}"
    for text, why in (  # json's own limits were a RecursionError / ValueError traceback from `gtc serve`
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"input_spec": ' + "9" * 5000 + "}", "a number has more than 4300 digits"),
    ):
        side.write_text(text)
        with pytest.raises(SessionError) as info:
            GraphSession(plan)
        assert str(info.value) == f"{side}: not valid JSON ({why}); it holds the ONNX metadata_props as a JSON object"
    side.write_text(json.dumps({"input_spec": spec.to_json(), "teddy": {"edges": 0.2}}))
    repo = write_model_repository(tmp_path / "repo", "gt_plan", plan, spec)  # refused unless m.plan.json has spec
    (repo / "1" / "model.plan.json").unlink()  # as written before the engine's metadata was copied: config.pbtxt
    assert json.loads(plan_metadata(repo / "1" / "model.plan")["input_spec"]) == spec.to_json()
    pbtxt = repo / "config.pbtxt"
    good = pbtxt.read_text()
    for value, why in (
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("9" * 5000, "a number has more than 4300 digits"),
    ):
        pbtxt.write_text(f'parameters {{ key: "gtcompress_input_spec" value {{ string_value: "{value}" }} }}\n')
        with pytest.raises(SessionError) as info:
            plan_metadata(repo / "1" / "model.plan")
        assert str(info.value) == f"{pbtxt}: parameter gtcompress_input_spec is not valid JSON ({why})"
    pbtxt.write_text(good)
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        for source in (plan, repo):
            with pytest.raises(SessionError, match="TensorRT is not installed"):
                GraphSession(source)


def test_tensorrt_engine_parity(exported) -> None:
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (no GPU wheel on this machine)")
    from exporters.tensorrt import GraphSize, build_engine

    ex = exported["node"]
    plan = ex.path.with_suffix(".plan")
    build_engine(ex.path, plan, GraphSize(1, 1, 1, 1, 1), GraphSize(64, 256, 8), GraphSize(512, 4096, 64, 64, 64))
    sess = GraphSession(plan, spec=ex.spec)
    graphs = ex.graphs(4)
    for g, out in zip(graphs, sess.run(graphs), strict=True):
        np.testing.assert_allclose(out, ex.torch_output(g), atol=1e-3, rtol=1e-3)
    with pytest.raises(GraphTooLargeError, match="TensorRT profile"):
        sess.run(ex.graphs(1, lo=600, hi=601))


def test_runtime_imports_without_torch(exported) -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import runtime.session, runtime.server, runtime.profile, runtime.client, runtime.batcher\n"
        "from runtime.session import GraphSession\n"
        "from gtcompress.preprocess.random_graphs import random_graph\n"
        "import numpy as np\n"
        f"s = GraphSession({str(exported['teddy'].path)!r})\n"
        "g = random_graph(np.random.default_rng(0), 6, 12, s.spec.x, s.spec.edge_attr)\n"
        "print(s.run([g, g])[1].shape)\n"
        "assert not any(m == 'torch' or m.startswith('torch.') for m, v in sys.modules.items() if v is not None)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "(6, 3)"


def test_triton_repository_model_dir(tmp_path: Path, exported) -> None:
    from exporters.triton_repo import write_model_repository
    from runtime.served import default_model_name

    root = write_model_repository(tmp_path / "repo", "gt_demo", exported["node"].path, exported["node"].spec)
    sess = GraphSession(root)
    assert sess.path == root / "1" / "model.onnx"
    assert default_model_name(sess.path) == "gt_demo"
    g = exported["node"].graphs(1)[0]
    np.testing.assert_allclose(sess.run(g)[0], GraphSession(exported["node"].path).run(g)[0])
    with pytest.raises(SessionError, match=r"no <version>/model\.onnx"):
        GraphSession(tmp_path)


def test_package_exports_resolve() -> None:
    import runtime

    for name in runtime.__all__:
        assert getattr(runtime, name) is not None
    with pytest.raises(AttributeError):
        _ = runtime.nothing_here


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_a_gpu_provider_that_cannot_run_is_an_error_not_cpu(exported, provider: str) -> None:
    """onnxruntime-gpu lists the CUDA and TensorRT providers on any machine; asked for one without
    its libraries or a GPU, ONNX Runtime fell back to CPU and `gtc serve --providers cuda` served
    CPU numbers with exit 0."""
    import onnxruntime as ort

    from runtime.backends import PROVIDER_ALIASES, nvidia_gpu_present

    if nvidia_gpu_present() or PROVIDER_ALIASES[provider] not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu on a machine without a GPU (there the provider runs)")
    with pytest.raises(SessionError) as err:
        GraphSession(exported["node"].path, [provider])
    assert PROVIDER_ALIASES[provider] in str(err.value) and "use --providers cpu" in str(err.value)


def _with_x_input_as(src: Path, dst: Path, elem_type: int) -> Path:
    """``src`` with its float ``x`` input declared as ``elem_type`` and cast to float32 inside: the
    shape of a model converted to a lower precision with low-precision inputs (keep_io_types=False)."""
    proto = onnx.load(str(src))
    graph = proto.graph
    (x,) = [i for i in graph.input if i.name == "x"]
    x.type.tensor_type.elem_type = elem_type
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == "x":
                node.input[i] = "x_as_float32"
    graph.node.insert(0, helper.make_node("Cast", ["x"], ["x_as_float32"], to=TensorProto.FLOAT))
    onnx.save(proto, str(dst))
    return dst


def test_float16_inputs_are_cast_and_bfloat16_ones_refused(exported, tmp_path: Path) -> None:
    """A model taking float16 features ran on none of its calls ('Unexpected input data type. Actual:
    (tensor(float)), expected: (tensor(float16))', a traceback from gtc profile): inputs are cast to
    the model's float dtype. bfloat16 has no numpy dtype: refused when the session opens, by name."""
    e = exported["graph"]
    graphs = e.graphs(3, seed=4)
    ref = GraphSession(e.path).run(graphs)
    sess = GraphSession(_with_x_input_as(e.path, tmp_path / "fp16.onnx", TensorProto.FLOAT16))
    assert [i.dtype for i in sess.get_inputs() if i.name == "x"] == ["float16"]
    rounded = [dataclasses.replace(g, x=g.x.astype(np.float16).astype(np.float32)) for g in graphs]
    for got, want in zip(sess.run(graphs), GraphSession(e.path).run(rounded), strict=True):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(sess.run(graphs), ref, strict=True):
        np.testing.assert_allclose(got, want, atol=5e-3)
    bf16 = _with_x_input_as(e.path, tmp_path / "bf16.onnx", TensorProto.BFLOAT16)
    with pytest.raises(SessionError, match=r"inputs x \(tensor\(bfloat16\)\) have no numpy dtype"):
        GraphSession(bf16)


def test_a_triton_model_folder_with_a_non_ascii_digit_folder_resolves_to_its_version(tmp_path: Path) -> None:
    """Version folders are ASCII integers: a folder named '²' passed ``str.isdigit()``, and sorting the
    versions by ``int()`` raised a ValueError traceback instead of serving version 1."""
    from runtime.session import resolve_model_path

    for name in ("²", "1"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.onnx").write_bytes(b"")
    assert resolve_model_path(tmp_path) == tmp_path / "1" / "model.onnx"
