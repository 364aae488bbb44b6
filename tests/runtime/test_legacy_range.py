"""Large finite features get the model's answer, or a 400 from a file exported before the fix that
makes them safe, never a finite wrong answer.

A Graphormer exported before :class:`gtcompress.nn.blocks.ScaleSafeLayerNorm` answered features of
1e20 on ONNX Runtime with the same finite row for every node (its LayerNormalization turned the
infinite variance into zeros, leaving the bias); a GT exported with attention masks of -1e30 answered
features of 1e16 on the ``dense`` lowering with non-edges' values. The server's check for NaN answers
could see neither.
"""

from __future__ import annotations

import copy
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
from gtcompress.preprocess.legacy_range import (
    HALF_RANGE,
    LEGACY_BOUND,
    MASK_KEY,
    NORM_KEY,
    OVERFLOW_BOUND,
    OVERFLOW_KEY,
    OVERFLOW_NAN,
    SCALE_SAFE,
    LegacyRange,
    legacy_nan_reason,
    legacy_range,
)
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


def _without(path: Path, key: str, to: Path) -> Path:
    """``path`` saved as ``to`` without the metadata entry ``key``: a file exported before the entry
    was written (what the metadata says decides; the graph is not inspected)."""
    proto = onnx.load(str(path))
    keep = [(p.key, p.value) for p in proto.metadata_props if p.key != key]
    del proto.metadata_props[:]
    for k, v in keep:
        proto.metadata_props.add(key=k, value=v)
    onnx.save(proto, str(to))
    return to


def _beyond(peak: float, bound: str, before: str) -> str:
    """The refusal of float features past what model 'old' is trusted with, as the server words it."""
    return (
        f"input 'x': its largest magnitude, {peak:.3g}, is above {bound}, the most model 'old' is trusted with: "
        f"the file was exported before {before}, and would answer with a finite wrong value; export the model "
        "again, or send features on the scale it was trained on"
    )


def _ask(model: ServedModel, g: NumpyGraph) -> np.ndarray:
    """``g`` through ``request_graph`` and ``run_items``: the path of ``gtc serve`` and the Triton
    python variant."""
    out = _ask_refused(model, g)
    assert isinstance(out, np.ndarray), out
    return out


def _ask_refused(model: ServedModel, g: NumpyGraph) -> object:
    """What ``run_items`` gives for ``g``: its answer, or the refusal of a NaN answer."""
    from runtime.protocol import InferRequest
    from runtime.served import request_graph
    from runtime.server import ServerLimits

    req = InferRequest({"x": g.x, "edge_index": g.edge_index}, {"x": "FP32", "edge_index": "INT64"})
    graph, count, _ = request_graph(req, model, ServerLimits())
    return run_items(model, [type("Item", (), {"graph": graph, "num_graphs": count})()])[0]


