"""Dense attention memory: a model that attends densely within each graph pads every graph of a call to
the largest, so its score memory grows with graphs x largest^2. The server refuses a request past
``ServerLimits.max_attention_mib`` with a 400 naming the graph, and the batcher never merges requests
into a call past ``BatchConfig.max_attention_mib`` (one large graph with many small ones)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest

from exporters.onnx import export_onnx
from gtcompress.preprocess import NumpyGraph
from gtcompress.preprocess.batching import largest_graph, union_graphs
from gtcompress.preprocess.layouts import bucketed_layout, dense_layout, padded_rows
from runtime.errors import SessionError
from runtime.packing import MIB, BatchConfig, GraphRequest, fits, pack
from runtime.protocol import InferRequest
from runtime.request_cost import attention_cell_bytes
from runtime.served import request_graph
from runtime.server import BackgroundServer, ServedModel, ServerLimits, create_app
from runtime.session import GraphSession

LIMIT_MIB = 5  # the node model (GT, 2 heads, edge features): 78 bytes a cell, so one graph of up to 259 nodes
GRAPHORMER_LIMIT_MIB = 0.5


@pytest.fixture(scope="module")
def server(session) -> Iterator[BackgroundServer]:
    app = create_app([ServedModel("m", session)], limits=ServerLimits(max_attention_mib=LIMIT_MIB), warmup=False)
    with BackgroundServer(app) as srv:
        yield srv


def _graph(exported, nodes: int, seed: int = 0) -> NumpyGraph:
    return exported["node"].graphs(1, seed=seed, lo=nodes, hi=nodes + 1)[0]


def _post(srv: BackgroundServer, g: NumpyGraph) -> httpx.Response:
    tensors = {"x": ("INT64", g.x), "edge_index": ("INT64", g.edge_index), "edge_attr": ("FP32", g.edge_attr)}
    if g.batch is not None:
        tensors["batch"] = ("INT64", g.batch)
    inputs = [
        {"name": n, "datatype": d, "shape": list(a.shape), "data": a.ravel().tolist()} for n, (d, a) in tensors.items()
    ]
    return httpx.post(f"http://{srv.url}/v2/models/m/infer", content=json.dumps({"inputs": inputs}), timeout=60)


def test_cell_bytes_follow_the_lowering_and_the_heads(exported) -> None:
    assert attention_cell_bytes(GraphSession(exported["node"].path)) == 2 * (10 + 20) + 18  # dense GT, 2 heads
    assert attention_cell_bytes(GraphSession(exported["graph"].path)) == 0  # padded: edges only


_PEAK_SCRIPT = """
import sys
import numpy as np
from gtcompress.preprocess.random_graphs import random_graph
from runtime.session import GraphSession

def peak_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))

session = GraphSession(sys.argv[1], threads=1)
n = int(sys.argv[2])
spec = session.spec
g = random_graph(np.random.default_rng(0), n, 3 * n, spec.x, spec.edge_attr)
g.pe.update({k: np.zeros((n, d), np.float32) for k, d in spec.pe.items()})
session.run([random_graph(np.random.default_rng(1), 4, 8, spec.x, spec.edge_attr)])  # lazy initialisation
before = peak_kib()
session.run([g])
print(peak_kib() - before)
"""


def _peak_bytes(path: Path, n: int) -> int:
    """Peak RSS growth of one ``n``-node call of the model at ``path``, in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(path), str(n)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    return int(out.stdout.split()[-1]) * 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from /proc (Linux)")
def test_dense_gt_cell_bytes_cover_what_a_call_takes(exported) -> None:
    """The limit is there to keep the server out of memory, so a cell counts what a call holds for it,
    not the float32 scores alone: a 2-head GT with edge features, counted at 8 B a cell, took 53 B a
    cell (softmax beside the scores, the dense per-head edge bias's log-sum-exp buffers), so requests
    within ``max_attention_mib`` took 7x that. Measured in a fresh process (peak RSS is per process)."""
    path = exported["node"].path
    n = 1500
    peak = _peak_bytes(path, n)
    counted = n * n * attention_cell_bytes(GraphSession(path))
    assert peak > n * n * 4 * 2 * 4  # far above the 2 heads' scores: what made the old count wrong
    assert peak <= counted, f"peak {peak / MIB:.0f} MiB for {n} nodes, counted {counted / MIB:.0f} MiB"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from /proc (Linux)")
