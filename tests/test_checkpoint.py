import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from gtcompress.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from gtcompress.data.base import FeatureSpec
from gtcompress.errors import CheckpointError
from gtcompress.graph import GraphBatch
from gtcompress.models import LayerSpec, ModelConfig, build_model


def _model(**kw):
    torch.manual_seed(0)
    cfg = ModelConfig(
        arch="gps",
        node_features=FeatureSpec("float", 3),
        edge_features=FeatureSpec("float", 2),
        out_dim=2,
        hidden=16,
        heads=2,
        num_layers=2,
        **kw,
    )
    return build_model(cfg)


def _batch() -> GraphBatch:
    g = torch.Generator().manual_seed(1)
    return GraphBatch(
        x=torch.randn(6, 3, generator=g),
        edge_index=torch.randint(0, 6, (2, 10), generator=g),
        edge_attr=torch.randn(10, 2, generator=g),
    )


def test_round_trip_reproduces_outputs(tmp_path) -> None:
    model = _model(layers=[LayerSpec(1, 8), LayerSpec(0, 32, 0.5)])
    model.train()
    model(_batch())  # move BatchNorm running stats away from their init
    model.eval()
    save_checkpoint(tmp_path / "ckpt", model, {"metrics": {"val": 0.5}})
    loaded, meta = load_checkpoint(tmp_path / "ckpt")
    assert meta["metrics"] == {"val": 0.5}
    assert loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(loaded(_batch()), model(_batch()))


def test_overwrite_is_atomic_and_leaves_no_temp_files(tmp_path) -> None:
    save_checkpoint(tmp_path / "ckpt", _model())
    save_checkpoint(tmp_path / "ckpt", _model(), {"round": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert read_checkpoint_meta(tmp_path / "ckpt")["round"] == 2


def test_shape_mismatch_is_listed(tmp_path) -> None:
    path = save_checkpoint(tmp_path / "ckpt", _model())
    weights = path / "model.safetensors"
    state = load_file(str(weights))
    state["layers.0.ffn.lin1.weight"] = torch.zeros(5, 16)
    del state["head.0.bias"]
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(weights))
    doc = json.loads((path / "config.json").read_text())
    doc.pop("weights_sha256")
    (path / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert "missing 1: head.0.bias" in msg
    assert "unexpected 1: extra.weight" in msg
    assert "layers.0.ffn.lin1.weight: checkpoint [5, 16] vs model [32, 16]" in msg


def test_weights_from_another_run_are_caught(tmp_path) -> None:
    path = save_checkpoint(tmp_path / "a", _model())
    torch.manual_seed(5)
    other = build_model(_model().config)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="SHA-256 does not match"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda p: None, "checkpoint directory does not exist"),
        (lambda p: p.mkdir(), "config.json: missing"),
        (lambda p: (p.mkdir(), (p / "config.json").write_text("{")), "not valid JSON"),
        (
            lambda p: (p.mkdir(), (p / "config.json").write_text('{"format": "x"}')),
            "not a gtcompress checkpoint",
        ),
    ],
)
def test_bad_checkpoint_directories(tmp_path, setup, match: str) -> None:
    p = tmp_path / "ckpt"
    setup(p)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(p)


def test_meta_copied_from_a_parent_cannot_override_reserved_keys(tmp_path) -> None:
    parent = save_checkpoint(tmp_path / "parent", _model())
    _, meta = load_checkpoint(parent)
    child = _model(dropout=0.2)
    save_checkpoint(tmp_path / "child", child, {**meta, "note": "derived"})
    loaded, child_meta = load_checkpoint(tmp_path / "child")  # sha and config are the child's own
    assert loaded.config.dropout == 0.2 and child_meta["note"] == "derived"