@pytest.fixture(scope="module")
def graphormer(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    model = seeded_model(_config())
    path = tmp_path_factory.mktemp("norm") / "graphormer.onnx"
    export_onnx(model, path, "dense", verify_batches=1)
    return model, path


@pytest.fixture(scope="module")
def legacy(graphormer: tuple[torch.nn.Module, Path]) -> Path:
    """The same model as a file exported before the scale-safe LayerNorm: no ``layer_norm`` entry."""
    return _without(graphormer[1], NORM_KEY, graphormer[1].with_name("graphormer-legacy.onnx"))


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
    """Features inside the range are answered as by the new file."""
    new, old = ServedModel("new", GraphSession(graphormer[1])), ServedModel("old", GraphSession(legacy))
    assert new.legacy_range is None and old.legacy_range is not None and old.legacy_range.bound == LEGACY_BOUND

    def ask(model: ServedModel, x: np.ndarray) -> np.ndarray:
        return _ask(model, _ring(x))

    ordinary = _x() * 1e7
    np.testing.assert_array_equal(ask(old, ordinary), ask(new, ordinary))
    with pytest.raises(FeatureRangeError) as e:
        ask(old, _x() * 1e20)
    peak = float(np.abs((_x() * 1e20).astype(np.float32)).max())
    assert str(e.value) == _beyond(peak, "1e+08", "gtcompress's LayerNorm handled rows too large to square in float32")
    assert np.isfinite(ask(new, _x() * 1e20)).all()


def test_which_files_are_held_to_the_range() -> None:
    import json

    norm = "gtcompress's LayerNorm handled rows too large to square in float32"
    mask = "gtcompress's attention masks outweighed attention scores beyond 1e30"
    plugin = "gtcompress's attention op on ONNX Runtime softmaxed scores below -1e30"
    overflow = "gtcompress's attention refused scores that overflow float32"
    wrong = "a finite wrong value"

    def meta(cfg: ModelConfig, **extra: str) -> dict[str, str]:
        return {"model_config": json.dumps(cfg.to_dict()), **extra}

    def held(cfg: ModelConfig, lowering: str = "dense", **extra: str) -> LegacyRange | None:
        return legacy_range(meta(cfg, **extra), lowering)

    nan = {OVERFLOW_KEY: OVERFLOW_NAN}  # the cases of the first two fixes: a file made after the third
    new = {NORM_KEY: SCALE_SAFE, MASK_KEY: HALF_RANGE, **nan}
    safe_masks = {MASK_KEY: HALF_RANGE, **nan}
    assert held(_config(), **safe_masks) == LegacyRange(LEGACY_BOUND, (norm,))  # LayerNorm in every block
    assert held(_config("gt", norm="layer"), "scatter", **nan) == LegacyRange(LEGACY_BOUND, (norm,))
    assert held(_config("gt"), "scatter", **nan) is None  # BatchNorm, no mask: overflow shows as NaN, refused as such
    assert held(_config(), **new) is None
    assert held(_config("gt", norm="layer"), "dense", **new) is None
    # the masks: the dense and padded lowerings (GPS and Graphormer export only dense)
    assert held(_config(), **{NORM_KEY: SCALE_SAFE}, **nan) == LegacyRange(LEGACY_BOUND, (mask,))
    assert held(_config("gps"), **{NORM_KEY: SCALE_SAFE}, **nan) == LegacyRange(LEGACY_BOUND, (mask,))
    assert held(_config("gt"), "padded", **nan) == LegacyRange(LEGACY_BOUND, (mask,))
    both = held(_config(), **nan)  # a Graphormer exported before both fixes
    assert both == LegacyRange(LEGACY_BOUND, (norm, mask))
    assert both.reason() == f"the file was exported before {norm} and before {mask}, and would answer with {wrong}"
    # the plugin function's only failure is NaN, refused as such: the refusal says why, nothing is held
    assert held(_config("gt"), "plugin", **nan) is None
    assert held(_config("gt", norm="layer"), "plugin", **nan) == LegacyRange(LEGACY_BOUND, (norm,))
    # the overflow: every lowering and architecture, to OVERFLOW_BOUND alone, or to the lowest bound with others
    without = {NORM_KEY: SCALE_SAFE, MASK_KEY: HALF_RANGE}
    for arch, lowering in [("gt", "scatter"), ("gt", "plugin"), ("gt", "padded"), ("gt", "dense"), ("gps", "dense")]:
        assert held(_config(arch), lowering, **without) == LegacyRange(OVERFLOW_BOUND, (overflow,)), (arch, lowering)
    assert held(_config(), **without) == LegacyRange(OVERFLOW_BOUND, (overflow,))  # Graphormer
    assert LEGACY_BOUND < OVERFLOW_BOUND
    assert held(_config()) == LegacyRange(LEGACY_BOUND, (norm, mask, overflow))
    assert held(_config("gt"), "plugin") == LegacyRange(OVERFLOW_BOUND, (overflow,))
    assert legacy_nan_reason(meta(_config("gt")), "plugin") == (
        f"the file was exported before {plugin}: exported again, it may compute it"
    )
    assert legacy_nan_reason(meta(_config("gt")), "plugin", tensorrt=True) is None  # the plugins never ran it
    assert legacy_nan_reason(meta(_config("gt"), **safe_masks), "plugin") is None
    assert legacy_nan_reason(meta(_config("gt")), "dense") is None
    assert legacy_nan_reason({}, "plugin") is None
    assert legacy_range({}, "dense") is None  # not our export: nothing to go on
    assert legacy_range({"model_config": "{"}, "dense") is None  # unreadable: refused where it is read


# ------------------------------------------------------------------------------ attention masks of -1e30
def _graph(scale: float) -> NumpyGraph:
    """Sparse edges (non-edges to mask, and nodes without incoming edges), features at ``scale``."""
    rng = np.random.default_rng(3)
    ei = rng.integers(0, 9, (2, 12)).astype(np.int64)
    return NumpyGraph((rng.normal(size=(9, 3)) * scale).astype(np.float32), ei, None, None, {})


def _float64(model: torch.nn.Module, g: NumpyGraph) -> np.ndarray:
    model = copy.deepcopy(model).double()
    with torch.no_grad():
        return model(GraphBatch(torch.tensor(g.x, dtype=torch.float64), torch.tensor(g.edge_index))).numpy()


@pytest.fixture(scope="module")
def gt_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, dict[str, Path]]:
    """A BatchNorm GT as exported now (``dense``), as exported with the masks of -1e30 (``old-dense``,
    and without the metadata entry, as that code wrote it), and on the ``scatter`` lowering without the
    entry (``old-scatter``: nothing there is masked)."""
    from gtcompress.nn import attention, layout

    model = seeded_model(_config("gt"))
    root = tmp_path_factory.mktemp("masks")
    files = {"dense": root / "dense.onnx"}
    export_onnx(model, files["dense"], "dense", verify_batches=1)
    current, bound = attention.MASK, attention.score_bound_rows
    attention.MASK = layout.MASK = -1e30  # the masks before they were half of float32's range
    attention.score_bound_rows = lambda q, *_: torch.zeros_like(q[..., :1])  # nor refused rows near the mask
    try:
        export_onnx(model, root / "old-masks.onnx", "dense", verify=False)
    finally:
        attention.MASK = layout.MASK = current
        attention.score_bound_rows = bound
    files["old-dense"] = _without(root / "old-masks.onnx", MASK_KEY, root / "old-dense.onnx")
    export_onnx(model, root / "scatter.onnx", "scatter", verify_batches=1)
    files["old-scatter"] = _without(root / "scatter.onnx", MASK_KEY, root / "old-scatter.onnx")
    return model, files


