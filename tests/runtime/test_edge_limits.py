"""Per-edge memory: a model on an edge lowering (and a GINE GPS, a dense GT's or a Graphormer's edge
features) holds tensors as long as the edge list. Nothing bounded them: within the server's 10M-edge
limit a request took 26 GiB on a hidden-64 GT exported ``scatter``, whatever ``max_attention_mib``
said. Now they are counted (:mod:`runtime.edge_cost`), and a request past the limit gets a 400 naming
the count, as ``gtc profile`` refuses such a size before measuring."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from exporters.onnx import export_onnx
from gtcompress.checkpoint import save_checkpoint
from gtcompress.data.base import FeatureSpec
from gtcompress.models import ModelConfig
from gtcompress.preprocess.random_graphs import random_graph
from gtcompress.preprocess.spec import Lowering
from runtime.edge_cost import CallBytes, call_bytes
from runtime.errors import GraphTooLargeError, SessionError
from runtime.packing import MIB
from runtime.profile_cost import check_costs
from runtime.protocol import InferRequest
from runtime.request_cost import TORCH_PLATFORM
from runtime.served import ServedModel, ServerLimits, request_graph
from runtime.session import GraphSession
from tests.runtime.conftest import seeded_model

LINUX = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from /proc (Linux)")


def _costed(arch: str, lowering: Lowering, *, heads: int = 4, hidden: int = 32, ef: bool = True, torch: bool = False):
    cfg = {
        "arch": arch,
        "hidden": hidden,
        "layers": [{"heads": heads}],
        "edge_features": {"kind": "float"} if ef else None,
    }
    return SimpleNamespace(
        path="m.onnx",
        spec=SimpleNamespace(lowering=lowering),
        metadata={"model_config": json.dumps(cfg)},
        platform=TORCH_PLATFORM if torch else "onnxruntime_onnx",
    )


def test_the_counts_follow_the_family() -> None:
    gt = "its attention gathers and scatters a row per edge"
    assert call_bytes(_costed("gt", Lowering.SCATTER)) == CallBytes(40 * 32 + 96 + 128 + 64, 48 * 32, gt)
    assert call_bytes(_costed("gt", Lowering.PLUGIN, ef=False)) == CallBytes(40 * 32 + 96 + 64, 64 * 32, gt)
    assert call_bytes(_costed("gt", Lowering.PLUGIN, torch=True)) == CallBytes(16 * 32 + 64 + 128 + 64, 40 * 32, gt)
    rows = "its layers' activations a row per node"
    assert call_bytes(_costed("gt", Lowering.DENSE)) == CallBytes(
        8 * 32 + 128 + 32, 64 * 32 + 128, f"its edge bias holds a row per edge, {rows}"
    )
    assert call_bytes(_costed("gt", Lowering.DENSE, ef=False)) == CallBytes(0, 64 * 32 + 128, rows)  # cells count it
    assert call_bytes(_costed("gt", Lowering.PADDED)) == CallBytes(0, 120 * 32 + 128, rows)  # its slots count it
    # no head left: no neighbour lists to gather, whatever the lowering: counted as a dense GT
    assert call_bytes(_costed("gt", Lowering.PADDED, heads=0, ef=False)) == CallBytes(0, 64 * 32 + 128, rows)
    gine = f"its local message passing (GINE) holds a message per edge, {rows}"
    assert call_bytes(_costed("gps", Lowering.DENSE)) == CallBytes(36 * 32 + 64, 80 * 32 + 768, gine)
    assert call_bytes(_costed("gps", Lowering.DENSE, torch=True)) == CallBytes(32 * 32 + 64, 72 * 32 + 512, gine)
    assert call_bytes(_costed("gps", Lowering.DENSE, ef=False)) == CallBytes(0, 80 * 32 + 768, rows)  # GIN
    assert call_bytes(_costed("graphormer", Lowering.DENSE)) == CallBytes(
        8 * 32 + 32, 64 * 32 + 1024, f"its edge encoder holds a row per edge, {rows}"
    )
    assert call_bytes(_costed("graphormer", Lowering.DENSE, ef=False, torch=True)) == CallBytes(0, 40 * 32 + 256, rows)
    # a file without a config: 64 channels, 8 heads, the architecture and edge features its input spec names
    bare = SimpleNamespace(
        path="m.onnx", spec=SimpleNamespace(lowering=Lowering.SCATTER, arch="gt", edge_attr=object()), metadata={},
        platform="onnxruntime_onnx",
    )  # fmt: skip
    assert call_bytes(bare) == CallBytes(40 * 64 + 24 * 8 + 4 * 64 + 64, 48 * 64, gt)  # counted nothing
    # every head pruned away: no attention over the edges, only the edge encoder
    assert call_bytes(_costed("gt", Lowering.SCATTER, heads=0)) == CallBytes(
        8 * 32 + 32, 64 * 32 + 128, f"its edge encoder holds a row per edge, {rows}"
    )
    # an architecture neither a config nor the input spec names: the largest count a node
    unnamed = SimpleNamespace(path="m.onnx", spec=SimpleNamespace(lowering=Lowering.DENSE), metadata={}, platform="")
    assert call_bytes(unnamed).node == 120 * 64 + 128


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A hidden-32, 4-head, 2-layer GT with float edge features exported ``scatter`` and saved as a
    checkpoint (served with torch), and a GINE GPS of the same width."""
    root = tmp_path_factory.mktemp("edge-models")
    out = {}
    for arch in ("gt", "gps"):
        cfg = ModelConfig(
            arch=arch,
            node_features=FeatureSpec("float", 3),
            edge_features=FeatureSpec("float", 2),
            out_dim=2,
            hidden=32,
            heads=4,
            num_layers=2,
            task_level="node",
        )
        model = seeded_model(cfg)
        lowering = "scatter" if arch == "gt" else "dense"
        out[arch] = export_onnx(model, root / f"{arch}.onnx", lowering, verify_batches=1).path
        if arch == "gt":
            out["ckpt"] = save_checkpoint(root / "gt-ckpt", model)
    return out


