"""TorchBackend: a checkpoint run with torch through GraphSession — parity with its ONNX export on CPU,
the CUDA-graph padding (exact on CPU), errors, profiling and serving; CUDA-only checks when a GPU is there.
One backend's contract beside the ONNX one, kept together so the GPU run (bench/gpu_check.sh) names one file:
hence a little over 500 lines."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from exporters.onnx import export_onnx
from gtcompress.checkpoint import save_checkpoint
from gtcompress.data.base import FeatureSpec
from gtcompress.models import ModelConfig
from gtcompress.preprocess import NumpyGraph
from gtcompress.preprocess.random_graphs import random_batches, random_graph
from runtime.errors import SessionError
from runtime.graphs import apply_teddy
from runtime.profile_torch import CPU_NOTE
from runtime.session import GraphSession, is_checkpoint
from runtime.torch_backend import (
    Bucket,
    bucket_for,
    bucket_size,
    cuda_graphs_refusal,
    forward,
    pad_inputs,
    unpad_output,
)
from tests.runtime.conftest import seeded_model

ROOT = Path(__file__).resolve().parents[2]
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
TEDDY = {"edges": 0.3, "per_graph": True}

CONFIGS = {
    # categorical x, float edge features, RWSE, node-level
    "node": ModelConfig(
        arch="gt",
        node_features=FeatureSpec("categorical", 2, [5, 3]),
        edge_features=FeatureSpec("float", 2),
        out_dim=3,
        hidden=16,
        heads=2,
        num_layers=2,
        pe={"rwse": 4},
        task_level="node",
    ),
    # float x, no edge features, LapPE, graph-level
    "graph": ModelConfig(
        arch="gt",
        node_features=FeatureSpec("float", 3),
        out_dim=2,
        hidden=16,
        heads=2,
        num_layers=2,
        pe={"lap": 2},
        task_level="graph",
    ),
    # categorical edge features, graph-level, sum readout
    "graph_ef": ModelConfig(
        arch="gt",
        node_features=FeatureSpec("float", 3),
        edge_features=FeatureSpec("categorical", 1, [4]),
        out_dim=2,
        hidden=16,
        heads=2,
        num_layers=1,
        readout="sum",
        task_level="graph",
    ),
    "gps": ModelConfig(arch="gps", node_features=FeatureSpec("float", 3), out_dim=2, hidden=16, heads=2, num_layers=1),
}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("torch-ckpts")
    out = {key: save_checkpoint(root / key, seeded_model(cfg)) for key, cfg in CONFIGS.items()}
    out["teddy"] = save_checkpoint(root / "teddy", seeded_model(CONFIGS["node"]), {"teddy": TEDDY})
    return out


@pytest.fixture(scope="module")
def onnx_files(ckpts, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The ONNX exports of the same checkpoints: plugin (CSR) and dense lowering."""
    from gtcompress.checkpoint import load_checkpoint

    root = tmp_path_factory.mktemp("torch-onnx")
    out = {}
    for key, lowering in (("node", "plugin"), ("graph", "dense")):
        model, _ = load_checkpoint(ckpts[key])
        out[key] = export_onnx(model, root / f"{key}.onnx", lowering, verify_batches=1).path
    return out


def _graphs(spec: dict, count: int, seed: int = 0) -> list[NumpyGraph]:
    rng = np.random.default_rng(seed)
    sizes = [int(rng.integers(1, 14)) for _ in range(count)]
    return [
        random_graph(rng, n, int(rng.integers(0, 3 * n)), spec.x, spec.edge_attr, i % 2, i % 3)
        for i, n in enumerate(sizes)
    ]


def _tensors(inputs: dict[str, np.ndarray], device: str = "cpu") -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in inputs.items()}


# ---------------------------------------------------------------------------------- no torch in runtime
def test_runtime_imports_without_torch() -> None:
    code = "import runtime, runtime.session, runtime.server, runtime.profile, sys; assert 'torch' not in sys.modules"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_checkpoint_recognised_without_torch(ckpts, onnx_files) -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from runtime.session import is_checkpoint, resolve_model_path\n"
        f"assert is_checkpoint({str(ckpts['node'])!r}) and is_checkpoint({str(ckpts['node'] / 'config.json')!r})\n"
        f"assert not is_checkpoint({str(onnx_files['node'])!r})\n"
        f"assert str(resolve_model_path({str(ckpts['node'] / 'model.safetensors')!r})) == {str(ckpts['node'])!r}\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