def test_an_older_mask_file_refuses_features_beyond_its_range(gt_files) -> None:
    """The old masks give a finite wrong answer at 1e16, which the refusal keeps from a client; at the
    bound the old file answers as the new one, and the new one answers 1e16 as in float64."""
    model, files = gt_files
    big, at_bound = _graph(1e16), _graph(1.0)
    at_bound.x *= np.float32(LEGACY_BOUND / np.abs(at_bound.x).max())
    assert LEGACY_BOUND / 2 < np.abs(at_bound.x).max() <= LEGACY_BOUND
    want = _float64(model, big)
    wrong = GraphSession(files["old-dense"]).run([big])[0]  # what the old file computes, unchecked
    assert np.isfinite(wrong).all() and not np.allclose(wrong, want, rtol=1e-3, atol=0)
    new, old = ServedModel("new", GraphSession(files["dense"])), ServedModel("old", GraphSession(files["old-dense"]))
    assert new.legacy_range is None and old.legacy_range is not None
    with pytest.raises(FeatureRangeError) as e:
        _ask(old, big)
    peak = float(np.abs(big.x).max())
    assert str(e.value) == _beyond(
        peak, "1e+08", "gtcompress's attention masks outweighed attention scores beyond 1e30"
    )
    np.testing.assert_allclose(_ask(old, at_bound), _ask(new, at_bound), rtol=1e-6, atol=0)
    np.testing.assert_allclose(_ask(old, at_bound), _float64(model, at_bound), rtol=1e-4, atol=0)
    np.testing.assert_allclose(_ask(new, big), want, rtol=1e-4, atol=0)


def test_an_older_scatter_file_and_a_checkpoint_are_not_held_to_the_range(gt_files, tmp_path: Path) -> None:
    """The scatter lowering has no mask; the torch backend runs this gtcompress's model code (its GT on
    the plugin lowering, whose file would be held to the range)."""
    from gtcompress.checkpoint import save_checkpoint

    model, files = gt_files
    big = _graph(1e16)
    want = _float64(model, big)
    scatter = ServedModel("scatter", GraphSession(files["old-scatter"]))
    assert MASK_KEY not in scatter.session.metadata and scatter.legacy_range is None
    np.testing.assert_allclose(_ask(scatter, big), want, rtol=1e-4, atol=0)
    ckpt = ServedModel("ckpt", GraphSession(save_checkpoint(tmp_path / "ckpt", model)))
    assert str(ckpt.session.spec.lowering) == "plugin"
    np.testing.assert_allclose(_ask(ckpt, big), want, rtol=1e-4, atol=0)
    assert ckpt.session.metadata[MASK_KEY] == HALF_RANGE and ckpt.legacy_range is None
    assert ckpt.session.metadata[OVERFLOW_KEY] == OVERFLOW_NAN