_PEAK_SCRIPT = """
import sys
import numpy as np
from gtcompress.preprocess.random_graphs import random_graph
from runtime.session import GraphSession

def peak_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))

path, graphs, nodes, edges = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
session = GraphSession(path, device="cpu", threads=1) if not path.endswith(".onnx") else GraphSession(path, threads=1)
spec = session.spec
rng = np.random.default_rng(0)
batch = [random_graph(rng, nodes, edges, spec.x, spec.edge_attr) for _ in range(graphs)]
session.run([random_graph(np.random.default_rng(1), 4, 8, spec.x, spec.edge_attr)])  # lazy initialisation
before = peak_kib()
session.run(batch)
print(peak_kib() - before)
"""


def _peak_bytes(path: Path, graphs: int, nodes: int, edges: int) -> int:
    """Peak RSS growth of one call (pre-processing included) on ``graphs`` random graphs, in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(path), str(graphs), str(nodes), str(edges)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"},
    )
    return int(out.stdout.split()[-1]) * 1024


@LINUX
@pytest.mark.parametrize("which", ["gt", "ckpt"])
def test_an_edge_lowering_s_count_covers_what_a_call_takes(models, which: str) -> None:
    """One graph of 30,000 nodes and 300,000 edges, pre-processing included: the count is above the
    peak, and not far above (a count far above would refuse what the server can run)."""
    path = models[which]
    counted = call_bytes(GraphSession(path, device="cpu") if which == "ckpt" else GraphSession(path)).need(
        30_000, 300_000
    )
    peak = _peak_bytes(path, 1, 30_000, 300_000)
    assert 0.5 * counted < peak <= counted, f"peak {peak / MIB:.0f} MiB, counted {counted / MIB:.0f} MiB"


@LINUX
def test_a_gine_gps_count_covers_what_its_edges_add(models) -> None:
    """GPS's dense attention is per graph (counted with its cells): its edges' share is what doubling
    them adds, on 600 graphs of 30 nodes."""
    path = models["gps"]
    added = _peak_bytes(path, 600, 30, 600) - _peak_bytes(path, 600, 30, 300)
    counted = call_bytes(GraphSession(path)).edge * 600 * 300
    assert 0.4 * counted < added <= counted, f"added {added / MIB:.0f} MiB, counted {counted / MIB:.0f} MiB"


def test_a_request_past_the_count_gets_a_400_and_one_within_is_answered(models) -> None:
    session = GraphSession(models["gt"])
    m = ServedModel("gt", session)
    assert m.edge_cost == CallBytes(
        40 * 32 + 96 + 128 + 64, 48 * 32, "its attention gathers and scatters a row per edge"
    )
    g = random_graph(np.random.default_rng(0), 2_000, 20_000, session.spec.x, session.spec.edge_attr)
    req = InferRequest(
        {"x": g.x, "edge_index": g.edge_index, "edge_attr": g.edge_attr},
        {"x": "FP32", "edge_index": "INT64", "edge_attr": "FP32"},
    )
    with pytest.raises(GraphTooLargeError) as e:
        request_graph(req, m, ServerLimits(max_attention_mib=30))
    assert str(e.value) == (
        "input 'edge_index': model 'gt' holds about 1568 B per edge and 1536 B per node in one call (its attention "
        "gathers and scatters a row per edge), so this request's 20,000 edges and 2,000 nodes take 32.8 MiB, above "
        "this server's 30 MiB (send fewer edges or smaller graphs)"
    )
    union, graphs, _ = request_graph(req, m, ServerLimits(max_attention_mib=33))
    assert (union.num_edges, graphs) == (20_000, 1)


def test_profile_refuses_a_size_whose_edges_pass_the_limit(models) -> None:
    with pytest.raises(SessionError) as e:
        check_costs([str(models["gt"])], [(2_000, 1), (100, 1)], 10.0, 0, max_attention_mib=30)
    assert str(e.value) == (
        f"profile: {models['gt']} at graph size 2000 and batch size 1 needs an estimated 32.8 MiB of memory for its "
        "20,000 edges and 2,000 nodes (1568 B per edge and 1536 B per node: its attention gathers and scatters a row "
        "per edge), above the limit of 30 MiB; choose smaller --sizes or --batch-sizes, or raise --max-attention-mib"
    )
    check_costs([str(models["gt"])], [(100, 1)], 10.0, 0, max_attention_mib=30)
    with pytest.raises(SessionError) as e:  # a GINE GPS: its edges only
        check_costs([str(models["gps"])], [(400, 50)], 10.0, 0, max_attention_mib=200)
    assert (
        "200,000 edges and 20,000 nodes (1216 B per edge and 3328 B per node: its local message passing (GINE) holds "
        "a message per edge, its layers' activations a row per node)" in str(e.value)
    )