@pytest.mark.parametrize("keep", [1.0, 0.95])
def test_dense_gt_cell_bytes_cover_the_softmax_mask(tmp_path, keep: float) -> None:
    """A GT's softmax on the ``dense`` lowering lifts masked scores and zeroes their weights by a mask
    of the layer's bias (boolean, then float32): a 1-head GT without edge features took 22.5 B a cell,
    counted 22 before the mask was (10 a head, 12 a cell). Token-pruned, it also holds the bias narrowed
    to the kept tokens and the narrowing's int64 indices: 32-35 B a cell at keep 0.95, counted 28 before."""
    from gtcompress.models import LayerSpec, ModelConfig
    from gtcompress.models.config import FeatureSpec
    from tests.runtime.conftest import seeded_model

    layers = [LayerSpec(heads=1, ffn_dim=32, token_keep=keep) for _ in range(2)]
    cfg = ModelConfig(arch="gt", node_features=FeatureSpec("float", 3), out_dim=2, hidden=16, heads=1, layers=layers)
    path = export_onnx(seeded_model(cfg), tmp_path / "gt1.onnx", "dense", verify_batches=1).path
    n = 1500
    peak = _peak_bytes(path, n)
    counted = n * n * attention_cell_bytes(GraphSession(path))
    assert peak <= counted, f"peak {peak / MIB:.1f} MiB for {n} nodes, counted {counted / MIB:.1f} MiB"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from /proc (Linux)")
@pytest.mark.parametrize("arch", ["gt", "graphormer"])
def test_dense_cell_bytes_cover_eight_heads_with_edge_features(tmp_path, arch: str) -> None:
    """The widest cells measured, 8 heads and 4 layers with edge features on 1,000 nodes. GT: its dense
    bias is per head, and the softmax's zeroing mask built from it was per head too (boolean, then
    float32, every layer): 434 B a cell, counted 402; the mask is now the graph's (the shared edge-count
    bias), one a cell. Graphormer: 270 B a cell, counted 208 when a head was counted 4 + 8 + 8 B (ONNX
    Runtime's arena grows in larger steps with more heads, so a head's bytes rise with the heads)."""
    from gtcompress.models import ModelConfig
    from gtcompress.models.config import FeatureSpec
    from tests.runtime.conftest import seeded_model

    cfg = ModelConfig(
        arch=arch,
        node_features=FeatureSpec("float", 3),
        edge_features=FeatureSpec("float", 2),
        out_dim=2,
        hidden=32,
        heads=8,
        num_layers=4,
    )
    path = export_onnx(seeded_model(cfg), tmp_path / f"{arch}8.onnx", "dense", verify_batches=1).path
    n = 1000
    peak = _peak_bytes(path, n)
    counted = n * n * attention_cell_bytes(GraphSession(path))
    assert peak <= counted, f"peak {peak / n / n:.1f} B a cell for {n} nodes, counted {counted / n / n:.0f}"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{bad", "metadata 'model_config' is not valid JSON (Expecting property name enclosed in double quotes: "
         "line 1 column 2 (char 1))"),
        ('{"layers": [{"heads": "two"}]}',
         "metadata 'model_config' has no usable head counts (invalid literal for int() with base 10: 'two')"),
        ('{"layers": [3]}', "metadata 'model_config' has no usable head counts ('int' object has no attribute 'get')"),
        # before: json's RecursionError / ValueError, a traceback from `gtc serve`
        ("[" * 100_000 + "]" * 100_000, "metadata 'model_config' is not valid JSON (nested too deeply)"),
        ('{"hidden": ' + "1" * 5000 + "}",
         "metadata 'model_config' is not valid JSON (a number has more than 4300 digits)"),
    ],
)  # fmt: skip
def test_a_model_config_without_usable_heads_is_refused_at_load(tmp_path, exported, value: str, message: str) -> None:
    """The dense attention limit is sized by the heads: a corrupt entry must not load (it was a
    traceback from ``json``), nor be read as some default that lets requests past the limit."""
    path = tmp_path / "m.onnx"
    proto = onnx.load(str(exported["node"].path))
    next(p for p in proto.metadata_props if p.key == "model_config").value = value
    onnx.save(proto, str(path))
    with pytest.raises(SessionError) as info:
        ServedModel("m", GraphSession(path))
    assert str(info.value) == f"{path}: {message}"


