"""README, CLI section: the first request a new user sends. Its curl command and its Python client,
taken from the README as written, go to a served model with the inputs of the model its commands
make (GT on CLUSTER: one categorical column of 7 values, LapPE 8, 6 classes a node) and get the
answer the README shows, under the model name its `gtc serve` line gives."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import numpy as np
import pytest

from exporters.onnx import export_onnx
from gtcompress.data.base import FeatureSpec
from gtcompress.models import ModelConfig
from gtcompress.preprocess import NumpyGraph
from runtime.served import default_model_name
from runtime.server import BackgroundServer, create_app
from runtime.session import GraphSession
from tests.runtime.conftest import seeded_model

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_block(lang: str, marker: str) -> str:
    """The README's one fenced ``lang`` block holding ``marker``."""
    blocks = [b for b in re.findall(rf"^```{lang}\n(.*?)^```", README.read_text(), re.S | re.M) if marker in b]
    assert len(blocks) == 1, f"README: expected one ```{lang} block with {marker!r}, found {len(blocks)}"
    return blocks[0]


@pytest.fixture(scope="module")
def cluster_gt(tmp_path_factory: pytest.TempPathFactory) -> GraphSession:
    cfg = ModelConfig(
        arch="gt",
        node_features=FeatureSpec("categorical", 1, [7]),
        out_dim=6,
        hidden=16,
        heads=2,
        num_layers=1,
        pe={"lap": 8},
        task_level="node",
    )
    path = tmp_path_factory.mktemp("readme") / "gt-p50.onnx"
    return GraphSession(export_onnx(seeded_model(cfg), path, "dense", verify_batches=1).path)


@pytest.fixture(scope="module")
def readme_server(cluster_gt: GraphSession):
    """The README's `gtc serve` line's model, under the name that line gives it."""
    serve = re.search(r"^gtc serve (\S+)", readme_block("bash", "curl -s localhost:8000"), re.M)
    assert serve, "README: the curl block no longer starts the server it asks"
    with BackgroundServer(create_app({default_model_name(serve[1]): cluster_gt})) as srv:
        yield srv


def test_the_readme_curl_request_gets_the_answer_it_shows(readme_server, cluster_gt: GraphSession) -> None:
    block = readme_block("bash", "curl -s localhost:8000")
    request = re.search(r"curl -s localhost:8000(/v2/models/\S+) -d '(.*?)'", block, re.S)
    shown = re.search(r"^# (\{.*\})$", block, re.M)
    assert request and shown, block
    r = httpx.post(f"http://{readme_server.url}{request[1]}", content=request[2], timeout=30)
    assert r.status_code == 200, r.text
    answer = r.json()
    out = answer["outputs"][0]
    # the README elides the values: everything else is as shown
    assert {**answer, "outputs": [{**out, "data": "…"}]} == json.loads(shown[1].replace("[…]", '"…"'))
    sent = {
        t["name"]: np.array(t["data"], dtype=np.int64).reshape(t["shape"]) for t in json.loads(request[2])["inputs"]
    }
    want = cluster_gt.run([NumpyGraph(x=sent["x"], edge_index=sent["edge_index"])])[0]
    np.testing.assert_allclose(np.array(out["data"], dtype=np.float32).reshape(out["shape"]), want, rtol=1e-6)


def test_the_readme_python_client_gets_one_array_per_graph(readme_server, cluster_gt: GraphSession) -> None:
    code = readme_block("python", "infer_graphs(http.InferenceServerClient")
    assert "127.0.0.1:8000" in code, code
    scope: dict = {}
    exec(code.replace("127.0.0.1:8000", readme_server.url), scope)
    assert scope["out"].shape == (4, 6)  # the README's comment: [4 nodes, 6 classes]
    np.testing.assert_allclose(scope["out"], cluster_gt.run([scope["graph"]])[0], rtol=1e-6)
