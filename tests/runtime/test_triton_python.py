"""The Python-backend model's logic without a Triton server: validation, packing, failure isolation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import runtime.triton_params as triton_params
import runtime.triton_python as tp
from runtime.errors import SessionError
from runtime.session import GraphSession
from runtime.triton_python import Failure, GraphBatchModel
from tests.runtime.conftest import python_request as _request


def test_answers_match_graph_session_and_a_bad_request_fails_alone(config, node_repo, exported) -> None:
    model = GraphBatchModel(node_repo, 1, config(node_repo))
    sess = GraphSession(exported["teddy"].path)
    graphs = exported["teddy"].graphs(4, seed=3)
    bad = _request(graphs[1])
    bad["edge_index"] = bad["edge_index"].copy()
    bad["edge_index"][0, 0, 0] = graphs[1].num_nodes
    union = graphs[2:]
    from gtcompress.preprocess import union_graphs

    merged = union_graphs(union)
    outs = model.answer([_request(graphs[0]), bad, _request(merged, merged.batch)])
    assert model.calls == 1  # the two valid requests ran as one union
    np.testing.assert_allclose(outs[0], sess.run(graphs[0])[0][None], atol=1e-6)
    assert isinstance(outs[1], Failure) and outs[1].invalid
    assert outs[1].message.startswith("input 'edge_index': ")
    want = np.concatenate(sess.run(union))[None]
    np.testing.assert_allclose(outs[2], want, atol=1e-6)


def test_a_request_needs_a_batch_dimension_of_one(config, node_repo, exported) -> None:
    model = GraphBatchModel(node_repo, "1", config(node_repo))
    g = exported["teddy"].graphs(1)[0]
    two = {k: np.concatenate([v, v]) for k, v in _request(g).items()}
    (out,) = model.answer([two])
    assert out == Failure(
        "input 'x': batch dimension is 2; send one graph, or one union of graphs with 'batch', per request, "
        f"with a leading dimension of 1 (shape [1, {g.num_nodes}, 2])",
        invalid=True,
    )


def test_soft_limits_split_the_queue_into_several_calls(config, node_repo, exported) -> None:
    model = GraphBatchModel(node_repo, 1, config(node_repo, gtcompress_batch_nodes="20"))
    graphs = exported["teddy"].graphs(6, seed=4, lo=6, hi=12)
    outs = model.answer([_request(g) for g in graphs])
    assert model.calls >= 3  # 6 graphs of 6-11 nodes, at most 20 nodes per call
    want = GraphSession(exported["teddy"].path).run(graphs)
    for got, w in zip(outs, want, strict=True):
        np.testing.assert_allclose(got[0], w, atol=1e-6)


def test_a_failing_merged_call_is_retried_request_by_request(config, node_repo, exported, monkeypatch) -> None:
    model = GraphBatchModel(node_repo, 1, config(node_repo))
    real = tp.run_items

    def flaky(served, items):  # the merged call fails; each request alone succeeds
        if len(items) > 1:
            raise RuntimeError("out of memory")
        return real(served, items)

    monkeypatch.setattr(tp, "run_items", flaky)
    graphs = exported["teddy"].graphs(3, seed=5)
    outs = model.answer([_request(g) for g in graphs])
    assert model.calls == 4  # one merged attempt, then three alone
    for got, w in zip(outs, GraphSession(exported["teddy"].path).run(graphs), strict=True):
        np.testing.assert_allclose(got[0], w, atol=1e-6)


def test_bad_parameters_and_a_missing_model_file_name_what_is_wrong(config, node_repo, tmp_path) -> None:
    with pytest.raises(
        SessionError, match=r"^model 'gt_node': parameter gtcompress_threads is 'many'; expected an integer$"
    ):
        GraphBatchModel(node_repo, 1, config(node_repo, gtcompress_threads="many"))
    with pytest.raises(
        SessionError, match=r"^model 'gt_node': parameter gtcompress_max_nodes is 0; expected at least 1$"
    ):
        GraphBatchModel(node_repo, 1, config(node_repo, gtcompress_max_nodes="0"))
    with pytest.raises(SessionError, match=r"/2: holds no model\.onnx or model\.plan \(the model this Python-backend"):
        GraphBatchModel(node_repo, 2, config(node_repo, gtcompress_model_file=""))


def test_a_misspelt_or_unknown_gtcompress_parameter_is_refused_at_load(config, node_repo, exported) -> None:
    """README: "add a key there to change one". A misspelt key (gtcompress_max_node) loaded silently
    and the limit stayed at its default: a 10-node request was answered under a 5-node "limit"."""
    known = ", ".join(sorted(triton_params.KNOWN_PARAMETERS))
    with pytest.raises(SessionError) as err:
        GraphBatchModel(node_repo, 1, config(node_repo, gtcompress_max_node="5"))
    assert str(err.value) == (
        f"model 'gt_node': unknown parameter gtcompress_max_node in config.pbtxt; the gtcompress parameters are {known}"
    )
    with pytest.raises(SessionError, match=r"unknown parameters gtcompress_max_requests, gtcompress_max_x in config"):
        GraphBatchModel(node_repo, 1, config(node_repo, gtcompress_max_x="1", gtcompress_max_requests="2"))
    assert "gtcompress_max_nodes" in known and "gtcompress_max_pe_work" in known
    model = GraphBatchModel(node_repo, 1, config(node_repo, gtcompress_max_nodes="5", EXECUTION_ENV_PATH="x"))
    g = exported["teddy"].graphs(1, seed=6, lo=10, hi=11)[0]
    (out,) = model.answer([_request(g)])
    assert isinstance(out, Failure) and out.message == "input 'x': request has 10 nodes, above this server's 5"


def test_max_pe_work_is_read_from_the_parameters(config, node_repo, exported) -> None:
    """README: the per-request limits are read from ``parameters`` ("add a key there to change one").
    max_pe_work is one of them; it was silently ignored (always 1.5e11), so a Triton user could neither
    lower it nor let larger graphs through."""
    from gtcompress.preprocess.pe import PE_GRAPH_WORK

    g = exported["teddy"].graphs(1, seed=6, lo=10, hi=11)[0]  # RWSE k = 4: 3 * 10^3 + the fixed cost
    need = 3 * 10**3 + PE_GRAPH_WORK["rwse"]
    model = GraphBatchModel(node_repo, 1, config(node_repo, gtcompress_max_pe_work=str(int(need) - 1)))
    assert model.limits.max_pe_work == need - 1
    (out,) = model.answer([_request(g)])
    assert isinstance(out, Failure) and out.invalid
    assert out.message.startswith(
        f"input 'x': computing pe_rwse for this request's 1 graph(s) (the largest, graph 0, has 10 nodes) takes "
        f"{need:.4g} steps of work, above this server's max_pe_work {need - 1:.4g}; send fewer or smaller graphs, "
        "or raise the model's gtcompress_max_pe_work parameter in its config.pbtxt"
    )  # not "or pe_rwse computed by the client" (Triton refuses inputs its config does not declare), nor the
    # graph's own pe_rwse: this model's TEDDY computes it again (test_triton_own_pe.py)
    model = GraphBatchModel(node_repo, 1, config(node_repo, gtcompress_max_pe_work="1.5e12"))
    assert model.limits.max_pe_work == 1.5e12
    (out,) = model.answer([_request(g)])
    np.testing.assert_allclose(out[0], GraphSession(exported["teddy"].path).run(g)[0], atol=1e-6)
    assert GraphBatchModel(node_repo, 1, config(node_repo)).limits.max_pe_work == 1.5e11  # the default
    for bad, why in (("lots", "'lots'; expected a number"), ("0", "0; expected at least 1"), ("inf", "inf; expected")):
        with pytest.raises(SessionError, match=rf"^model 'gt_node': parameter gtcompress_max_pe_work is {why}"):
            GraphBatchModel(node_repo, 1, config(node_repo, gtcompress_max_pe_work=bad))


#: What the README tells a Triton container to install (orjson: used when present, else json).
THIRD_PARTY = ("numpy", "scipy", "threadpoolctl", "onnxruntime", "orjson")


def test_the_repository_runs_from_its_own_copy_of_the_runtime(config, node_repo, exported, tmp_path) -> None:
    """``model.py`` imports the runtime copied into ``1/vendor/``: in a Python that has numpy, scipy
    and onnxruntime but no gtcompress (``-S``: no .pth, so no editable install), it loads from there
    alone, imports no third-party package but those the README lists (torch least of all), and
    answers as GraphSession does."""
    import site
    import subprocess
    import sys

    graphs = exported["teddy"].graphs(3, seed=8)
    np.savez(tmp_path / "req.npz", **{f"{i}_{k}": v for i, g in enumerate(graphs) for k, v in _request(g).items()})
    (tmp_path / "cfg.json").write_text(json.dumps(config(node_repo)))
    code = f"""