def test_a_graph_whose_dense_attention_passes_the_limit_gets_a_400(server, session, exported) -> None:
    small = _graph(exported, 240)  # 240^2 x 78 B = 4.3 MiB, with its nodes and edges 4.7 (runtime.call_memory)
    r = _post(server, small)
    assert r.status_code == 200, r.text
    big = _graph(exported, 300)  # 6.7 MiB
    r = _post(server, big)
    assert r.status_code == 400
    assert r.json()["error"] == (
        "input 'x': graph 0 has 300 nodes; model 'm' attends densely within each graph, so this request's 1 "
        "graph(s) padded to 300 nodes need 6.7 MiB of attention scores per layer, above this server's 5 MiB "
        "(send smaller graphs)"
    )
    assert httpx.get(f"http://{server.url}/v2/health/ready").status_code == 200


def test_graphs_that_fit_alone_but_not_together_are_told_to_come_apart(server, session, exported) -> None:
    g = union_graphs([_graph(exported, 100, seed=1), _graph(exported, 200, seed=2)])  # 2 x 200^2 x 78 B
    r = _post(server, g)
    assert r.status_code == 400
    assert r.json()["error"].startswith("input 'x': graph 1 has 200 nodes;")
    assert r.json()["error"].endswith("(send graph 1 in a request of its own)")
    assert _post(server, _graph(exported, 200, seed=2)).status_code == 200  # graph 1 alone


def test_packed_rows_are_counted_not_one_row_per_graph(server, session, exported) -> None:
    """GT packs small graphs into rows as long as the largest: a 150-node graph with 15 graphs of 10
    nodes is 2 rows (3.3 MiB), not 16 (26.8 MiB), so it is served, and answered as a direct run answers."""
    assert session.spec.packed
    g = union_graphs([_graph(exported, 150, seed=3), *(_graph(exported, 10, seed=10 + i) for i in range(15))])
    r = _post(server, g)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    direct = session.run(g)[0]  # node-level: one row per node of the union
    np.testing.assert_allclose(np.asarray(out["data"], dtype=np.float32).reshape(out["shape"]), direct, atol=1e-5)
    # 250 + 30 x 10 nodes: 3 rows of 250 slots, 13.9 MiB; the 250-node graph alone would fit
    g = union_graphs([_graph(exported, 250, seed=4), *(_graph(exported, 10, seed=40 + i) for i in range(30))])
    r = _post(server, g)
    assert r.status_code == 400
    assert r.json()["error"] == (
        "input 'x': graph 0 has 250 nodes; model 'm' attends densely within each graph, so this request's 31 "
        "graph(s) packed into 3 rows of 250 slots need 13.9 MiB of attention scores per layer, above this "
        "server's 5 MiB (send graph 0 in a request of its own)"
    )


def test_padded_rows_follow_the_layout() -> None:
    counts = np.array([250] + [10] * 30)
    assert (
        padded_rows(counts, pack=True)
        == 3
        == dense_layout(np.repeat(np.arange(31), counts), 550, 31, True)["pad_mask"].shape[0]
    )
    assert padded_rows(counts, pack=False) == 31
    assert padded_rows(np.array([7]), pack=True) == 1


