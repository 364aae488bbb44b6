"""A real NVIDIA Triton Inference Server (the nvidia-pytriton wheel's binary) serving the python variant.

The repository is what ``gtc export --triton-repo`` writes: raw graphs in, our pre-processing and
graph-aware batching in a Python-backend model. Driven by ``tritonclient.http`` as a user would,
checked against :class:`runtime.session.GraphSession` on the same model file.
"""

from __future__ import annotations

import re
import threading
import warnings

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from exporters.triton_repo import PythonModelOptions, write_model_repository
from gtcompress.preprocess import NumpyGraph
from runtime.batcher import BatchConfig
from runtime.client import infer_graphs, raw_request, triton_inputs
from runtime.server import BackgroundServer, create_app
from runtime.session import GraphSession
from runtime.tritonserver import TritonServer, which_tritonserver

pytestmark = pytest.mark.skipif(
    which_tritonserver() is None, reason="nvidia-pytriton is not installed (pip install 'gtcompress[triton]')"
)

NAMES = {"gt_node": "node", "gt_graph": "graph", "gt_teddy": "teddy"}
OLD = "gt_graph_old"  # gt_graph as repositories were written before the python variant took a graph's own PE
BATCHED = "gt_node_batched"  # a long queue delay, so 16 concurrent clients surely share calls
SPLIT = "gt_node_split"  # as BATCHED, with at most 40 nodes per merged call: one execute, several calls


@pytest.fixture(scope="module")
def triton_server(exported, tmp_path_factory):
    """A Triton server on loopback serving every test model (python variant); stopped by PID after the module."""
    repo = tmp_path_factory.mktemp("triton-repo")
    for name, key in NAMES.items():
        write_model_repository(repo, name, exported[key].path, exported[key].spec, backend="python")
    opts = PythonModelOptions(max_batch_size=32, max_queue_delay_us=200_000)
    write_model_repository(repo, BATCHED, exported["node"].path, exported["node"].spec, backend="python", options=opts)
    split = write_model_repository(
        repo, SPLIT, exported["node"].path, exported["node"].spec, backend="python", options=opts
    )
    with open(split / "config.pbtxt", "a") as f:  # several merged calls in one execute
        f.write('parameters { key: "gtcompress_batch_nodes" value { string_value: "40" } }\n')
    old = write_model_repository(repo, OLD, exported["graph"].path, exported["graph"].spec, backend="python")
    text = (old / "config.pbtxt").read_text()
    pe_input = re.search(r',\n  \{\n    name: "pe_lap"\n.*?\n  \}', text, re.S)
    assert pe_input is not None
    (old / "config.pbtxt").write_text(text.replace(pe_input.group(0), ""))
    with TritonServer(repo) as srv:
        yield srv
    assert srv.process is None


@pytest.fixture(scope="module")
def sessions(exported):
    return {name: GraphSession(exported[key].path) for name, key in NAMES.items()}


@pytest.fixture
def client(triton_server):
    c = triton.InferenceServerClient(triton_server.url)
    yield c
    c.close()


def _graphs(exported, key: str, seed: int = 0) -> list[NumpyGraph]:
    """Graphs of different sizes: a lone node, a graph without edges, small and large ones."""
    spec = exported[key].spec
    lone = exported[key].graphs(1, seed=seed, lo=1, hi=2)[0]
    no_edges = NumpyGraph(lone.x[:1].repeat(4, axis=0), np.zeros((2, 0), np.int64), None)
    if spec.edge_attr is not None:
        no_edges = NumpyGraph(no_edges.x, no_edges.edge_index, lone.edge_attr[:0])
    return [lone, no_edges, *exported[key].graphs(3, seed=seed + 1, lo=5, hi=60)]


def test_health_and_model_metadata(client, exported) -> None:
    assert client.is_server_live() and client.is_server_ready()
    for name, key in NAMES.items():
        assert client.is_model_ready(name)
        spec = exported[key].spec
        md = client.get_model_metadata(name)
        want = ["x", "edge_index"] + (["edge_attr"] if spec.edge_attr is not None else []) + ["batch", "node_counts"]
        want += [f"pe_{kind}" for kind in spec.pe]  # optional: a graph's own encoding
        assert [i["name"] for i in md["inputs"]] == want
        x = next(i for i in md["inputs"] if i["name"] == "x")
        assert x["shape"] == [-1, -1, spec.x.dim]  # leading batch dimension, then [N, F]
        assert md["outputs"][0]["name"] == spec.output.name and md["outputs"][0]["shape"] == [-1, -1, spec.output.dim]
        cfg = client.get_model_config(name)
        assert cfg["backend"] == "python" and cfg["max_batch_size"] == 64
        assert cfg["dynamic_batching"]["max_queue_delay_microseconds"] == 2000
        assert all(i["allow_ragged_batch"] for i in cfg["input"])
        assert cfg["parameters"]["gtcompress_preprocessing"]["string_value"] == "server"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("name", list(NAMES))