import json, sys
sys.path[:0] = [{str(node_repo / "1")!r}, *{site.getsitepackages()!r}]
import numpy as np
import model
from runtime.triton_python import GraphBatchModel
ours = sorted(m.__file__ for n, m in sys.modules.items() if n.split(".")[0] in ("runtime", "gtcompress"))
assert all(f.startswith({str(node_repo / "1" / "vendor")!r}) for f in ours), ours
m = GraphBatchModel({str(node_repo)!r}, 1, json.load(open("cfg.json")))
req = np.load("req.npz")
outs = m.answer([{{k.split("_", 1)[1]: req[k] for k in req.files if k.startswith(f"{{i}}_")}} for i in range(3)])
np.savez("out.npz", *outs)
third = {{n.split(".")[0] for n in sys.modules if not n.startswith("_")}} - set(sys.stdlib_module_names)
assert third <= {{*{THIRD_PARTY!r}, "cython_runtime", "model", "runtime", "gtcompress"}}, third
print(len(ours), m.calls)
"""
    proc = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded, calls = map(int, proc.stdout.split())
    assert loaded >= 10 and calls == 1
    outs = np.load(tmp_path / "out.npz")
    sess = GraphSession(exported["teddy"].path)
    for i, g in enumerate(graphs):
        np.testing.assert_allclose(outs[f"arr_{i}"], sess.run(g)[0][None], atol=1e-6)
    vendor = node_repo / "1" / "vendor"
    assert (vendor / "runtime" / "triton_python.py").is_file() and not (vendor / "trt_plugins").exists()


@pytest.mark.parametrize(("instance", "gpu"), [(("GPU", 1), 1), (("CPU", 0), 0), (None, 0)])
def test_a_plan_instance_runs_on_its_instance_gpu(
    config, node_repo, exported, tmp_path, monkeypatch, instance, gpu
) -> None:
    """A TensorRT plan in a KIND_GPU instance on GPU 1 ran on GPU 0 (CUDA's default device), so N
    instances over N GPUs all loaded GPU 0. TensorRT and CUDA are fakes here (see test_tensorrt_backend)."""
    import shutil

    import trt_plugins.tensorrt_plugin as trt_plugin
    from runtime import backends
    from tests.runtime.test_tensorrt_backend import FakeCuda, fake_tensorrt

    repo = tmp_path / node_repo.name
    shutil.copytree(node_repo, repo)
    (repo / "1" / "model.plan").write_bytes(b"engine")
    cuda = FakeCuda(gpus=2)
    trt = fake_tensorrt(repo / "1" / "model.onnx", cuda)
    monkeypatch.setattr(trt_plugin, "import_tensorrt", lambda: (trt, None))
    monkeypatch.setattr(backends, "_load_cudart", lambda: cuda)
    model = GraphBatchModel(repo, 1, config(repo, gtcompress_model_file="model.plan"), instance)
    assert model.session.path.name == "model.plan" and model.session.backend.device == gpu
    graphs = exported["teddy"].graphs(2, seed=4)
    outs = model.answer([_request(g) for g in graphs])
    sess = GraphSession(exported["teddy"].path)
    for out, g in zip(outs, graphs, strict=True):
        np.testing.assert_allclose(out, sess.run(g)[0][None], atol=1e-6)


def test_an_onnx_instance_runs_where_its_instance_group_puts_it(config, node_repo) -> None:
    """A KIND_CPU instance (what the writer declares) took whatever ONNX Runtime found first: with
    onnxruntime-gpu and a GPU, every CPU instance ran on GPU 0."""
    import onnxruntime as ort

    from runtime.backends import nvidia_gpu_present
    from runtime.errors import SessionError

    cpu = GraphBatchModel(node_repo, 1, config(node_repo), ("CPU", 0))
    assert cpu.session.providers == ["CPUExecutionProvider"]
    if nvidia_gpu_present() or "CUDAExecutionProvider" not in ort.get_available_providers():
        return  # KIND_GPU would run here; its failure mode needs onnxruntime-gpu without a GPU
    with pytest.raises(SessionError, match="CUDAExecutionProvider"):
        GraphBatchModel(node_repo, 1, config(node_repo), ("GPU", 0))


def test_attention_limits_take_the_numbers_gtc_serve_takes(config, node_repo) -> None:
    """gtc serve --max-attention-mib takes 2048.0 (its help shows it so); the same value in config.pbtxt
    failed the model's load with "expected an integer"."""
    model = GraphBatchModel(
        node_repo,
        1,
        config(node_repo, gtcompress_max_attention_mib="2048.0", gtcompress_batch_attention_mib="1.5e2"),
    )
    assert model.limits.max_attention_mib == 2048.0
    assert model.batch.max_attention_mib == 150.0
    with pytest.raises(
        SessionError, match=r"^model 'gt_node': parameter gtcompress_max_attention_mib is 0\.5; expected at least 1"
    ):
        GraphBatchModel(node_repo, 1, config(node_repo, gtcompress_max_attention_mib="0.5"))


def test_a_merged_call_holds_no_more_than_one_request_may(config, node_repo) -> None:
    """The batch's memory limit is capped at the request limit: each request Triton merges is held to
    gtcompress_max_attention_mib alone, so their merged call may not hold more."""
    model = GraphBatchModel(
        node_repo, 1, config(node_repo, gtcompress_max_attention_mib="100", gtcompress_batch_attention_mib="256")
    )
    assert (model.limits.max_attention_mib, model.batch.max_attention_mib) == (100.0, 100.0)
    assert model.served.batch is model.batch


def test_an_integer_parameter_past_floats_range_is_read_as_an_integer() -> None:
    """The integer and number parameters share one parser, whose finiteness check converted an integer
    to float: a count of 400 digits raised OverflowError (a traceback at load) instead of being read
    as the integer it is, as before the parsers were merged; a number past float's range is refused."""
    huge = "1" + "0" * 400
    assert triton_params.int_parameter({"gtcompress_max_nodes": huge}, "gtcompress_max_nodes", "model 'm'") == 10**400
    with pytest.raises(SessionError, match=r"^model 'm': parameter gtcompress_max_attention_mib is 1e400; expected"):
        triton_params.number_parameter(
            {"gtcompress_max_attention_mib": "1e400"}, "gtcompress_max_attention_mib", "model 'm'"
        )


def test_the_encodings_memory_is_held_to_gtcompress_max_inflight_mib(config, node_repo, exported, monkeypatch) -> None:
    """gtc serve charges the encodings it computes for a raw request (their working memory, far more than
    the request: a 1 MiB graph's LapPE took 145 MiB) against --max-inflight-mib; the python variant had
    no such limit and no parameter for one, so a request past it was encoded and answered whatever it cost.
    It is refused now, before TEDDY or any encoding runs, and the others in its execute are answered."""
    from gtcompress.preprocess import pe as pe_module
    from gtcompress.preprocess.pe import pe_bytes

    big, small = exported["teddy"].graphs(2, seed=7, lo=300, hi=301)[0], exported["teddy"].graphs(1, seed=8)[0]
    edges = np.array([big.num_edges], dtype=np.int64)
    need = pe_bytes("rwse", np.array([300]), edges, 4, fewer_edges=True)  # TEDDY may still drop edges
    held = sum(a.nbytes for a in _request(big).values())
    assert need + held > 2**20  # past 1 MiB, within the default 2048
    model = GraphBatchModel(node_repo, 1, config(node_repo, gtcompress_max_inflight_mib="1"))
    assert model.limits.inflight_bytes == 2**20  # the parameter itself, not gtc serve's 512 MiB body limit
    encoded: list[int] = []
    real = pe_module.rwse
    monkeypatch.setattr(pe_module, "rwse", lambda ei, ptr, k: encoded.append(int(ptr[-1])) or real(ei, ptr, k))
    refused, answered = model.answer([_request(big), _request(small)])
    assert refused == Failure(
        f"input 'x': computing pe_rwse for this request's graphs takes about {need:,} bytes of memory, which with "
        f"its {held:,} bytes of arrays is more than model 'gt_node''s budget of {2**20:,} bytes a request "
        "(gtcompress_max_inflight_mib 1); send fewer or smaller graphs, or raise the model's "
        "gtcompress_max_inflight_mib parameter in its config.pbtxt",
        invalid=True,
    )
    assert encoded == [small.num_nodes]  # the refused graph was never encoded
    sess = GraphSession(exported["teddy"].path)
    np.testing.assert_allclose(answered[0], sess.run(small)[0], atol=1e-6)
    default = GraphBatchModel(node_repo, 1, config(node_repo))
    assert default.limits.max_inflight_mib == 2048.0
    (out,) = default.answer([_request(big)])
    np.testing.assert_allclose(out[0], sess.run(big)[0], atol=1e-5)
    bad = r"^model 'gt_node': parameter gtcompress_max_inflight_mib is 0\.5; expected at least 1"
    with pytest.raises(SessionError, match=bad):
        GraphBatchModel(node_repo, 1, config(node_repo, gtcompress_max_inflight_mib="0.5"))


def _rss_anon_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:")) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads RssAnon from /proc (Linux)")
def test_a_large_request_gives_its_memory_back_to_the_requests_after_it(config, node_repo, exported) -> None:
    """ONNX Runtime's memory arena grows to the largest call it has run and kept that memory: in a
    Triton stub, one request of 160,000 nodes left 130 MiB held through every small request after it,
    on every instance. The Triton model shrinks the arena after a call past its limits, so small requests after a
    large one run in about what they ran in before it."""
    model = GraphBatchModel(node_repo, 1, config(node_repo))
    spec = exported["teddy"].spec
    small = [_request(g) for g in exported["teddy"].graphs(4, seed=1)]
    rng = np.random.default_rng(0)
    graphs, n = 4000, 40  # one request: 4,000 graphs of 40 nodes, 3 edges a node
    offsets = np.repeat(np.arange(graphs) * n, 3 * n)
    large = {
        "x": np.stack([rng.integers(0, c, graphs * n) for c in spec.x.cardinalities], axis=1).astype(spec.x.dtype)[
            None
        ],
        "edge_index": (rng.integers(0, n, (2, graphs * 3 * n)) + offsets)[None],
        "edge_attr": rng.random((1, graphs * 3 * n, spec.edge_attr.dim), dtype=np.float32),
        "batch": np.repeat(np.arange(graphs), n)[None],
    }
    model.answer(small)
    before = _rss_anon_mib()
    (out,) = model.answer([large])
    assert out.shape == (1, graphs * n, spec.output.dim)
    del out
    assert not any(isinstance(o, Failure) for o in model.answer(small))
    assert _rss_anon_mib() - before < 16