# ---------------------------------------------------------------------------------- CPU parity
@pytest.mark.parametrize("key", ["node", "graph"])
def test_cpu_parity_with_the_onnx_export(ckpts, onnx_files, key: str) -> None:
    torch_sess = GraphSession(ckpts[key], device="cpu")
    ort_sess = GraphSession(onnx_files[key], ["cpu"])
    assert torch_sess.platform == "pytorch_libtorch" and torch_sess.providers == ["torch:cpu"]
    assert torch_sess.spec.lowering == "plugin" and torch_sess.path == ckpts[key]
    if key == "node":  # same spec as the plugin export: same inputs, dtypes and shapes
        want = {t.name: (t.dtype, t.shape) for t in ort_sess.get_inputs()}
        assert {t.name: (t.dtype, t.shape) for t in torch_sess.get_inputs()} == want
        assert torch_sess.get_outputs()[0].shape == ort_sess.get_outputs()[0].shape
        assert torch_sess.spec == ort_sess.spec
    graphs = _graphs(torch_sess.spec, 7, seed=3)
    for per_graph in (False, True):  # one merged call, and one call per graph
        got = torch_sess.run(graphs) if not per_graph else [torch_sess.run(g)[0] for g in graphs]
        ref = ort_sess.run(graphs) if not per_graph else [ort_sess.run(g)[0] for g in graphs]
        for a, b in zip(got, ref, strict=True):
            assert a.shape == b.shape and a.dtype == np.float32
            np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_checkpoint_without_device_and_teddy(ckpts) -> None:
    sess = GraphSession(ckpts["teddy"] / "config.json")  # a checkpoint is recognised; default device
    assert sess.path == ckpts["teddy"] and sess.providers == [f"torch:{'cuda:0' if CUDA else 'cpu'}"]
    assert sess.model.teddy is not None and sess.model.teddy.ratio == 0.3 and sess.spec.teddy == TEDDY
    assert json.loads(sess.metadata["teddy"]) == TEDDY
    assert json.loads(sess.metadata["input_spec"]) == sess.spec.to_json()
    plain = GraphSession(ckpts["node"], device="cpu")  # the same weights (same seed) without TEDDY
    graphs = _graphs(plain.spec, 4, seed=5)
    sparse = [apply_teddy(g, sess.model.teddy, sess.spec) for g in graphs]
    for a, b in zip(GraphSession(ckpts["teddy"], device="cpu").run(graphs), plain.run(sparse), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_dense_lowering_for_other_architectures(ckpts) -> None:
    sess = GraphSession(ckpts["gps"], device="cpu")
    assert sess.spec.lowering == "dense" and "pad_mask" in sess.input_names
    graphs = _graphs(sess.spec, 3)
    outs = sess.run(graphs)
    assert [o.shape for o in outs] == [(g.num_nodes, 2) for g in graphs] and all(np.isfinite(o).all() for o in outs)


# ---------------------------------------------------------------------------------- padding
def test_bucket_sizes() -> None:
    assert [bucket_size(v) for v in (0, 1, 16, 17, 32, 33)] == [16, 16, 16, 32, 32, 64]
    assert bucket_for(16, 16, 16) == Bucket(16, 16, 16)  # exact: no dummy node, no dummy graph
    assert bucket_for(16, 10, 3) == Bucket(32, 16, 16)  # padded edges need a dummy node
    assert bucket_for(10, 16, 16) == Bucket(16, 16, 32)  # dummy nodes need the dummy graph
    assert bucket_for(40, 0, 1) == Bucket(64, 16, 16)
    with pytest.raises(ValueError, match="does not fit"):
        pad_inputs(
            {"x": np.zeros((20, 1)), "edge_index": np.zeros((2, 3), np.int64), "node_counts": np.ones(1)},
            Bucket(16, 16, 16),
        )


@pytest.mark.parametrize("key", ["node", "graph"])
def test_padded_inputs_are_a_consistent_csr_batch(ckpts, key: str) -> None:
    sess = GraphSession(ckpts[key], device="cpu")
    for seed, count in ((0, 1), (1, 4), (2, 9)):
        inputs = sess.prepare(_graphs(sess.spec, count, seed)).inputs
        n, e, b = inputs["x"].shape[0], inputs["edge_index"].shape[1], inputs["node_counts"].shape[0]
        bk = bucket_for(n, e, b)
        p = pad_inputs(inputs, bk)
        assert {k: v.dtype for k, v in p.items()} == {k: v.dtype for k, v in inputs.items()}
        assert p["x"].shape[0] == p["batch"].shape[0] == bk.nodes and p["node_counts"].shape == (bk.graphs,)
        assert p["edge_index"].shape == (2, bk.edges) and p["rowptr"].shape == (bk.nodes + 1,)
        for name in inputs:  # the real rows are untouched
            real = inputs[name].shape[1] if name == "edge_index" else inputs[name].shape[0]
            got = p[name][:, :real] if name == "edge_index" else p[name][:real]
            np.testing.assert_array_equal(got, inputs[name])
        src, dst = p["edge_index"]
        assert (dst[e:] == n).all() and (src[e:] == n).all()  # self-loops on the first dummy node
        assert sorted(p["perm"]) == list(range(bk.edges)) and (np.diff(p["rowptr"]) >= 0).all()
        np.testing.assert_array_equal(p["col"], src[p["perm"]])
        np.testing.assert_array_equal(dst[p["perm"]], np.repeat(np.arange(bk.nodes), np.diff(p["rowptr"])))
        assert (p["batch"][n:] == b).all() and p["node_counts"].sum() == bk.nodes


@pytest.mark.parametrize("key", ["node", "graph", "graph_ef"])
def test_padded_run_equals_unpadded_run_on_cpu(ckpts, key: str) -> None:
    sess = GraphSession(ckpts[key], device="cpu")
    model = sess.backend.model  # type: ignore[attr-defined]
    node_level = sess.node_level
    for g in random_batches(sess.spec.x, sess.spec.edge_attr, 5, seed=1):
        inputs = sess.prepare([g]).inputs
        n, e, b = inputs["x"].shape[0], inputs["edge_index"].shape[1], inputs["node_counts"].shape[0]
        with torch.inference_mode():
            ref = forward(model, _tensors(inputs), sess.spec.lowering).numpy()
            out = forward(model, _tensors(pad_inputs(inputs, bucket_for(n, e, b))), sess.spec.lowering).numpy()
        assert np.isfinite(out).all()
        np.testing.assert_allclose(unpad_output(out, n, b, node_level), ref, atol=1e-6)


def test_replay_bookkeeping_on_cpu(ckpts, monkeypatch: pytest.MonkeyPatch) -> None:
    """The replay path — bucket, pad, capture or reuse (LRU), copy into the static inputs, replay, slice —
    with a stand-in for ``torch.cuda.graph`` whose replay re-runs the model on the static inputs (CPU)."""
    from runtime.torch_backend import _Captured

    sess, eager = GraphSession(ckpts["node"], device="cpu"), GraphSession(ckpts["node"], device="cpu")
    backend = sess.backend
    captured: list[int] = []

    def fake_capture(padded: dict[str, np.ndarray]) -> _Captured:
        static = {k: torch.from_numpy(a.copy()) for k, a in padded.items()}
        host = {k: v.clone() for k, v in static.items()}
        output = forward(backend.model, static, backend.spec.lowering)  # type: ignore[attr-defined]

        class Graph:
            def replay(self) -> None:
                output.copy_(forward(backend.model, static, backend.spec.lowering))  # type: ignore[attr-defined]

        captured.append(padded["x"].shape[0])
        return _Captured(Graph(), static, host, output)

    monkeypatch.setattr(backend, "_capture", fake_capture)
    backend.cuda_graphs, backend.max_graphs = True, 2  # type: ignore[attr-defined]
    lru: list[Bucket] = []
    misses = 0
    for seed, count in ((0, 1), (1, 3), (2, 3), (0, 1), (3, 12), (4, 30), (1, 3), (1, 3)):
        graphs = _graphs(sess.spec, count, seed)
        inputs = sess.prepare(graphs).inputs
        key = bucket_for(inputs["x"].shape[0], inputs["edge_index"].shape[1], inputs["node_counts"].shape[0])
        misses += key not in lru
        lru = [*(k for k in lru if k != key), key][-2:]
        for a, b in zip(sess.run(graphs), eager.run(graphs), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)
    assert len(captured) == misses < 8 and backend.captured == lru  # type: ignore[attr-defined]


def test_a_call_past_the_capture_limits_runs_eagerly(ckpts, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request at the server's hard limits captured a bucket of 2^20 nodes and 2^24 edges whose memory
    pool and pinned staging stayed held in the LRU: past the batcher's soft limits a call runs eagerly."""
    from runtime.torch_backend import CAPTURE_MAX_EDGES, CAPTURE_MAX_NODES

    sess, eager = GraphSession(ckpts["node"], device="cpu"), GraphSession(ckpts["node"], device="cpu")
    backend = sess.backend
    assert (CAPTURE_MAX_NODES, CAPTURE_MAX_EDGES) == (8192, 65536)  # the batcher's default soft limits
    assert (backend.capture_max_nodes, backend.capture_max_edges) == (8192, 65536)  # type: ignore[attr-defined]
    replayed: list[int] = []

    def replay(inputs: dict[str, np.ndarray]) -> np.ndarray:
        replayed.append(inputs["x"].shape[0])
        return eager.backend.run(inputs)[eager.backend.outputs[0].name]

    monkeypatch.setattr(backend, "_replay", replay)
    backend.cuda_graphs, backend.capture_max_nodes = True, 40  # type: ignore[attr-defined]
    small, large = _graphs(sess.spec, 2, 0), _graphs(sess.spec, 12, 1)
    for graphs in (small, large):
        for a, b in zip(sess.run(graphs), eager.run(graphs), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)
    assert replayed == [sum(g.num_nodes for g in small)] and sum(g.num_nodes for g in large) > 40


def test_cuda_graphs_refusals() -> None:
    from gtcompress.preprocess.spec import FeatureInput, InputSpec, OutputSpec

    def spec(arch: str, lowering: str) -> InputSpec:
        return InputSpec(arch, "graph", lowering, FeatureInput("float", 3), OutputSpec("output", 2, "graph"))

    assert cuda_graphs_refusal(spec("gt", "plugin")) is None
    assert "gps runs on the per-graph dense layout" in str(cuda_graphs_refusal(spec("gps", "dense")))
    assert "a token-pruned GT" in str(cuda_graphs_refusal(spec("gt", "dense")))


# ---------------------------------------------------------------------------------- errors
def test_errors(ckpts, onnx_files, tmp_path: Path) -> None:
    with pytest.raises(SessionError, match=r"^device 'gpu': expected cpu, cuda or cuda:N$"):
        GraphSession(ckpts["node"], device="gpu")
    with pytest.raises(SessionError, match=r"cuda_graphs: CUDA graphs replay on a GPU only; device is cpu"):
        GraphSession(ckpts["node"], device="cpu", cuda_graphs=True)
    with pytest.raises(SessionError, match="this file is not one"):
        GraphSession(onnx_files["node"], device="cpu")
    with pytest.raises(SessionError, match=r"providers apply to ONNX Runtime"):
        GraphSession(ckpts["node"], ["cpu"])
    with pytest.raises(SessionError, match=r"^cannot load checkpoint: .*missing: checkpoint directory does not exist$"):
        GraphSession(tmp_path / "missing", device="cpu")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((ckpts["node"] / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    assert is_checkpoint(broken)
    with pytest.raises(SessionError, match=r"^cannot load checkpoint: .*broken.model.safetensors: "):
        GraphSession(broken)


def test_cuda_graphs_alone_on_an_exported_file_names_cuda_graphs(onnx_files) -> None:
    """GraphSession(model.onnx, cuda_graphs=True), no device given, was refused as "device=None runs
    gtcompress checkpoints with torch": the argument that sent the file to torch is cuda_graphs."""
    path = re.escape(str(onnx_files["node"]))
    want = rf"^{path}: cuda_graphs=True runs gtcompress checkpoints with torch, and this file is not one "
    with pytest.raises(SessionError, match=want):
        GraphSession(onnx_files["node"], cuda_graphs=True)


@pytest.mark.skipif(CUDA, reason="checks the message on a machine without CUDA")
def test_no_cuda_is_one_sentence(ckpts) -> None:
    with pytest.raises(SessionError, match=r"^device 'cuda': no CUDA device is visible to torch \("):
        GraphSession(ckpts["node"], device="cuda")


# ---------------------------------------------------------------------------------- profile and serve
def test_profile_puts_torch_rows_next_to_onnx_rows(ckpts, onnx_files, tmp_path: Path) -> None:
    from runtime.profile import NOT_ISOLATED_NOTE, profile_models, report_tables, validate_report, write_report

    rep = profile_models(
        [onnx_files["graph"], ckpts["graph"]],
        graph_sizes=(6,),
        batch_sizes=(1, 3),
        threads=(1,),
        iterations=3,
        warmup=0,
        op_profile=False,
        isolate=False,
        device="cpu",
    )
    validate_report(rep)
    ort, tch = rep["models"]
    assert (ort["backend"], ort["device"], ort["providers"]) == ("onnxruntime", "cpu", ["CPUExecutionProvider"])
    assert (tch["backend"], tch["device"], tch["format"], tch["providers"]) == (
        "torch",
        "cpu",
        "checkpoint",
        ["torch:cpu"],
    )
    assert [(r["threads"], r["batch_size"]) for r in tch["results"]] == [(1, 1), (1, 3)]
    # --warmup 0: a torch row still makes one call first (its first call on a shape builds it), and says so
    assert [r["warmup"] for r in ort["results"]] == [0, 0] and [r["warmup"] for r in tch["results"]] == [1, 1]
    assert rep["settings"]["device"] == "cpu" and "gpu" not in rep["machine"]
    assert rep["settings"]["notes"][:2] == [CPU_NOTE, NOT_ISOLATED_NOTE]  # isolate=False: the ONNX rows' RSS is shared
    assert rep["settings"]["notes"][2].startswith("warm-up 0: each exported model's row times its first call")
    # machine, two models, the checkpoint against the ONNX file, and the notes printed
    assert len(write_report(rep, tmp_path / "out")) == 5 and len(report_tables(rep)) == 4 + 3
    with pytest.raises(SessionError, match="apply to checkpoint directories"):
        profile_models([onnx_files["graph"]], device="cpu")


def test_torch_rows_take_turns_with_onnx_rows_in_rounds(ckpts, onnx_files) -> None:
    """A checkpoint's passes take their turns in the rounds with the exported models' (its rows were one pass
    before them, so a slow spell of the machine made the torch against ONNX Runtime speed-up the machine's)."""
    from runtime.profile import profile_models, report_tables

    kw = {"graph_sizes": (6,), "batch_sizes": (1,), "threads": (1,), "iterations": 4, "warmup": 1, "rounds": 2}
    steps: list[str] = []
    rep = profile_models([onnx_files["graph"], ckpts["graph"]], **kw, op_profile=False, isolate=False, device="cpu",
                         names=["onnx", "torch"], progress=lambda d, t, what: steps.append(what))  # fmt: skip
    assert steps[1:-1] == [
        "onnx · 1 thread · round 1/2",
        "torch · cpu · 1 thread · round 1/2",
        "onnx · 1 thread · round 2/2",
        "torch · cpu · 1 thread · round 2/2",
    ]
    (ort_row,), (torch_row,) = (m["results"] for m in rep["models"])
    assert len(ort_row["rounds_p50_ms"]) == len(torch_row["rounds_p50_ms"]) == 2
    assert ort_row["iterations"] == torch_row["iterations"] == 4 and torch_row["warmup"] == 1
    assert rep["models"][1]["rounds"] == 2 and rep["models"][1]["arch"] == "gt"  # filled in by its passes
    assert not any("one pass" in n for n in rep["settings"]["notes"])
    titles = [t.title.split(" · ")[-1] for t in report_tables(rep)[1:3]]
    assert titles == ["4 timed calls a row in 2 rounds"] * 2


def test_a_gpus_one_pass_a_round_is_not_called_a_tensorrt_engines(ckpts, onnx_files, monkeypatch) -> None:
    """On a GPU a checkpoint's rows have ``threads`` null, one pass a round, as a TensorRT engine's have; the
    note on TensorRT rows is for engines only (the torch rows' CUDA note says why they have no thread count)."""
    from runtime.profile import TENSORRT_NOTE, profile_models
    from runtime.profile_torch import CheckpointProfiler

    init = CheckpointProfiler.__init__

    def as_on_a_gpu(self: CheckpointProfiler, *args: object) -> None:
        init(self, *args)
        self.threads = [None]  # what a CUDA device gives; measured on the CPU here

    monkeypatch.setattr(CheckpointProfiler, "__init__", as_on_a_gpu)
    kw = {"graph_sizes": (6,), "batch_sizes": (1,), "threads": (1,), "iterations": 4, "warmup": 1, "rounds": 2}
    rep = profile_models([onnx_files["graph"], ckpts["graph"]], **kw, op_profile=False, isolate=False, device="cpu")
    assert [r["threads"] for m in rep["models"] for r in m["results"]] == [1, None]
    assert rep["models"][1]["results"][0]["rounds_completed"] == 2
    assert TENSORRT_NOTE not in rep["settings"]["notes"]


def test_served_checkpoint_answers_like_the_session(ckpts) -> None:
    import tritonclient.http as triton

    from runtime.client import fetch_spec, infer_graphs
    from runtime.server import BackgroundServer, ServedModel, create_app

    sess = GraphSession(ckpts["node"], device="cpu")
    assert ServedModel("ck", sess).config()["backend"] == "pytorch"
    graphs = _graphs(sess.spec, 3, seed=8)
    expected = sess.run(graphs)
    with BackgroundServer(create_app({"ck": sess})) as srv:
        client = triton.InferenceServerClient(srv.url)
        try:
            got = infer_graphs(client, "ck", graphs, fetch_spec(client, "ck"))
        finally:
            client.close()
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


# ---------------------------------------------------------------------------------- CUDA only
@needs_cuda
@pytest.mark.parametrize("key", ["node", "graph", "graph_ef"])
def test_cuda_graph_replay_equals_eager(ckpts, key: str) -> None:
    eager = GraphSession(ckpts[key], device="cuda")
    replay = GraphSession(ckpts[key], device="cuda", cuda_graphs=True)
    replay.backend.max_graphs = 2  # type: ignore[attr-defined]  # exercise eviction
    assert replay.providers == ["torch:cuda:0 (cuda graphs)"]
    for seed, count in ((0, 1), (1, 3), (2, 3), (3, 12), (4, 1), (5, 30)):
        graphs = _graphs(eager.spec, count, seed)
        for a, b in zip(replay.run(graphs), eager.run(graphs), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    assert 1 <= len(replay.backend.captured) <= 2  # type: ignore[attr-defined]


@needs_cuda
def test_cuda_matches_cpu_and_refuses_what_it_cannot_pad(ckpts) -> None:
    cpu = GraphSession(ckpts["node"], device="cpu")
    graphs = _graphs(cpu.spec, 5, seed=9)
    for a, b in zip(GraphSession(ckpts["node"], device="cuda").run(graphs), cpu.run(graphs), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
    with pytest.raises(SessionError, match="cuda_graphs refused: gps runs on the per-graph dense layout"):
        GraphSession(ckpts["gps"], device="cuda", cuda_graphs=True)
    with pytest.raises(SessionError, match=r"^device 'cuda:99': torch sees \d+ CUDA device"):
        GraphSession(ckpts["node"], device="cuda:99")


@needs_cuda
def test_profile_on_cuda_writes_rows(ckpts, onnx_files, tmp_path: Path) -> None:
    from runtime.profile import profile_models, validate_report, write_report

    rep = profile_models(
        [onnx_files["graph"], ckpts["graph"]],
        graph_sizes=(8, 32),
        batch_sizes=(1, 4),
        threads=(1, 2),
        iterations=5,
        warmup=1,
        op_profile=False,
        isolate=False,
        device="cuda",
        cuda_graphs=True,
    )
    validate_report(rep)
    ort, tch = rep["models"]
    assert ort["providers"] == ["CPUExecutionProvider"] and len(ort["results"]) == 2 * 4
    assert tch["device"] == "cuda:0" and tch["cuda_graphs"] and len(tch["results"]) == 4
    assert all(r["threads"] is None and r["peak_gpu_mb"] > 0 and r["cuda_graphs_held"] >= 1 for r in tch["results"])
    captured = [r["cuda_graphs_captured"] for r in tch["results"]]  # per row: the first row captures its bucket
    assert captured[0] >= 1 and sum(captured) == tch["results"][-1]["cuda_graphs_held"]  # no eviction
    assert rep["settings"]["notes"] and rep["machine"]["gpu"]["name"]
    write_report(rep, tmp_path / "out")


def test_a_checkpoint_named_by_one_of_its_files_is_served_under_the_directorys_name(ckpts) -> None:
    """gtc serve runs/gt/config.json served a model 'config' (and model.safetensors a model 'model'):
    requests to /v2/models/gt got 404s."""
    from runtime.served import default_model_name

    for f in ("config.json", "model.safetensors"):
        assert default_model_name(ckpts["node"] / f) == ckpts["node"].name
    assert default_model_name(ckpts["node"]) == ckpts["node"].name


def test_a_checkpoint_directory_with_a_dot_keeps_its_whole_name(ckpts, tmp_path: Path) -> None:
    """A directory's name was read as a file's stem: gtc serve runs/gt-keep0.5 served a model
    'gt-keep0', and gtc profile labelled runs/gt-keep0.5 and runs/gt-keep0.7 'gt-keep0#0' and
    'gt-keep0#1' in its tables and plots."""
    import shutil

    from runtime.profile_labels import model_labels as _labels
    from runtime.served import default_model_name

    dirs = [tmp_path / "gt-keep0.5", tmp_path / "gt-keep0.7"]
    for d in dirs:
        shutil.copytree(ckpts["graph"], d)
    assert [default_model_name(d) for d in dirs] == ["gt-keep0.5", "gt-keep0.7"]
    assert default_model_name(dirs[0] / "config.json") == "gt-keep0.5"
    assert _labels([str(d) for d in dirs]) == ["gt-keep0.5", "gt-keep0.7"]
    assert _labels([str(tmp_path / "a.onnx"), str(tmp_path / "b" / "3" / "model.onnx")]) == ["a", "b"]
    # one stem, three models: gt#0, gt#1 and gt#2 did not say which was the checkpoint; their names do
    shutil.copytree(ckpts["graph"], tmp_path / "gt")
    same = [str(tmp_path / "gt.onnx"), str(tmp_path / "gt"), str(tmp_path / "gt.plan")]
    assert _labels(same) == ["gt.onnx", "gt/", "gt.plan"]
    assert _labels([str(tmp_path / "a" / "gt.onnx"), str(tmp_path / "b" / "gt.onnx")]) == ["a/gt.onnx", "b/gt.onnx"]


def test_profile_refuses_a_broken_checkpoint_before_measuring_anything(
    ckpts, onnx_files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gtc profile gt.onnx broken-ckpt measured every row of gt.onnx (minutes at the defaults) and only
    then, at the checkpoint's turn, failed on its unreadable weights, throwing those rows away."""
    import shutil

    import runtime.profile as profile

    broken = tmp_path / "broken"
    shutil.copytree(ckpts["graph"], broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    measured: list[str] = []
    monkeypatch.setattr(profile, "measure_model", lambda path, *a, **k: measured.append(path))
    with pytest.raises(SessionError, match=r"^cannot load checkpoint: .*broken.model.safetensors: "):
        profile.profile_models([onnx_files["graph"], broken], (6,), (1,), (1,), 2, 0, op_profile=False, isolate=False)
    assert measured == []


def test_torch_cpu_rows_say_when_they_are_oversubscribed(ckpts, onnx_files) -> None:
    """gtc profile --threads 4 on a 2-core machine marked the ONNX rows oversubscribed ('*' in the
    table) but every torch CPU row 'oversubscribed': false, though torch ran 4 threads on 2 cores too."""
    import os

    from runtime.profile import profile_models

    many = len(os.sched_getaffinity(0)) + 1
    models = [onnx_files["graph"], ckpts["graph"]]
    rep = profile_models(models, (6,), (1,), (1, many), 2, 0, op_profile=False, isolate=False, device="cpu")
    ort, tch = rep["models"]
    assert [(r["threads"], r["oversubscribed"]) for r in ort["results"]] == [(1, False), (many, True)]
    assert [(r["threads"], r["oversubscribed"]) for r in tch["results"]] == [(1, False), (many, True)]


def test_torch_rows_carry_the_fields_of_the_onnx_rows(ckpts, onnx_files) -> None:
    """Every field of an ONNX Runtime row is in a torch row next to it: the torch rows lacked
    model_rss_mb, so a reader of report.json comparing the two got a KeyError on the torch ones."""
    from runtime.profile import profile_models

    models = [onnx_files["graph"], ckpts["graph"]]
    rep = profile_models(models, (6,), (1,), (1,), 2, 0, op_profile=False, isolate=False, device="cpu")
    (ort_row,), (torch_row,) = (m["results"] for m in rep["models"])
    assert set(ort_row) <= set(torch_row)
    assert 0 < torch_row["model_rss_mb"] <= torch_row["peak_rss_mb"]


def test_profile_refuses_cuda_graphs_for_a_dense_checkpoint_before_measuring(
    ckpts, onnx_files, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gtc profile gt.onnx gps-ckpt --device cuda --cuda-graphs measured every row of gt.onnx before
    the GPS checkpoint's session refused CUDA graphs (its dense layout cannot be padded). The device
    is made to read as CUDA here (the refusal depends on the model alone)."""
    import runtime.profile as profile
    import runtime.torch_backend as torch_backend

    monkeypatch.setattr(torch_backend, "resolve_device", lambda device: torch.device("cuda"))
    measured: list[str] = []
    monkeypatch.setattr(profile, "measure_model", lambda path, *a, **k: measured.append(path))
    want = r"gps: cuda_graphs refused: gps runs on the per-graph dense layout"
    with pytest.raises(SessionError, match=want):
        profile.profile_models(
            [onnx_files["graph"], ckpts["gps"]], (6,), (1,), (1,), 2, 0,
            op_profile=False, isolate=False, device="cuda", cuda_graphs=True,
        )  # fmt: skip
    assert measured == []


def test_a_checkpoint_given_as_dot_is_served_and_labelled_by_its_name(ckpts, monkeypatch: pytest.MonkeyPatch) -> None:
    """cd runs/gt && gtc serve . failed with "--name '': use letters, digits, '_', '-' and '.' only"
    (no --name was given), and gtc profile . labelled the model '' in its tables and plots."""
    from runtime.profile_labels import model_labels as _labels
    from runtime.served import default_model_name
    from runtime.session import resolve_model_path

    monkeypatch.chdir(ckpts["node"])
    assert default_model_name(".") == ckpts["node"].name
    assert _labels([str(resolve_model_path("."))]) == [ckpts["node"].name]


def test_profile_refuses_cuda_graphs_on_the_cpu_before_measuring(
    ckpts, onnx_files, monkeypatch: pytest.MonkeyPatch
) -> None:
    """profile_models([gt.onnx, ckpt], device="cpu", cuda_graphs=True) measured every row of gt.onnx
    before the checkpoint's session refused CUDA graphs on the CPU."""
    import runtime.profile as profile

    measured: list[str] = []
    monkeypatch.setattr(profile, "measure_model", lambda path, *a, **k: measured.append(path))
    with pytest.raises(SessionError, match=r"^cuda_graphs: CUDA graphs replay on a GPU only; device is cpu$"):
        profile.profile_models(
            [onnx_files["graph"], ckpts["graph"]], (6,), (1,), (1,), 2, 0,
            op_profile=False, isolate=False, device="cpu", cuda_graphs=True,
        )  # fmt: skip
    assert measured == []
