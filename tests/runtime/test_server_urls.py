"""Model names and versions in inference URLs: read once, as every other endpoint reads them."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from runtime.client import infer_graphs
from runtime.server import BackgroundServer, create_app
from runtime.session import GraphSession


@pytest.fixture(scope="module")
def server(exported):
    sess = GraphSession(exported["node"].path)
    with BackgroundServer(create_app({"gt": sess, "m%41": sess})) as srv:
        yield srv


def test_a_model_name_with_a_percent_sign_is_reachable_by_tritonclient(server, exported) -> None:
    """tritonclient quotes the name ("m%2541"); the infer route decoded the server's already decoded
    path a second time and answered 404 "unknown model 'mA'" for a model the metadata route serves."""
    g = exported["node"].graphs(1, seed=1)[0]
    client = triton.InferenceServerClient(server.url)
    try:
        assert client.get_model_metadata("m%41")["name"] == "m%41"
        (got,) = infer_graphs(client, "m%41", [g])
        (want,) = infer_graphs(client, "gt", [g])
    finally:
        client.close()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("path", ["g%2574", "gt/versions/%2531"])
def test_a_doubly_encoded_name_or_version_is_not_decoded_twice(server, path: str) -> None:
    """/v2/models/g%2574/infer names the model "g%74" (as GET /v2/models/g%2574 reads it), not "gt"."""
    base = f"http://{server.url}/v2/models/{path}"
    meta = httpx.get(base, timeout=30)
    infer = httpx.post(f"{base}/infer", content=b'{"inputs": []}', timeout=30)
    assert (meta.status_code, infer.status_code) == (404, 404)
    assert infer.json()["error"] == meta.json()["error"]
    assert ("'g%74'" if path == "g%2574" else "no version '%31'") in infer.json()["error"]


@pytest.mark.parametrize(
    "path", ["/v2/health/live", "/v2/health/ready", "/v2", "/v2/models/gt", "/v2/models/gt/ready", "/v2/models/nope"]
)
def test_head_answers_as_get_without_the_body(server, path: str) -> None:
    """Every GET endpoint answered HEAD with 405, where RFC 9110 has a server answer HEAD as GET without
    the body: a load balancer or monitor checking /v2/health/ready with HEAD saw the server as down."""
    url = f"http://{server.url}{path}"
    get, head = httpx.get(url, timeout=30), httpx.head(url, timeout=30)
    assert head.status_code == get.status_code
    assert head.content == b""
    assert head.headers["content-length"] == str(len(get.content))
    assert head.headers["content-type"] == get.headers["content-type"]


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc"])
def test_no_generated_schema_or_docs_pages_are_served(server, path: str) -> None:
    """The docs pages were off but FastAPI still served its generated schema at /openapi.json (200), which
    describes no infer request body; every such path is now a 404 like any unknown one."""
    r = httpx.get(f"http://{server.url}{path}", timeout=30)
    assert r.status_code == 404
    assert r.json() == {"error": "Not Found"}
