"""Features too large to square in float32 get the model's answer from a LayerNorm model, or a 400 from
an older file of one, never a finite wrong answer.

A Graphormer exported before :class:`gtcompress.nn.blocks.ScaleSafeLayerNorm` answered features of
1e20 on ONNX Runtime with the same finite row for every node (its LayerNormalization turned the
infinite variance into zeros, leaving the bias): the server's check for NaN answers could not see it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from exporters.onnx import export_onnx
from gtcompress.data.base import FeatureSpec
from gtcompress.graph import GraphBatch
from gtcompress.models import LayerSpec, ModelConfig
from gtcompress.nn.blocks import ScaleSafeLayerNorm
from gtcompress.preprocess import NumpyGraph
from gtcompress.preprocess.norm_range import LEGACY_BOUND, NORM_KEY, SCALE_SAFE, legacy_norm_bound
from runtime.errors import FeatureRangeError
from runtime.served import ServedModel, run_items
from runtime.session import GraphSession
from tests.runtime.conftest import seeded_model

SCALES = (1.0, 1e20, 1e30, 1e36)


def _config(arch: str = "graphormer", **kw: object) -> ModelConfig:
    return ModelConfig(
        arch=arch,
        node_features=FeatureSpec("float", 3),
        out_dim=2,
        hidden=16,
        heads=2,
        layers=[LayerSpec(heads=2, ffn_dim=8)],
        **kw,
    )


def _ring(x: np.ndarray) -> NumpyGraph:
    n = x.shape[0]
    ei = np.array([np.arange(n), (np.arange(n) + 1) % n], dtype=np.int64)
    return NumpyGraph(x.astype(np.float32), ei, None, None, {})


def _x() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(5, 3))


@pytest.fixture(scope="module")
def graphormer(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    model = seeded_model(_config())
    path = tmp_path_factory.mktemp("norm") / "graphormer.onnx"
    export_onnx(model, path, "dense", verify_batches=1)
    return model, path


@pytest.fixture(scope="module")
def legacy(graphormer: tuple[torch.nn.Module, Path]) -> Path:
    """The same model as a file exported before the scale-safe LayerNorm: no ``layer_norm`` entry, and
    a plain LayerNormalization (what the metadata says decides; the graph is not inspected)."""
    proto = onnx.load(str(graphormer[1]))
    keep = [(p.key, p.value) for p in proto.metadata_props if p.key != NORM_KEY]
    del proto.metadata_props[:]
    for k, v in keep:
        proto.metadata_props.add(key=k, value=v)
    path = graphormer[1].with_name("graphormer-legacy.onnx")
    onnx.save(proto, str(path))
    return path


def test_scale_safe_layer_norm_is_layer_norm_bit_for_bit_on_ordinary_rows() -> None:
    torch.manual_seed(0)
    plain = torch.nn.LayerNorm(16)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 1.5)
        plain.bias.uniform_(-0.5, 0.5)
    safe = ScaleSafeLayerNorm(16)
    safe.load_state_dict(plain.state_dict())  # same parameters, same checkpoints
    h = torch.randn(64, 16) * torch.logspace(-3, 14, 64).unsqueeze(1)  # up to 1e14: below 2**48
    assert torch.equal(safe(h), plain(h))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scale_safe_layer_norm_normalises_rows_too_large_to_square(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    norm = ScaleSafeLayerNorm(16).to(dtype)
    row = torch.randn(3, 16, dtype=torch.float64)
    want = torch.nn.functional.layer_norm(row, (16,), eps=0.0)  # eps is nothing beside a variance of 1e40
    for scale in (1e20, 1e30, 1e37):
        got = norm((row * scale).to(dtype)).double()
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, atol=0.05 if dtype == torch.bfloat16 else 1e-5, rtol=0)
    assert not torch.isfinite(torch.nn.LayerNorm(16).to(dtype)((row * 1e30).to(dtype))).all()  # what it fixes


def test_a_graphormer_answers_features_too_large_to_square_as_in_float64(graphormer) -> None:
    """ONNX Runtime's answer at 1e20..1e36 is the float64 model's, as at scale 1 (it was one finite row
    of bias for every node)."""
    model, path = graphormer
    sess = GraphSession(path)
    assert sess.metadata[NORM_KEY] == SCALE_SAFE
    ref = model.double()
    x = _x()
    try:
        for scale in SCALES:
            g = _ring(x * scale)
            with torch.no_grad():
                want = ref(GraphBatch(torch.tensor(g.x, dtype=torch.float64), torch.tensor(g.edge_index))).numpy()
            got = sess.run([g])[0]
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5, err_msg=f"scale {scale:g}")
    finally:
        model.float()


def test_an_older_layer_norm_file_refuses_features_beyond_its_range(graphormer, legacy: Path) -> None:
    """Through ``run_items``' caller, ``request_graph``: the path of ``gtc serve`` and the Triton python
    variant. Features inside the range are answered as by the new file."""
    from runtime.protocol import InferRequest
    from runtime.served import request_graph
    from runtime.server import ServerLimits

    new, old = ServedModel("new", GraphSession(graphormer[1])), ServedModel("old", GraphSession(legacy))
    assert (new.norm_bound, old.norm_bound) == (None, LEGACY_BOUND)

    def ask(model: ServedModel, x: np.ndarray):
        g = _ring(x)
        req = InferRequest({"x": g.x, "edge_index": g.edge_index}, {"x": "FP32", "edge_index": "INT64"})
        graph, count, _ = request_graph(req, model, ServerLimits())
        return run_items(model, [type("Item", (), {"graph": graph, "num_graphs": count})()])[0]

    ordinary = _x() * 1e11
    np.testing.assert_array_equal(ask(old, ordinary), ask(new, ordinary))
    with pytest.raises(FeatureRangeError) as e:
        ask(old, _x() * 1e20)
    peak = float(np.abs((_x() * 1e20).astype(np.float32)).max())
    assert str(e.value) == (
        f"input 'x': its largest magnitude, {peak:.3g}, is above 1e+12, the most model 'old' is trusted with: "
        "the file was exported before gtcompress's LayerNorm handled rows too large to square in float32, and "
        "would answer with a finite wrong value; export the model again, or send features on the scale it was "
        "trained on"
    )
    assert np.isfinite(ask(new, _x() * 1e20)).all()


def test_which_files_are_held_to_the_range() -> None:
    import json

    def meta(cfg: ModelConfig, **extra: str) -> dict[str, str]:
        return {"model_config": json.dumps(cfg.to_dict()), **extra}

    assert legacy_norm_bound(meta(_config())) == LEGACY_BOUND  # Graphormer: LayerNorm in every block
    assert legacy_norm_bound(meta(_config("gt", norm="layer"))) == LEGACY_BOUND
    assert legacy_norm_bound(meta(_config("gt"))) is None  # BatchNorm: overflow shows as NaN, refused as such
    assert legacy_norm_bound(meta(_config(), **{NORM_KEY: SCALE_SAFE})) is None
    assert legacy_norm_bound({}) is None  # not our export: nothing to go on