def test_a_file_from_before_the_overflow_fix_refuses_features_beyond_its_bound(gt_files, tmp_path: Path) -> None:
    """A file without the overflow entry could answer an overflowed score finitely: it is held to
    OVERFLOW_BOUND (not to the first two fixes' 1e8), naming the fix; a file with it is not held."""
    model, files = gt_files
    old = ServedModel("old", GraphSession(_without(files["dense"], OVERFLOW_KEY, tmp_path / "old.onnx")))
    new = ServedModel("new", GraphSession(files["dense"]))
    assert new.legacy_range is None and old.legacy_range is not None
    below, above = _graph(1.0), _graph(1.0)
    below.x *= np.float32(OVERFLOW_BOUND / 2 / np.abs(below.x).max())
    above.x *= np.float32(OVERFLOW_BOUND * 4 / np.abs(above.x).max())
    np.testing.assert_allclose(_ask(old, below), _ask(new, below), rtol=1e-6, atol=0)
    np.testing.assert_allclose(_ask(new, above), _float64(model, above), rtol=1e-4, atol=0)
    from runtime.errors import NonFiniteOutputError

    # past float32's reach the new file refuses through ONNX Runtime (its NaN survives the export)
    assert isinstance(_ask_refused(new, _graph(1e30)), NonFiniteOutputError)
    with pytest.raises(FeatureRangeError) as e:
        _ask(old, above)
    peak = float(np.abs(above.x).max())
    assert str(e.value) == _beyond(
        peak, f"{OVERFLOW_BOUND:.0e}", "gtcompress's attention refused scores that overflow float32"
    )


def test_the_triton_python_variant_refuses_the_same(gt_files, config, tmp_path: Path) -> None:
    from exporters.triton_repo import PythonModelOptions, write_model_repository
    from runtime.triton_python import Failure, GraphBatchModel
    from tests.runtime.conftest import python_request

    model, files = gt_files
    spec = GraphSession(files["old-dense"]).spec
    repo = write_model_repository(tmp_path, "old", files["old-dense"], spec, options=PythonModelOptions())
    triton = GraphBatchModel(repo, 1, config(repo))
    big, small = _graph(1e16), _graph(1e6)
    refused, answered = triton.answer([python_request(big), python_request(small)])
    peak = float(np.abs(big.x).max())
    assert refused == Failure(
        _beyond(peak, "1e+08", "gtcompress's attention masks outweighed attention scores beyond 1e30"), invalid=True
    )
    np.testing.assert_allclose(answered[0], _float64(model, small), rtol=1e-4, atol=0)


