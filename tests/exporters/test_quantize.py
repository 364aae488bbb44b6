"""Dynamic int8 quantization of an export (exporters.quantize): what it quantizes, that the runtime serves
it near the float model, and the files it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
import torch

from exporters.onnx import export_onnx, read_metadata
from exporters.quantize import product_blocks, quantization, quantize_int8
from gtcompress.errors import ConfigError
from gtcompress.models import ModelConfig, build_model
from gtcompress.models.config import FeatureSpec
from gtcompress.pipeline.quantize import _fewest_float32, drop_words
from gtcompress.pipeline.report import drop_between
from gtcompress.preprocess.random_graphs import random_graph
from runtime.profile_labels import model_entry
from runtime.session import GraphSession


def _model(arch: str) -> torch.nn.Module:
    cfg = ModelConfig(
        arch=arch,
        node_features=FeatureSpec("categorical", 2, [5, 3]),
        edge_features=FeatureSpec("float", 3),
        out_dim=3,
        hidden=64,
        heads=4,
        num_layers=1,
    )
    torch.manual_seed(0)
    return build_model(cfg).eval()


def _weight_bytes(path: Path) -> int:
    return sum(onnx.numpy_helper.to_array(t).nbytes for t in onnx.load(str(path)).graph.initializer)


@pytest.mark.parametrize(("arch", "lowering"), [("gt", "dense"), ("gps", "dense")])
def test_an_int8_export_quantizes_every_weight_product_and_serves_near_the_float_model(
    tmp_path: Path, arch: str, lowering: str
) -> None:
    """Every product with a constant weight runs in int8 (torch exports nn.Linear as Gemm, which the
    quantizer only takes once the stale shapes torch records for the weights are dropped: it stopped on
    them before); the attention's own products stay float32; the metadata the runtime reads is kept.
    (The lowering changes only the attention, which stays float32: dense has products to check.)"""
    model = _model(arch)
    res = export_onnx(model, tmp_path / "f.onnx", lowering, verify_batches=1)
    out = quantize_int8(res.path, tmp_path / "q.onnx")
    proto = onnx.load(str(out))
    weights = {t.name for t in proto.graph.initializer}
    ops = [n.op_type for n in proto.graph.node]
    # the node encoder's embedding tables stay float32 (Gather): stored in int8 (ONNX Runtime's default, a
    # DequantizeLinear before the Gather), every node's input was one step off, and GPS lost 5 points
    assert {op for op in ops if "quant" in op.lower() or "Integer" in op} == {"DynamicQuantizeLinear", "MatMulInteger"}
    assert "Gemm" not in ops and ops.count("MatMulInteger") >= sum(type(m) is torch.nn.Linear for m in model.modules())
    assert not [n.name for n in proto.graph.node if n.op_type == "MatMul" and set(n.input) & weights]
    # the products of two activations (q·k, the softmax-weighted sum of v) stay float32 (MatMulConstBOnly):
    # quantized, one per-call range would cover every score of the batch
    before = onnx.load(str(res.path))
    float_weights = {t.name for t in before.graph.initializer}
    between = [n for n in before.graph.node if n.op_type == "MatMul" and not set(n.input) & float_weights]
    assert between and ops.count("MatMul") == len(between)
    float_meta, int8_meta = read_metadata(res.path), read_metadata(out)
    assert float_meta.items() <= int8_meta.items()  # ONNX Runtime adds a mark of its own
    assert quantization(int8_meta) == {
        "scheme": "int8",
        "weights": "int8, per output channel",
        "activations": "uint8, per call (dynamic)",
    }
    assert quantization(float_meta) is None
    assert model_entry("q", str(out))["quantization"] == quantization(int8_meta)  # gtc profile's report says so
    assert model_entry("f", str(res.path))["quantization"] is None
    assert _weight_bytes(out) < 0.4 * _weight_bytes(res.path)  # a quarter for the products' weights
    rng = np.random.default_rng(0)
    spec = res.spec
    graphs = [random_graph(rng, int(n), 4 * int(n), spec.x, spec.edge_attr) for n in rng.integers(5, 60, size=16)]
    ref = np.concatenate(GraphSession(res.path, threads=1).run(graphs))
    got = np.concatenate(GraphSession(out, threads=1).run(graphs))
    assert got.shape == ref.shape and np.isfinite(got).all()
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()
    assert not np.array_equal(got, ref)  # quantized indeed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.onnx", "q.onnx"]


def test_a_quantized_file_an_unknown_file_and_the_plugin_lowering_are_refused(tmp_path: Path) -> None:
    model = _model("gt")
    res = export_onnx(model, tmp_path / "f.onnx", "scatter", verify_batches=1)
    q = quantize_int8(res.path, tmp_path / "q.onnx")
    with pytest.raises(ConfigError) as e:
        quantize_int8(q, tmp_path / "qq.onnx")
    assert str(e.value) == f"{q}: already quantized (int8); quantize the float32 export"
    bare = onnx.load(str(res.path))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(ConfigError) as e:
        quantize_int8(tmp_path / "bare.onnx", tmp_path / "qq.onnx")
    assert str(e.value) == f"{tmp_path / 'bare.onnx'}: not a model gtc export wrote (its metadata has no input_spec)"
    plugin = onnx.load(str(res.path))
    for p in plugin.metadata_props:
        if p.key == "input_spec":
            p.value = json.dumps({**json.loads(p.value), "lowering": "plugin"})
    onnx.save(plugin, str(tmp_path / "plugin.onnx"))
    with pytest.raises(ConfigError) as e:
        quantize_int8(tmp_path / "plugin.onnx", tmp_path / "qq.onnx")
    assert str(e.value) == (
        f"{tmp_path / 'plugin.onnx'}: the 'plugin' lowering is for TensorRT, which reads no ONNX Runtime int8 "
        "operators; quantize a file of another lowering"
    )
    assert not (tmp_path / "qq.onnx").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_drops_are_points_or_percent_of_the_float_mae() -> None:
    assert drop_between("accuracy", 81.0, 79.5) == pytest.approx(1.5)
    assert drop_between("rocauc", 70.0, 71.0) == pytest.approx(-1.0)
    assert drop_between("mae", 0.5, 0.55) == pytest.approx(10.0)
    assert drop_between("mae", 0.5, 0.45) == pytest.approx(-10.0)
    assert drop_words("accuracy", 1.5) == "1.50 points"
    assert drop_words("mae", 10.0) == "10.0 % of the float32 MAE"


def test_a_block_kept_float32_keeps_every_product_of_it_and_only_those(tmp_path: Path) -> None:
    """Blocks are read from the module path torch records per node: a layer's local message passing,
    attention and FFN, the encoders, the head. Those kept float32 stay MatMul (the quantizer's
    ``nodes_to_exclude`` takes a Gemm by the name it gives it, ``<name>_MatMul``, which a Gemm's own name
    misses); the file records them; a block the file lacks, or every block, is refused."""
    res = export_onnx(_model("gps"), tmp_path / "f.onnx", "dense", verify_batches=1)
    blocks = product_blocks(res.path)
    assert blocks == {"edge_encoder": 1, "layers.0.local": 2, "layers.0.attn": 4, "layers.0.ffn": 2, "head": 2}
    out = quantize_int8(res.path, tmp_path / "q.onnx", keep_float32=["layers.0.attn", "head"])
    proto = onnx.load(str(out))
    weights = {t.name for t in proto.graph.initializer}
    float_products = [n for n in proto.graph.node if n.op_type == "MatMul" and set(n.input) & weights]
    assert len(float_products) == blocks["layers.0.attn"] + blocks["head"]
    assert [n.op_type for n in proto.graph.node].count("MatMulInteger") == sum(blocks.values()) - len(float_products)
    entry = quantization(read_metadata(out))
    assert entry is not None and entry["float32_blocks"] == ["layers.0.attn", "head"]  # in the file's order
    from rich.console import Console

    from runtime.profile import profile_models
    from runtime.profile_report import report_tables

    kw = {"graph_sizes": (8,), "batch_sizes": (1,), "threads": (1,), "iterations": 2, "op_profile": False}
    console = Console(record=True, width=300)
    for t in report_tables(profile_models([out], isolate=False, **kw)):
        console.print(t)
    assert "q (gps, dense, int8, 2 blocks float32, CPUExecutionProvider)" in console.export_text()
    with pytest.raises(ConfigError) as e:
        quantize_int8(res.path, tmp_path / "x.onnx", keep_float32=["layers.1.attn", "head"])
    assert str(e.value) == (
        f"{res.path}: no block 'layers.1.attn' among its weight products; its blocks are edge_encoder, "
        "layers.0.local, layers.0.attn, layers.0.ffn, head"
    )
    with pytest.raises(ConfigError) as e:
        quantize_int8(res.path, tmp_path / "x.onnx", keep_float32=list(blocks))
    assert str(e.value) == (
        f"{res.path}: keeping every block float32 (edge_encoder, layers.0.local, layers.0.attn, layers.0.ffn, "
        "head) leaves nothing in int8"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.onnx", "q.onnx"]
    bare = onnx.load(str(res.path))  # a file whose nodes record no module path: one block, nothing to search
    for node in bare.graph.node:
        del node.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    assert product_blocks(tmp_path / "bare.onnx") == {"other": sum(blocks.values())}


def test_the_search_keeps_the_most_costly_blocks_float32_until_the_drop_is_within() -> None:
    """Each block alone, then the most helpful together; a block whose drop alone is undefined (NaN) is
    tried last; never every block; where no set is within, the closest."""
    cost = {"a": 0.2, "b": 1.5, "c": 1.0, "d": float("nan")}  # each block's share of the int8 drop
    measured: list[tuple[str, ...]] = []

    def measure(keep) -> float:  # type: ignore[no-untyped-def]
        measured.append(tuple(keep))
        left = [cost[b] for b in cost if b not in keep]
        return float("nan") if any(np.isnan(left)) else sum(left)

    keep, drop = _fewest_float32(list(cost), measure, max_drop=0.5)
    # alone: a leaves nan, b nan, c nan, d 2.7: d first, then the NaNs in the file's order
    assert measured == [("a",), ("b",), ("c",), ("d",), ("d", "a"), ("d", "a", "b")]
    assert (keep, drop) == (["d", "a", "b"], pytest.approx(1.0))  # nothing within 0.5 without all four
    measured.clear()
    cost["d"] = 0.1
    keep, drop = _fewest_float32(list(cost), measure, max_drop=1.0)
    assert measured == [("a",), ("b",), ("c",), ("d",), ("b", "c")]  # b alone leaves 1.3, c 1.8: b, then b+c
    assert (keep, drop) == (["b", "c"], pytest.approx(0.3))
    measured.clear()
    assert _fewest_float32(list(cost), measure, max_drop=1.3) == (["b"], pytest.approx(1.3))
    assert len(measured) == 4  # one evaluation a block, no more