def test_outputs_equal_graph_session(client, sessions, exported, name: str, binary: bool) -> None:
    graphs = _graphs(exported, NAMES[name])
    sess = sessions[name]
    for g in graphs:  # one graph per request
        got = infer_graphs(client, name, g, binary=binary)[0]
        want = sess.run(g)[0]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    together = infer_graphs(client, name, graphs, binary=binary)  # one request, a union with `batch`
    for got, want in zip(together, sess.run(graphs), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_sixteen_concurrent_clients_get_their_own_answers_in_shared_batches(triton_server, sessions, exported) -> None:
    graphs = exported["node"].graphs(16, seed=7, lo=3, hi=50)
    want = sessions["gt_node"].run(graphs)
    got: list[np.ndarray | None] = [None] * 16
    errors: list[BaseException] = []
    gate = threading.Barrier(16)

    def one(k: int) -> None:
        c = triton.InferenceServerClient(triton_server.url)
        try:
            gate.wait()
            got[k] = infer_graphs(c, BATCHED, graphs[k])[0]
        except BaseException as e:  # reported below, not lost in the thread
            errors.append(e)
        finally:
            c.close()

    client = triton.InferenceServerClient(triton_server.url)
    before = client.get_inference_statistics(BATCHED)["model_stats"][0]
    threads = [threading.Thread(target=one, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for k in range(16):
        assert got[k] is not None and got[k].shape == want[k].shape
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-5)
    stats = _statistics_after(client, BATCHED, before, 16)
    executions = int(stats["execution_count"]) - int(before.get("execution_count", 0))
    assert executions < 16  # some calls held more than one request
    assert max(int(b["batch_size"]) for b in stats["batch_stats"]) > 1
    client.close()


def _statistics_after(client, model: str, before: dict, inferences: int) -> dict:
    """The model's statistics once ``inferences`` more requests are counted. Triton counts an
    ``execute``'s requests when it returns, and the python variant answers each request before that
    (through its response sender), so a client may hold its answer before the count moves."""
    import time

    deadline = time.monotonic() + 30
    while True:
        stats = client.get_inference_statistics(model)["model_stats"][0]
        done = int(stats.get("inference_count", 0)) - int(before.get("inference_count", 0))
        if done >= inferences or time.monotonic() > deadline:
            assert done == inferences, (done, inferences)
            return stats
        time.sleep(0.05)


def _bad_requests(spec) -> list[tuple[str, dict[str, np.ndarray], str]]:
    """(kind, raw inputs with the batch dimension, text the error must contain)."""
    rng = np.random.default_rng(0)
    n = 6
    x = np.stack([rng.integers(0, c, n) for c in spec.x.cardinalities], axis=1).astype(np.int64)
    ei = np.array([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]], dtype=np.int64)
    ea = rng.normal(size=(5, spec.edge_attr.dim)).astype(np.float32)

    def req(**over: np.ndarray | None) -> dict[str, np.ndarray]:
        base = {"x": x, "edge_index": ei, "edge_attr": ea}
        base.update(over)
        return {k: v[None] for k, v in base.items() if v is not None}

    two = {k: np.concatenate([v, v]) for k, v in req().items()}  # batch dimension 2
    bad_x = x.copy()
    bad_x[2, 0] = spec.x.cardinalities[0]
    nan_attr = ea.copy()
    nan_attr[1, 0] = np.nan
    return [
        ("edge id out of range", req(edge_index=np.array([[0, 1], [1, 9]], np.int64), edge_attr=ea[:2]), "edge_index"),
        ("negative edge id", req(edge_index=np.array([[0, -1], [1, 2]], np.int64), edge_attr=ea[:2]), "edge_index"),
        ("category out of range", req(x=bad_x), "input 'x'"),
        ("non-finite edge feature", req(edge_attr=nan_attr), "edge_attr"),
        ("edge_attr rows != edges", req(edge_attr=ea[:3]), "edge_attr"),
        ("batch dimension 2", two, "batch dimension is 2"),
        ("batch vector unsorted", req(batch=np.array([0, 1, 0, 1, 1, 1], np.int64)), "batch"),
        ("batch vector wrong length", req(batch=np.zeros(4, np.int64)), "batch"),
        ("node_counts do not sum to N", req(node_counts=np.array([2, 2], np.int64)), "node_counts"),
        ("empty graph in node_counts", req(node_counts=np.array([6, 0], np.int64)), "node_counts"),
        ("wrong feature width", req(x=x[:, :1]), "x"),
        ("float edge_index", req(edge_index=ei.astype(np.float32)), "edge_index"),
        ("missing edge_index", req(edge_index=None), "edge_index"),
        ("unknown input", {**req(), "pad_mask": np.ones((1, 1, n), bool)}, "pad_mask"),
        ("own PE: rows != nodes", {**req(), "pe_rwse": np.zeros((1, n - 1, 4), np.float32)}, "input 'pe_rwse': "),
        ("own PE: non-finite", {**req(), "pe_rwse": np.full((1, n, 4), np.inf, np.float32)}, "input 'pe_rwse': "),
        ("own PE: wrong width", {**req(), "pe_rwse": np.zeros((1, n, 3), np.float32)}, "pe_rwse"),
        ("own PE: float64", {**req(), "pe_rwse": np.zeros((1, n, 4), np.float64)}, "pe_rwse"),
    ]


def test_bad_requests_get_an_error_naming_the_input_and_the_server_keeps_serving(client, sessions, exported) -> None:
    spec = exported["node"].spec
    cases = _bad_requests(spec)
    assert len(cases) >= 10
    for kind, inputs, needle in cases:
        with pytest.raises(InferenceServerException) as err:
            client.infer("gt_node", triton_inputs(inputs))
        assert err.value.status() == "400", (kind, err.value.status(), err.value.message())
        assert needle in err.value.message(), (kind, err.value.message())
        assert client.is_server_ready() and client.is_model_ready("gt_node"), kind
    g = exported["node"].graphs(1, seed=3)[0]
    np.testing.assert_allclose(infer_graphs(client, "gt_node", g)[0], sessions["gt_node"].run(g)[0], atol=1e-5)


def _together_with_one_bad(url: str, model: str, good: list, bad_inputs: dict) -> dict[int, object]:
    """Every graph of ``good`` and ``bad_inputs`` (last) sent at once from clients of their own: each
    one's answer, or the ``InferenceServerException`` it got, by position."""
    results: dict[int, object] = {}
    gate = threading.Barrier(len(good) + 1)

    def one(k: int) -> None:
        c = triton.InferenceServerClient(url)
        try:
            gate.wait()
            if k == len(good):
                c.infer(model, triton_inputs(bad_inputs))
                results[k] = "answered"
            else:
                results[k] = infer_graphs(c, model, good[k])[0]
        except InferenceServerException as e:
            results[k] = e
        finally:
            c.close()

    threads = [threading.Thread(target=one, args=(k,)) for k in range(len(good) + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_a_bad_request_in_a_shared_batch_fails_alone(triton_server, sessions, exported) -> None:
    good = exported["node"].graphs(7, seed=11, lo=3, hi=30)
    results = _together_with_one_bad(triton_server.url, BATCHED, good, _bad_requests(exported["node"].spec)[0][1])
    assert isinstance(results[7], InferenceServerException) and results[7].status() == "400"
    for k in range(7):
        np.testing.assert_allclose(results[k], sessions["gt_node"].run(good[k])[0], rtol=0, atol=1e-5)


def test_requests_of_one_execute_split_over_several_calls_get_their_own_answers(
    triton_server, sessions, exported
) -> None:
    """Requests of different sizes merged into one ``execute`` and run as several merged calls (at most
    40 nodes each) are answered as each call ends, through their response senders: every client gets
    its own answer, and a bad request among them its 400 while the others get theirs."""
    good = exported["node"].graphs(9, seed=13, lo=3, hi=45)
    bad_inputs = _bad_requests(exported["node"].spec)[2][1]  # a category out of range
    client = triton.InferenceServerClient(triton_server.url)
    before = client.get_inference_statistics(SPLIT)["model_stats"][0]
    results = _together_with_one_bad(triton_server.url, SPLIT, good, bad_inputs)
    assert isinstance(results[9], InferenceServerException) and results[9].status() == "400"
    assert "input 'x'" in results[9].message()
    assert sum(g.num_nodes for g in good) > 2 * 40  # more than two calls' worth
    for k in range(9):
        assert isinstance(results[k], np.ndarray), results[k]
        np.testing.assert_allclose(results[k], sessions["gt_node"].run(good[k])[0], rtol=0, atol=1e-5)
    stats = _statistics_after(client, SPLIT, before, 10)
    assert int(stats["execution_count"]) - int(before.get("execution_count", 0)) < 10  # requests shared an execute
    assert client.is_server_ready() and client.is_model_ready(SPLIT)
    client.close()


def test_the_same_client_code_runs_against_gtc_serve(client, sessions, exported) -> None:
    app = create_app(dict(sessions), BatchConfig(max_delay_ms=2))
    with BackgroundServer(app) as ours:
        mine = triton.InferenceServerClient(ours.url)
        try:
            for name, key in NAMES.items():
                graphs = _graphs(exported, key, seed=5)
                a = infer_graphs(client, name, graphs)
                b = infer_graphs(mine, name, graphs)
                for u, v in zip(a, b, strict=True):
                    np.testing.assert_allclose(u, v, rtol=0, atol=1e-5)
        finally:
            mine.close()


def test_a_graphs_own_pe_gets_the_answer_gtc_serve_and_graph_session_give(client, sessions, exported) -> None:
    """README: a graph may bring its own positional encoding, and GraphSession.run and gtc serve use it.
    The python variant took raw graphs only and computed its own, so the same infer_graphs call answered
    otherwise from Triton than from gtc serve (a LapPE's signs are arbitrary: -v is as valid as v)."""
    from tests.runtime.test_triton_own_pe import own_pe, with_pe

    app = create_app(dict(sessions), BatchConfig(max_delay_ms=2))
    with BackgroundServer(app) as ours:
        mine = triton.InferenceServerClient(ours.url)
        try:
            for name in ("gt_graph", "gt_node"):
                key = NAMES[name]
                graphs = exported[key].graphs(4, seed=31, lo=5, hi=20)
                own = [with_pe(g, own_pe(exported[key].spec, g, seed=i)) for i, g in enumerate(graphs)]
                mixed = [own[0], graphs[1], own[2], own[3]]  # one request; graph 1's PE is computed
                want = sessions[name].run(mixed)
                for got in (infer_graphs(client, name, mixed), infer_graphs(mine, name, mixed)):
                    for u, v in zip(got, want, strict=True):
                        np.testing.assert_allclose(u, v, rtol=0, atol=1e-5)
                alone = infer_graphs(client, name, own[0])[0]
                np.testing.assert_allclose(alone, sessions[name].run(own[0])[0], rtol=0, atol=1e-5)
                recomputed = sessions[name].run(graphs[0])[0]
                assert np.abs(alone - recomputed).max() > 1e-4, name  # the server's own PE answers otherwise
        finally:
            mine.close()


def test_a_repository_without_pe_inputs_computes_its_own_and_the_client_says_so(client, sessions, exported) -> None:
    """A repository exported before the python variant took a graph's own PE still answers (with the PE
    it computes); infer_graphs does not send the input Triton would refuse, and warns that the answer
    is not GraphSession.run's for that graph."""
    from runtime.client import OwnPEIgnoredWarning
    from tests.runtime.test_triton_own_pe import own_pe, with_pe

    g = exported["graph"].graphs(1, seed=32, lo=6, hi=12)[0]
    own = with_pe(g, own_pe(exported["graph"].spec, g))
    with pytest.warns(OwnPEIgnoredWarning, match=r"^model 'gt_graph_old' does not take a graph's own pe_lap \(its"):
        (got,) = infer_graphs(client, OLD, own)
    np.testing.assert_allclose(got, sessions["gt_graph"].run(g)[0], rtol=0, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        infer_graphs(client, OLD, g)  # a graph without its own PE: nothing to warn about


def test_raw_request_is_what_the_python_variant_takes(exported) -> None:
    graphs = exported["node"].graphs(3, seed=2)
    inputs, nodes, counts = raw_request(graphs, exported["node"].spec)
    assert list(inputs) == ["x", "edge_index", "edge_attr", "batch"]
    assert nodes == [g.num_nodes for g in graphs] and counts == [1, 1, 1]
    assert inputs["x"].shape[0] == sum(nodes) and np.array_equal(np.bincount(inputs["batch"]), nodes)
    single, _, _ = raw_request(graphs[:1], exported["node"].spec)
    assert "batch" not in single