def test_an_engine_built_from_an_older_file_is_refused_alike_by_gtc_serve_and_the_triton_python_variant(
    gt_files, config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A TensorRT plan carries no metadata: gtc build writes the ONNX file's beside it (``<engine>.json``),
    where gtc serve reads that the engine predates the half-range masks. The python variant's repository
    held the engine and config.pbtxt's input spec only, and answered the same request with a finite
    wrong value. Not TensorRT running: a fake engine runs the old ONNX file with ONNX Runtime
    (tests/runtime/test_tensorrt_backend.py), as the engine built from it would compute."""
    import trt_plugins.tensorrt_plugin as trt_plugin
    from exporters.tensorrt import read_onnx_metadata
    from exporters.triton_repo import write_model_repository
    from gtcompress.io import write_json
    from runtime import backends
    from runtime.triton_python import Failure, GraphBatchModel
    from tests.runtime.conftest import python_request
    from tests.runtime.test_tensorrt_backend import FakeCuda, fake_tensorrt

    model, files = gt_files
    cuda = FakeCuda(gpus=1)
    trt = fake_tensorrt(files["old-dense"], cuda)
    monkeypatch.setattr(trt_plugin, "import_tensorrt", lambda: (trt, None))
    monkeypatch.setattr(backends, "_load_cudart", lambda: cuda)
    engine = tmp_path / "old.plan"
    engine.write_bytes(b"engine")
    write_json(tmp_path / "old.plan.json", read_onnx_metadata(files["old-dense"]))  # what gtc build writes
    serve = ServedModel("old", GraphSession(engine))
    assert serve.session.platform == "tensorrt_plan" and serve.legacy_range is not None
    repo = write_model_repository(tmp_path / "repo", "old", engine, serve.session.spec, backend="python")
    with caplog.at_level("WARNING", logger="gtcompress.triton"):
        triton = GraphBatchModel(repo, 1, config(repo))
    assert triton.session.platform == "tensorrt_plan" and not caplog.records
    big, small = _graph(1e16), _graph(1e6)
    with pytest.raises(FeatureRangeError) as e:
        _ask(serve, big)
    assert "the file was exported before gtcompress's attention masks outweighed" in str(e.value)
    refused, answered = triton.answer([python_request(big), python_request(small)])
    assert isinstance(refused, Failure), f"answered {refused!r}, not {_float64(model, big)!r}"
    assert refused == Failure(str(e.value), invalid=True)
    want = _float64(model, small)
    np.testing.assert_allclose(answered[0], want, rtol=1e-4, atol=0)
    np.testing.assert_allclose(_ask(serve, small), want, rtol=1e-4, atol=0)

    # a repository written without the engine's metadata cannot tell: Triton's log says so at load
    bare = tmp_path / "bare" / "old.plan"
    bare.parent.mkdir()
    bare.write_bytes(b"engine")
    repo = write_model_repository(tmp_path / "repo2", "old", bare, serve.session.spec, backend="python")
    assert sorted(p.name for p in (repo / "1").iterdir()) == ["model.plan", "model.py", "vendor"]
    with caplog.at_level("WARNING", logger="gtcompress.triton"):
        GraphBatchModel(repo, 1, config(repo))
    assert [r.getMessage() for r in caplog.records] == [
        f"model 'old': {repo / '1' / 'model.plan'} has no model.plan.json beside it (the engine's metadata, which gtc "
        "build writes): requests are not held to the feature range an engine built from an older export is trusted "
        "with, as gtc serve holds them; write the repository again from the engine and its .json"
    ]
    # a .json beside it without the model's config is named as such, not as missing
    caplog.clear()
    side = repo / "1" / "model.plan.json"
    write_json(side, {"input_spec": serve.session.spec.to_json()})
    with caplog.at_level("WARNING", logger="gtcompress.triton"):
        GraphBatchModel(repo, 1, config(repo))
    assert [r.getMessage() for r in caplog.records] == [
        f"model 'old': {side} has no model_config (the engine's metadata, which gtc build writes): requests are "
        "not held to the feature range an engine built from an older export is trusted with, as gtc serve holds "
        "them; write the repository again from the engine and its .json"
    ]


def test_an_older_plugin_file_answers_up_to_its_nan_and_its_nan_refusal_says_why(gt_files, tmp_path: Path) -> None:
    """The plugin function's running maximum of -1e30 gives NaN, never a finite wrong answer: the file
    answers as in float64 up to there, so it is held to no bound, and its NaN is refused as every NaN
    answer is, saying that a new export computes it."""
    from onnx import numpy_helper

    from runtime.errors import NonFiniteOutputError

    model = gt_files[0]
    export_onnx(model, tmp_path / "plugin.onnx", "plugin", verify=False)
    proto = onnx.load(str(tmp_path / "plugin.onnx"))
    starts = [
        a
        for f in proto.functions
        for n in f.node
        if n.op_type == "ConstantOfShape"
        for a in n.attribute
        if np.isneginf(numpy_helper.to_array(a.t)).all()
    ]
    assert len(starts) == 1  # the function's running maximum: set back to -1e30, as files of 12f5191 hold it
    starts[0].t.CopyFrom(numpy_helper.from_array(np.array([-1e30], np.float32), starts[0].t.name))
    onnx.save(proto, str(tmp_path / "with-start.onnx"))
    old = ServedModel("old", GraphSession(_without(tmp_path / "with-start.onnx", MASK_KEY, tmp_path / "old.onnx")))
    assert old.legacy_range is None
    for scale in (1e10, 1e13):
        np.testing.assert_allclose(_ask(old, _graph(scale)), _float64(model, _graph(scale)), rtol=1e-4, atol=0)
    refused = _ask_refused(old, _graph(1e17))
    assert isinstance(refused, NonFiniteOutputError), refused
    assert str(refused).endswith(
        "is beyond what the model computes in float32 (the file was exported before gtcompress's attention op "
        "on ONNX Runtime softmaxed scores below -1e30: exported again, it may compute it); send features on the "
        "scale the model was trained on"
    )
    np.testing.assert_allclose(
        GraphSession(tmp_path / "plugin.onnx").run([_graph(1e17)])[0], _float64(model, _graph(1e17)), rtol=1e-4, atol=0
    )