def test_an_edge_lowering_has_no_attention_limit(exported) -> None:
    s = GraphSession(exported["graph"].path)
    m = ServedModel("g", s)
    assert m.batch.attention_cell_bytes == 0


@dataclass
class _Item:
    nodes: int
    num_graphs: int
    largest: int
    edges: int = 0


def test_the_batcher_does_not_merge_a_large_graph_into_many_small_ones() -> None:
    cfg = replace(BatchConfig(), max_attention_mib=1.0, attention_cell_bytes=16)  # 65,536 cells
    small = [_Item(10, 1, 10) for _ in range(100)]  # 100 x 10^2 = 10,000 cells
    big = _Item(200, 1, 200)  # 40,000 cells alone; 101 x 200^2 with the small ones
    assert fits(cfg, 1, [10, 0, 1, 10], small[1])
    assert not fits(cfg, 100, [1000, 0, 100, 10], big)
    assert fits(replace(cfg, attention_cell_bytes=0), 100, [1000, 0, 100, 10], big)  # no dense attention
    batches = pack([*small, big, *small[:2]], cfg)
    assert [len(b) for b in batches] == [100, 1, 2]  # the big graph runs alone; the next two wait for it
    for b in batches:
        cells = sum(i.num_graphs for i in b) * max(i.largest for i in b) ** 2
        assert cells * 16 <= 1 << 20 or len(b) == 1


def test_largest_graph_finds_the_first_of_the_largest() -> None:
    assert largest_graph(None, 7) == (7, 0)
    assert largest_graph(np.array([0, 0, 1, 1, 1, 2, 2, 2]), 8, 3) == (3, 1)
    assert largest_graph(np.zeros(0, dtype=np.int64), 0, 1) == (0, 0)


def _graphormer(tmp_path, heads: int, edges: bool) -> GraphSession:
    import torch

    from exporters.onnx import export_onnx
    from gtcompress.data.base import FeatureSpec
    from gtcompress.models import LayerSpec, ModelConfig, build_model

    torch.manual_seed(0)
    cfg = ModelConfig(
        arch="graphormer",
        node_features=FeatureSpec("categorical", 1, [4]),
        edge_features=FeatureSpec("float", 2) if edges else None,
        out_dim=2,
        hidden=16,
        heads=4,
        layers=[LayerSpec(heads=heads, ffn_dim=8)],
    )
    path = tmp_path / f"graphormer-{heads}-{edges}.onnx"
    export_onnx(build_model(cfg).eval(), path, "dense", verify=False)
    return GraphSession(path)


def test_graphormer_counts_its_biases_and_shortest_paths(tmp_path) -> None:
    """Besides its scores (4 B a head), a Graphormer holds a spatial bias and the biased scores per head
    (16 B, and 12 B more for the edge bias) and the shortest-path bins and their MatMul buffers (48 B)
    for every padded cell: measured on ONNX Runtime CPU, 68 B a cell at 1 head, where 4 B were counted,
    so a graph 4x wider than the limit allowed was let in. Without heads nothing is computed."""
    assert attention_cell_bytes(_graphormer(tmp_path, 1, False)) == 4 + 16 + 48
    session = _graphormer(tmp_path, 2, True)
    assert attention_cell_bytes(session) == 2 * (4 + 16 + 12) + 48
    assert attention_cell_bytes(_graphormer(tmp_path, 0, True)) == 0
    app = create_app(
        [ServedModel("m", session)], limits=ServerLimits(max_attention_mib=GRAPHORMER_LIMIT_MIB), warmup=False
    )
    rng = np.random.default_rng(0)
    g = NumpyGraph(
        x=rng.integers(0, 4, (90, 1)),
        edge_index=rng.integers(0, 90, (2, 180)),
        edge_attr=rng.standard_normal((180, 2)).astype(np.float32),
    )
    with BackgroundServer(app) as srv:
        r = _post(srv, g)  # 90^2 x 112 B = 0.87 MiB (0.06 MiB counted as 2 heads' scores)
    assert r.status_code == 400
    assert r.json()["error"] == (
        "input 'x': graph 0 has 90 nodes; model 'm' attends densely within each graph, so this request's 1 "
        "graph(s) padded to 90 nodes need 0.9 MiB of attention scores per layer, above this server's 0.5 MiB "
        "(send smaller graphs)"
    )
    np.testing.assert_equal(session.run(g)[0].shape, (90, 2))  # the session itself still runs it


