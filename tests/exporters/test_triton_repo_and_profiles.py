import importlib.util
import json
from pathlib import Path

import pytest

from exporters.onnx import input_spec
from exporters.tensorrt import GraphSize, optimisation_profile
from exporters.triton_repo import write_model_repository
from gtcompress.data.base import FeatureSpec
from gtcompress.errors import ConfigError
from gtcompress.models import ModelConfig, build_model
from gtcompress.preprocess.spec import InputSpec


def _spec(lowering: str, arch: str = "gt"):
    cfg = ModelConfig(
        arch=arch,
        node_features=FeatureSpec("float", 5),
        edge_features=FeatureSpec("categorical", 1, [4]),
        out_dim=2,
        hidden=16,
        heads=2,
        num_layers=1,
        pe={"lap": 3},
        task_level="graph",
    )
    return input_spec(build_model(cfg), lowering)


def _model_config_pb2():
    """Triton's own ModelConfig protobuf, loaded from tritonclient without its grpc extra."""
    tc = importlib.util.find_spec("tritonclient")
    if tc is None or tc.origin is None:
        pytest.skip("tritonclient is not installed (pip install 'gtcompress[serve]')")
    path = Path(tc.origin).parent / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    ("lowering", "suffix", "platform"), [("plugin", ".plan", "tensorrt_plan"), ("dense", ".onnx", "onnxruntime_onnx")]
)
def test_config_pbtxt_parses_as_triton_model_config(tmp_path, lowering: str, suffix: str, platform: str) -> None:
    from google.protobuf import text_format

    spec = _spec(lowering)
    model_file = tmp_path / f"m{suffix}"
    model_file.write_bytes(b"model bytes")
    root = write_model_repository(tmp_path / "repo", "gt_cluster", model_file, spec)
    pb2 = _model_config_pb2()
    cfg = text_format.Parse((root / "config.pbtxt").read_text(), pb2.ModelConfig())
    assert cfg.name == "gt_cluster" and cfg.platform == platform and cfg.max_batch_size == 0
    assert [i.name for i in cfg.input] == spec.inputs
    types = {i.name: pb2.DataType.Name(i.data_type) for i in cfg.input}
    assert types["x"] == "TYPE_FP32" and types["edge_index"] == "TYPE_INT64" and types["edge_attr"] == "TYPE_INT64"
    assert list(next(i for i in cfg.input if i.name == "x").dims) == [-1, 5]
    assert list(next(i for i in cfg.input if i.name == "pe_lap").dims) == [-1, 3]
    assert [o.name for o in cfg.output] == ["output"] and list(cfg.output[0].dims) == [-1, 2]
    assert InputSpec.from_json(json.loads(cfg.parameters["gtcompress_input_spec"].string_value)) == spec
    assert (root / "1" / f"model{suffix}").read_bytes() == b"model bytes"


def test_repository_rejects_bad_names(tmp_path) -> None:
    f = tmp_path / "m.onnx"
    f.write_bytes(b"")
    with pytest.raises(ConfigError, match="use letters, digits"):
        write_model_repository(tmp_path, "bad name/..", f, _spec("dense"))
    with pytest.raises(ConfigError, match=r"expected a \.onnx or \.plan"):
        write_model_repository(tmp_path, "ok", tmp_path / "m.pt", _spec("dense"))


def test_optimisation_profile_shapes() -> None:
    lo, opt, hi = (
        GraphSize(1, 1, 1),
        GraphSize(4000, 150_000, 32, 150, 120),
        GraphSize(20_000, 1_000_000, 256, 400, 900),
    )
    prof = optimisation_profile(_spec("plugin"), lo, opt, hi)
    assert prof["x"] == ((1, 5), (4000, 5), (20_000, 5))
    assert prof["edge_index"] == ((2, 1), (2, 150_000), (2, 1_000_000))
    assert prof["rowptr"] == ((2,), (4001,), (20_001,))
    assert prof["node_counts"] == ((1,), (32,), (256,))
    dense = optimisation_profile(_spec("dense", "gps"), lo, opt, hi)
    assert dense["pad_mask"] == ((1, 1), (32, 150), (256, 400))
    padded = optimisation_profile(_spec("padded"), lo, opt, hi)
    assert padded["nbr_src_0"] == ((1, 1), (4000, 120), (20_000, 900))  # every degree bucket up to the maxima
    assert padded["nbr_node_3"] == ((1,), (4000,), (20_000,)) and padded["nbr_inv"] == ((1,), (4000,), (20_000,))
    with pytest.raises(ConfigError, match="profile nodes: need 1 <= min <= opt <= max"):
        optimisation_profile(_spec("dense"), GraphSize(10, 1, 1), GraphSize(5, 1, 1), hi)
