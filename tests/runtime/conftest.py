"""Tiny exported models shared by the runtime tests (exported once per session).

The tests may use torch (to build, export and check against the models); ``runtime`` itself
never imports it — ``test_session.py::test_runtime_imports_without_torch`` checks that.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from exporters.onnx import export_onnx
from gtcompress.data.base import FeatureSpec
from gtcompress.graph import GraphBatch
from gtcompress.models import ModelConfig, build_model
from gtcompress.models.model import GraphModel
from gtcompress.preprocess import NumpyGraph
from gtcompress.preprocess.pe import laplacian_pe, rwse
from gtcompress.preprocess.random_graphs import random_graph
from runtime.session import GraphSession


@dataclass
class Exported:
    model: GraphModel
    path: Path
    spec: dict[str, Any]

    def graphs(self, count: int, seed: int = 0, lo: int = 3, hi: int = 12) -> list[NumpyGraph]:
        """Random graphs matching the spec (self-loops and duplicate edges included)."""
        rng = np.random.default_rng(seed)
        out = []
        for i in range(count):
            n = int(rng.integers(lo, hi))
            out.append(
                random_graph(rng, n, int(rng.integers(0, 3 * n)), self.spec.x, self.spec.edge_attr, i % 2, i % 3)
            )
        return out

    def torch_output(self, g: NumpyGraph) -> np.ndarray:
        """PyTorch forward on one graph alone (PE computed by the shared numpy functions)."""
        ptr = np.array([0, g.num_nodes], dtype=np.int64)
        pe = {k: (laplacian_pe if k == "lap" else rwse)(g.edge_index, ptr, v) for k, v in self.spec.pe.items()}
        gb = GraphBatch.from_numpy(NumpyGraph(g.x, g.edge_index, g.edge_attr, None, pe))
        with torch.no_grad():
            return self.model.eval()(gb).numpy()


def seeded_model(cfg: ModelConfig) -> GraphModel:
    """``cfg``'s model, seeded, with non-trivial BatchNorm statistics, in eval mode (shared by the runtime tests)."""
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Exported]:
    """``node``: categorical x, float edge features, RWSE, dense lowering, node-level.
    ``graph``: float x, no edge features, LapPE, padded lowering, graph-level.
    ``teddy``: ``node`` with TEDDY (30 % of edges) recorded in its metadata."""
    root = tmp_path_factory.mktemp("runtime-models")
    out: dict[str, Exported] = {}
    node_cfg = ModelConfig(
        arch="gt",
        node_features=FeatureSpec("categorical", 2, [5, 3]),
        edge_features=FeatureSpec("float", 2),
        out_dim=3,
        hidden=16,
        heads=2,
        num_layers=1,
        pe={"rwse": 4},
        task_level="node",
    )
    graph_cfg = ModelConfig(
        arch="gt",
        node_features=FeatureSpec("float", 3),
        out_dim=2,
        hidden=16,
        heads=2,
        num_layers=1,
        pe={"lap": 2},
        task_level="graph",
    )
    for key, cfg, lowering in (("node", node_cfg, "dense"), ("graph", graph_cfg, "padded")):
        model = seeded_model(cfg)
        res = export_onnx(model, root / f"{key}.onnx", lowering, verify_batches=2)
        out[key] = Exported(model, res.path, res.spec)
    teddy_path = root / "teddy.onnx"
    shutil.copyfile(out["node"].path, teddy_path)
    proto = onnx.load(str(teddy_path))
    proto.metadata_props.add(key="teddy", value=json.dumps({"edges": 0.3, "per_graph": True}))
    onnx.save(proto, str(teddy_path))
    out["teddy"] = Exported(out["node"].model, teddy_path, out["node"].spec)
    return out


@pytest.fixture(scope="module")
def node_sess(exported: dict[str, Exported]) -> GraphSession:
    """A session on the ``node`` model (shared by the session tests)."""
    return GraphSession(exported["node"].path)


@pytest.fixture(scope="module")
def session(node_sess: GraphSession) -> GraphSession:
    """The ``node`` model's session under the name the server tests give it (``test_server_ambiguous``
    overrides it with a model of its own)."""
    return node_sess


@pytest.fixture(scope="module")
def graph(exported: dict[str, Exported]) -> NumpyGraph:
    """One graph of the ``node`` model, 6 to 11 nodes: what the server tests send."""
    return exported["node"].graphs(1, seed=5, lo=6)[0]