def _post_graph(srv: BackgroundServer, x: np.ndarray, edge_index: np.ndarray) -> httpx.Response:
    inputs = [
        {"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()},
        {
            "name": "edge_index",
            "datatype": "INT64",
            "shape": list(edge_index.shape),
            "data": edge_index.ravel().tolist(),
        },
    ]
    return httpx.post(f"http://{srv.url}/v2/models/g/infer", content=json.dumps({"inputs": inputs}), timeout=60)


def test_padded_neighbour_lists_past_the_limit_get_a_400(exported) -> None:
    """The padded lowering pads each node's incoming edges to its degree bucket's largest in-degree: a
    heavy-tailed graph takes many times its edges in slots. It was let through whatever the limit
    (``Edge lowerings have no such term``); now it is refused, naming slots, bytes and the limit,
    while a CLUSTER-sized graph (120 nodes, ~40 in-degree) is served."""
    s = GraphSession(exported["graph"].path)
    m = ServedModel("g", s)
    assert m.batch.slot_bytes == 8 * 16 + 24 * 2 + 32 and m.batch.slot_buckets == 4  # hidden 16, 2 heads
    rng = np.random.default_rng(0)
    n = 400
    dst = np.repeat(np.arange(n), np.floor(300 / (np.arange(n) + 1)).astype(np.int64))  # 1,767 edges
    heavy = np.stack([rng.integers(0, n, dst.size), dst])
    lay = bucketed_layout(heavy, n, 4)
    slots = sum(lay[f"nbr_src_{b}"].size for b in range(4))
    assert slots == 3_847
    cluster = rng.integers(0, 120, (2, 120 * 40))
    x = rng.normal(size=(n, 3)).astype(np.float32)
    req = InferRequest({"x": x[:120], "edge_index": cluster}, {"x": "FP32", "edge_index": "INT64"})
    assert request_graph(req, m, ServerLimits())[0].num_edges == 4_800  # 5,168 slots, 1 MiB: far within 2 GiB
    app = create_app([m], limits=ServerLimits(max_attention_mib=0.5), warmup=False)  # 2,520 slots
    with BackgroundServer(app) as srv:
        r = _post_graph(srv, x, heavy)
        assert r.status_code == 400
        assert r.json()["error"] == (
            "input 'edge_index': model 'g' pads each node's incoming edges to its degree bucket's largest in-degree "
            "(4 degree buckets), so this request's 400 nodes and 1767 edges (largest in-degree 300) take 3,847 "
            "neighbour-list slots, 0.8 MiB at 208 B a slot, above this server's 0.5 MiB (send smaller graphs, or "
            "fewer high in-degree nodes)"
        )
        small = rng.integers(0, 30, (2, 90))
        r = _post_graph(srv, x[:30], small)
        assert r.status_code == 200, r.text
        out = r.json()["outputs"][0]
        direct = s.run(NumpyGraph(x[:30], small, None, None, {}))
        np.testing.assert_allclose(np.asarray(out["data"], dtype=np.float32).reshape(out["shape"]), direct, atol=1e-5)


def test_the_batcher_counts_the_union_s_neighbour_list_slots(exported) -> None:
    """Merged requests share one layout cut from the union's in-degrees: the batcher stops merging
    when its slots pass ``max_attention_mib``, as it does for dense scores."""
    rng = np.random.default_rng(1)
    small = [GraphRequest(NumpyGraph(np.zeros((20, 3), np.float32), rng.integers(0, 20, (2, 40))), 1) for _ in range(4)]
    dst = np.repeat(np.arange(200), np.floor(150 / (np.arange(200) + 1)).astype(np.int64))
    hub = GraphRequest(NumpyGraph(np.zeros((200, 3), np.float32), np.stack([dst * 0, dst])), 1)
    union = union_graphs([it.graph for it in [*small, hub]])
    lay = bucketed_layout(union.edge_index, union.num_nodes, 4)
    together = sum(lay[f"nbr_src_{b}"].size for b in range(4))
    cfg = replace(BatchConfig(), slot_bytes=256, slot_buckets=4, max_attention_mib=(together - 1) * 256 / 2**20)
    assert [len(b) for b in pack([*small, hub], cfg)] == [4, 1]  # the hub alone: the union is one slot over
    assert [len(b) for b in pack([*small, hub], replace(cfg, max_attention_mib=together * 256 / 2**20))] == [5]
    assert [len(b) for b in pack([*small, hub], replace(cfg, slot_bytes=0))] == [5]  # not a padded model


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from /proc (Linux)")
def test_gps_cell_bytes_cover_what_a_call_takes_on_its_backend(tmp_path) -> None:
    """A GPS checkpoint served on the torch backend held 16.4 B a cell at 2 heads (3,000 nodes, CPU),
    where the limit counted 8 (the float32 scores): requests within ``max_attention_mib`` took twice
    it. The same model exported to ONNX Runtime holds about 9. Each is counted for its backend, and a
    call's peak (a fresh process, as peak RSS is per process) stays within the count."""
    from gtcompress.checkpoint import save_checkpoint
    from gtcompress.models import ModelConfig
    from gtcompress.models.config import FeatureSpec
    from tests.runtime.conftest import seeded_model

    cfg = ModelConfig(arch="gps", node_features=FeatureSpec("float", 3), out_dim=2, hidden=16, heads=2, num_layers=1)
    model = seeded_model(cfg)
    ckpt = save_checkpoint(tmp_path / "gps", model)
    onnx_path = export_onnx(model, tmp_path / "gps.onnx", "dense", verify_batches=1).path
    assert attention_cell_bytes(GraphSession(onnx_path)) == 2 * 6
    assert attention_cell_bytes(GraphSession(ckpt)) == 2 * 12
    n = 2000
    for path in (ckpt, onnx_path):
        peak = _peak_bytes(path, n)
        counted = n * n * attention_cell_bytes(GraphSession(path))
        assert peak <= counted, f"{path}: peak {peak / MIB:.0f} MiB for {n} nodes, counted {counted / MIB:.0f} MiB"


def _molecules(sizes: list[int]) -> GraphRequest:
    """One request of graphs of ``sizes`` nodes (no edges: only the sizes count here)."""
    batch = np.repeat(np.arange(len(sizes)), sizes)
    n = int(batch.size)
    g = NumpyGraph(np.zeros((n, 1), np.float32), np.zeros((2, 0), np.int64), None, batch, {})
    return GraphRequest(g, len(sizes))


def test_the_batcher_counts_packed_rows_where_one_row_per_graph_would_stop_a_merge(exported) -> None:
    """Two requests of 128 molecules (one of 132 nodes, the rest 24) on a 4-head, 4-layer GT with edge
    features (204 B a cell): one row per graph counts 256 x 132^2 x 204 B = 868 MiB, past the 256 MiB
    merge cap, so they never merged, though the layout packs them into 53 rows (180 MiB). Packed rows
    are counted; a model that does not pack (GPS, Graphormer) keeps one row per graph."""
    assert ServedModel("m", GraphSession(exported["node"].path)).batch.packed_rows  # a dense GT packs
    sizes = [132] + [24] * 127
    a, b = _molecules(sizes), _molecules(sizes)
    assert a.graph_nodes.tolist() == sizes
    cfg = replace(BatchConfig(max_nodes=1 << 20), attention_cell_bytes=204, packed_rows=True)
    rows = padded_rows(np.array(sizes * 2), pack=True)
    assert rows * 132**2 * 204 <= 256 << 20 < 256 * 132**2 * 204
    assert [len(p) for p in pack([a, b], cfg)] == [2]
    assert [len(p) for p in pack([a, b], replace(cfg, packed_rows=False))] == [1, 1]
    assert [len(p) for p in pack([a, b], replace(cfg, max_attention_mib=rows * 132**2 * 204 / (1 << 20) - 1))] == [1, 1]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from /proc (Linux)")
def test_sparsified_gps_cell_bytes_cover_its_mask(tmp_path) -> None:
    """A GPS with ``attention_topk`` runs the padded attention with its graph as a mask: per cell it also
    holds the masked scores a head and the mask's bias and construction. Counted as the dense GPS's 6 B
    a head, an 8-head one took 1.8x what ``max_attention_mib`` let through on ONNX Runtime (87.5 B a
    cell at 3,000 nodes, counted 48); on torch, 25-34 B a cell at 1 head (counted 12)."""
    from gtcompress.checkpoint import save_checkpoint
    from gtcompress.compress.attention_graph import with_attention_topk
    from gtcompress.models import ModelConfig
    from gtcompress.models.config import FeatureSpec
    from tests.runtime.conftest import seeded_model

    cfg = ModelConfig(arch="gps", node_features=FeatureSpec("float", 3), out_dim=2, hidden=16, heads=1, num_layers=2)
    model = with_attention_topk(seeded_model(cfg), 8).eval()
    ckpt = save_checkpoint(tmp_path / "gps-sa", model)
    onnx_path = export_onnx(model, tmp_path / "gps-sa.onnx", "dense", verify_batches=1).path
    assert attention_cell_bytes(GraphSession(onnx_path)) == 10 + 22
    assert attention_cell_bytes(GraphSession(ckpt)) == 19 + 30
    n = 2000
    for path in (ckpt, onnx_path):
        peak = _peak_bytes(path, n)
        counted = n * n * attention_cell_bytes(GraphSession(path))
        assert peak > n * n * 6, path  # above what the dense GPS's count of 6 B a head let through
        assert peak <= counted, f"{path}: peak {peak / MIB:.0f} MiB for {n} nodes, counted {counted / MIB:.0f} MiB"


def test_the_readme_states_the_gps_counts_the_server_uses() -> None:
    """README's "Dense attention memory" is what a user sizes ``--max-attention-mib`` by. It gave a GPS
    6 bytes a head (12 from a checkpoint) whatever its attention, while a GPS sparsified by ``gtc
    sparsify --attention-topk`` is counted at :data:`GPS_TOPK_HEAD_BYTES` a head plus
    :data:`GPS_TOPK_CELL_BYTES` a cell (torch: :data:`GPS_TOPK_TORCH_HEAD_BYTES` and
    :data:`GPS_TOPK_TORCH_CELL_BYTES`)."""
    from runtime.request_cost import (
        GPS_HEAD_BYTES,
        GPS_TOPK_CELL_BYTES,
        GPS_TOPK_HEAD_BYTES,
        GPS_TOPK_TORCH_CELL_BYTES,
        GPS_TOPK_TORCH_HEAD_BYTES,
        GPS_TORCH_HEAD_BYTES,
    )

    text = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    assert (
        f"a GPS counts its scores and softmax at {GPS_HEAD_BYTES} bytes a head on ONNX Runtime and "
        f"{GPS_TORCH_HEAD_BYTES} from a checkpoint" in text
    )
    assert (
        f"one sparsified by `gtc sparsify --attention-topk`, whose attention runs with its graph as a mask, at "
        f"{GPS_TOPK_HEAD_BYTES} bytes a head plus {GPS_TOPK_CELL_BYTES} a cell on ONNX Runtime and "
        f"{GPS_TOPK_TORCH_HEAD_BYTES} a head plus {GPS_TOPK_TORCH_CELL_BYTES} a cell from a checkpoint" in text
    )