@pytest.fixture(scope="module")
def config(model_config_pb2):
    """``config(root, **parameters)``: the model configuration as Triton hands it to ``initialize``
    (JSON, from the repository's ``config.pbtxt``), with parameters overridden."""
    from google.protobuf import json_format, text_format

    def make(root, **params: str) -> dict:
        text = (root / "config.pbtxt").read_text()
        cfg = json.loads(
            json_format.MessageToJson(
                text_format.Parse(text, model_config_pb2.ModelConfig()), preserving_proto_field_name=True
            )
        )
        cfg.setdefault("parameters", {}).update({k: {"string_value": v} for k, v in params.items()})
        return cfg

    return make


@pytest.fixture(scope="module")
def node_repo(exported, tmp_path_factory):
    """A python-variant repository of the ``teddy`` model, batches of up to 8 requests."""
    from exporters.triton_repo import PythonModelOptions, write_model_repository

    repo = tmp_path_factory.mktemp("py-repo")
    opts = PythonModelOptions(max_batch_size=8)
    return write_model_repository(repo, "gt_node", exported["teddy"].path, exported["teddy"].spec, options=opts)


def python_request(g: NumpyGraph, batch: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One graph as the python variant's ``execute`` receives a request: a leading batch dimension of 1."""
    r = {"x": g.x[None], "edge_index": g.edge_index[None]}
    if g.edge_attr is not None:
        r["edge_attr"] = g.edge_attr[None]
    if batch is not None:
        r["batch"] = batch[None]
    return r


def wait_for_held(app: Any, nbytes: int) -> int:
    """The bytes the app's in-flight budget holds, once they are ``nbytes`` or after 10 s: the server
    reads bodies and gives shares back in its own time."""
    for _ in range(200):
        if app.state.inflight.held == nbytes:
            break
        time.sleep(0.05)
    return app.state.inflight.held


def start_gtc_serve(model: Path, *args: str) -> tuple[Any, str]:
    """A real ``gtc serve MODEL --port 0 ARGS`` process, as a service manager runs it, once it answers
    ready: the process and its ``http://host:port``. The caller ends it."""
    import os
    import re
    import subprocess
    import sys

    import httpx

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "300"}
    cmd = [sys.executable, "-m", "cli.main", "serve", str(model), "--port", "0", *args]
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = proc.stdout.readline() if proc.stdout is not None else ""
        found = re.search(r"http://(127\.0\.0\.1:\d+)", banner)
        assert found is not None, banner + proc.communicate(timeout=60)[1]
        url = f"http://{found[1]}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200:
                    return proc, url
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server not ready"
            time.sleep(0.05)
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def gated_model_calls(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[int]]:
    """Hold ``gtc serve``'s model calls on a gate: every call records its item count in ``calls``, then
    waits (on the batcher's worker thread) until ``gate.set()``, so later requests wait in the queue."""
    import threading

    import runtime.server

    gate, calls = threading.Event(), []
    real = runtime.server.run_items

    def gated(model: Any, items: Any) -> Any:
        calls.append(len(items))
        gate.wait(30)
        return real(model, items)

    monkeypatch.setattr(runtime.server, "run_items", gated)
    return gate, calls


def tiny_gt_checkpoint(folder: Path) -> str:
    """A seeded 1-layer, hidden-8 graph-level GT checkpoint in ``folder/gt-ckpt``: the smallest model a
    profile's torch rows measure."""
    from gtcompress.checkpoint import save_checkpoint

    torch.manual_seed(0)
    cfg = ModelConfig(arch="gt", node_features=FeatureSpec("float", 3), out_dim=2, hidden=8, heads=2, num_layers=1,
                      task_level="graph")  # fmt: skip
    return str(save_checkpoint(folder / "gt-ckpt", build_model(cfg).eval()))


def stand_in_entry(label: str, path: str) -> dict[str, Any]:
    """A profile's report entry for a stand-in model file (``runtime.profile._model_entry`` patched)."""
    return {"name": label, "path": path, "arch": "gt", "lowering": "dense", "providers": None, "results": []}


def stand_in_files(tmp_path: Path, *names: str) -> list[str]:
    """Model files a profile test replaces the measurement of: they exist, and are never read."""
    for n in names:
        (tmp_path / n).write_bytes(b"not read: the measurement is replaced")
    return [str(tmp_path / n) for n in names]
