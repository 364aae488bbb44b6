import json
from pathlib import Path

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


def test_truncated_weights_are_unreadable_not_from_another_run(tmp_path) -> None:
    path = save_checkpoint(tmp_path / "ckpt", _model())
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: unreadable safetensors file \(.*header"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda p: None, "checkpoint directory does not exist"),
        (lambda p: p.mkdir(), "config.json: missing"),
        (lambda p: p.write_text("weights?"), "ckpt: not a checkpoint directory"),
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


@pytest.mark.parametrize(
    ("content", "match"),
    [
        # before: a raw UnicodeDecodeError / AttributeError ('list' object has no attribute 'get')
        (
            b"\xff\xfe\x00garbage\x9c",
            r"ckpt/config\.json: not valid JSON \(not UTF-8 text: 'utf-8' codec can't decode byte 0xff",
        ),
        (b"[1, 2]", r"ckpt/config\.json: not a gtcompress checkpoint \(expected a JSON object, got an array\)$"),
        # before: json's RecursionError / ValueError escaped as a traceback from gtc info, export, serve
        (
            b'{"note": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            r"ckpt/config\.json: not valid JSON \(nested too deeply\)$",
        ),
        (
            b'{"note": ' + b"1" * 5000 + b"}",
            r"ckpt/config\.json: not valid JSON \(a number has more than 4300 digits\)$",
        ),
        (b'"gtcompress"', r"ckpt/config\.json: not a gtcompress checkpoint \(expected a JSON object, got a string\)$"),
        (
            b'{"format": "gtcompress-checkpoint", "model": [1]}',
            r"ckpt/config\.json: the 'model' section must be a JSON object, got an array$",
        ),
        (  # before: `gtc info` tabulated it, an AttributeError traceback ('list' has no 'items')
            b'{"format": "gtcompress-checkpoint", "model": {}, "metrics": [0.8, 0.7]}',
            r"ckpt/config\.json: the 'metrics' section must be a JSON object, got an array$",
        ),
    ],
)
def test_config_json_that_is_not_a_json_object_is_named(tmp_path, content: bytes, match: str) -> None:
    path = save_checkpoint(tmp_path / "ckpt", _model())
    (path / "config.json").write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        read_checkpoint_meta(path)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        # before: ZeroDivisionError from hidden % heads, escaping load_checkpoint
        ("heads", 0, r"invalid model config \(heads must be a positive integer, got 0\)$"),
        ("hidden", -16, r"invalid model config \(hidden must be a positive integer, got -16\)$"),
        ("out_dim", 0, r"invalid model config \(out_dim must be a positive integer, got 0\)$"),
        ("head_layers", 0, r"invalid model config \(head_layers must be a positive integer, got 0\)$"),
        ("hidden", "16", r"invalid model config \(hidden must be a positive integer, got '16'\)$"),
        ("dropout", 1.5, r"invalid model config \(dropout must be a probability in \[0, 1\], got 1\.5\)$"),
        (
            "node_features",
            {"kind": "float"},
            r"invalid model config \(node_features: \{'kind': 'float'\} is not a valid FeatureSpec \(.*'dim'\)\)$",
        ),
    ],
)
def test_out_of_range_model_config_is_a_checkpoint_error(tmp_path, field: str, value, match: str) -> None:
    path = save_checkpoint(tmp_path / "ckpt", _model())
    doc = json.loads((path / "config.json").read_text())
    doc["model"][field] = value
    if field == "heads":
        doc["model"]["head_dim"] = 0  # derived again: hidden // heads
    (path / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"ckpt/config\.json: " + match):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("num_layers", 10**6, r"num_layers must be at most 1024, got 1000000"),
        ("head_layers", 10**7, r"head_layers must be at most 64, got 10000000"),
        ("layers", [{"heads": 2, "ffn_dim": 8, "token_keep": 1.0}] * 2000, r"layers lists 2000 layers; at most 1024"),
    ],
)
def test_absurd_layer_counts_are_refused_before_the_model_is_built(tmp_path, field: str, value, match: str) -> None:
    """A config.json naming a million layers was built layer by layer (on the meta device, before the
    weights check) for about 20 minutes and tens of GiB before it failed; now the config is refused."""
    path = save_checkpoint(tmp_path / "ckpt", _model())
    doc = json.loads((path / "config.json").read_text())
    doc["model"][field] = value
    if field == "num_layers":
        doc["model"]["layers"] = []  # derived again from num_layers
    (path / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"ckpt/config\.json: invalid model config \(" + match):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # before: read as format 1 without a word, whatever a later format means by its fields
        (
            {"format_version": 2, "gtcompress_version": "9.0.0"},
            "{config}: checkpoint format_version 2 is newer than this gtcompress (0.1.0) reads (1); it was "
            "written by gtcompress 9.0.0: upgrade gtcompress to load it",
        ),
        ({"format_version": "2"}, "{config}: format_version must be a positive integer, got '2'"),
        ({"format_version": 0}, "{config}: format_version must be a positive integer, got 0"),
        # before: "invalid model config (ModelConfig.__init__() got an unexpected keyword argument 'rotary')"
        (
            {"gtcompress_version": "9.0.0", "model": {"rotary": True}},
            "{config}: invalid model config (unknown field 'rotary'); it was written by gtcompress 9.0.0, this is "
            "0.1.0",
        ),
        ({"model": {"rotary": True, "alibi": 1}}, "{config}: invalid model config (unknown fields 'alibi', 'rotary')"),
    ],
)
def test_a_checkpoint_from_a_newer_gtcompress_is_named(tmp_path, change: dict, message: str) -> None:
    path = save_checkpoint(tmp_path / "ckpt", _model())
    doc = json.loads((path / "config.json").read_text())
    doc["model"].update(change.pop("model", {}))
    doc.update(change)
    (path / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(err.value) == message.format(config=path / "config.json")


def test_a_checkpoint_without_format_version_reads_as_format_1(tmp_path) -> None:
    path = save_checkpoint(tmp_path / "ckpt", _model())
    doc = json.loads((path / "config.json").read_text())
    del doc["format_version"]
    (path / "config.json").write_text(json.dumps(doc))
    assert load_checkpoint(path)[0].config == _model().config


def test_meta_copied_from_a_parent_cannot_override_reserved_keys(tmp_path) -> None:
    parent = save_checkpoint(tmp_path / "parent", _model())
    _, meta = load_checkpoint(parent)
    child = _model(dropout=0.2)
    save_checkpoint(tmp_path / "child", child, {**meta, "note": "derived"})
    loaded, child_meta = load_checkpoint(tmp_path / "child")  # sha and config are the child's own
    assert loaded.config.dropout == 0.2 and child_meta["note"] == "derived"


def _with_section(tmp_path, key: str, value) -> Path:
    """A checkpoint whose config.json holds ``key: value`` (as a hand edit or another tool would)."""
    path = save_checkpoint(tmp_path / "ckpt", _model())
    doc = json.loads((path / "config.json").read_text())
    doc[key] = value
    (path / "config.json").write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("cluster", 'the \'dataset\' section must be a JSON object like {"name": "cluster", "size": "small", '),
        ({"name": "cluster", "split": 1}, "dataset.split: unknown key; expected name, root, size, seed, info"),
        ({"name": "cluster", "size": 5}, "dataset.size must be a string ('small', 'full' or 'TRAIN,VAL,TEST'), got a"),
        ({"name": "cluster", "size": "big"}, "dataset.size: size must be 'small', 'full' or 'TRAIN,VAL,TEST' graph"),
        ({"name": "mnist"}, "dataset.name 'mnist' is not a dataset; expected one of pattern, cluster, csl, molhiv,"),
        ({"name": "tu:"}, "dataset.name 'tu:' is not a dataset"),
        ({"name": 3}, "dataset.name must be a dataset name (a non-empty string), got 3"),
        (
            {"name": "cluster", "seed": -1},
            "dataset.seed must be an integer >= 0 (the generator and split seed), got -1",
        ),
        ({"name": "cluster", "seed": True}, "dataset.seed must be an integer >= 0"),
        ({"name": "cluster", "root": 7}, "dataset.root must be a directory (a string) or null, got a number"),
        ({"name": "cluster", "info": []}, "dataset.info must be a JSON object, got an array"),
    ],
)
def test_a_bad_dataset_section_is_named(tmp_path, value, message: str) -> None:
    """Every command builds DataSpec(**section): an unknown key was a TypeError traceback, a number
    as size an AttributeError. Now read_checkpoint_meta names config.json and the key."""
    path = _with_section(tmp_path, "dataset", value)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint_meta(path)
    assert str(e.value).startswith(f"{path / 'config.json'}: {message}")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0.3, "the 'teddy' section must be a JSON object"),
        ({"edge": 0.3}, "teddy.edge: unknown key; expected edges, per_graph, threshold, pe"),
        ({"edges": 1.5}, "teddy.edges must be the fraction of edges removed, a number in [0, 1), got 1.5"),
        ({"edges": 0.3, "per_graph": "yes"}, "teddy.per_graph must be true or false, got 'yes'"),
        ({"edges": 0.3, "per_graph": False}, "teddy.threshold is missing: global TEDDY (per_graph false)"),
        ({"edges": 0.3, "pe": 4}, "teddy.pe must list the PE kinds recomputed on the sparsified graph, got 4"),
    ],
)
def test_a_bad_teddy_section_is_named(tmp_path, value, message: str) -> None:
    """Read as absent, a misspelt teddy section would feed the model graphs it was not trained on."""
    path = _with_section(tmp_path, "teddy", value)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint_meta(path)
    assert str(e.value).startswith(f"{path / 'config.json'}: {message}")


@pytest.mark.parametrize(("written", "read"), [(float("-inf"), 0.0), (float("inf"), 2.0)])
def test_an_older_infinite_teddy_threshold_reads_as_its_finite_constant(tmp_path, written: float, read: float) -> None:
    """gtc sparsify --global before the finite constants recorded a threshold keeping (dropping) every
    edge as -Infinity (Infinity); such a checkpoint is read as 0.0 (2.0), the same rule, so gtc export
    writes a JSON number the runtime loads."""
    path = _with_section(tmp_path, "teddy", {"edges": 0.001, "per_graph": False, "threshold": written})
    assert "Infinity" in (path / "config.json").read_text()
    assert read_checkpoint_meta(path)["teddy"]["threshold"] == read


def test_data_spec_is_the_recorded_one_and_another_dataset_starts_from_its_defaults() -> None:
    """The recorded split (size, seed) belongs to the recorded dataset: --data naming the same one
    keeps it, another one does not inherit it (a TU dataset refuses explicit sizes); the root of a
    file-based family is kept for another dataset of that family."""
    from gtcompress.checkpoint_data import checkpoint_data_spec

    meta = {"dataset": {"name": "tu:MUTAG", "root": "/d/TU", "size": "small", "seed": 3, "info": {}}}
    assert checkpoint_data_spec(meta).to_dict() == {"name": "tu:MUTAG", "root": "/d/TU", "size": "small", "seed": 3}
    assert checkpoint_data_spec(meta, "TU:MUTAG").seed == 3
    assert checkpoint_data_spec(meta, "tu:PTC_MR").to_dict() == {
        "name": "tu:PTC_MR",
        "root": "/d/TU",
        "size": "small",
        "seed": 0,
    }
    meta = {"dataset": {"name": "cluster", "root": None, "size": "12,6,6", "seed": 3}}
    assert checkpoint_data_spec(meta, "tu:MUTAG", "/e").to_dict() == {
        "name": "tu:MUTAG",
        "root": "/e",
        "size": "small",
        "seed": 0,
    }
    assert checkpoint_data_spec({}) is None


def test_teddy_transform_recomputes_the_models_pe() -> None:
    """An absent ``pe`` (what the pipeline wrote before) means every PE kind of the model, as the
    runtime reads it; a listed one only those kinds; no removed edges, no transform."""
    from gtcompress.checkpoint_data import teddy_transform

    config = _model(pe={"rwse": 4, "lap": 2}).config
    assert teddy_transform({"teddy": {"edges": 0.3, "per_graph": True}}, config).pe == {"rwse": 4, "lap": 2}
    assert teddy_transform({"teddy": {"edges": 0.3, "pe": {"rwse": 4}}}, config).pe == {"rwse": 4}
    assert teddy_transform({"teddy": {"edges": 0.3, "pe": []}}, config).pe == {}
    assert teddy_transform({"teddy": {"edges": 0.0}}, config) is None
    assert teddy_transform({}, config) is None


def test_input_mismatch_names_both_sides() -> None:
    """Categories beyond the model's embeddings were an IndexError mid-evaluation; edge features
    the model does not read are no obstacle."""
    import dataclasses

    from gtcompress.checkpoint_data import input_mismatch
    from gtcompress.data.base import DatasetInfo

    cat = FeatureSpec("categorical", 1, [7])
    info = DatasetInfo("A", "graph", "multiclass", 2, "accuracy", cat, FeatureSpec("categorical", 1, [4]))
    config = ModelConfig(arch="gt", node_features=cat, edge_features=None, out_dim=2, task_level="graph", hidden=16)
    assert input_mismatch(config, info) is None
    assert input_mismatch(config, dataclasses.replace(info, node_features=FeatureSpec("categorical", 1, [5]))) is None
    bigger = dataclasses.replace(info, name="B", node_features=FeatureSpec("categorical", 1, [18]))
    assert input_mismatch(config, bigger) == (
        "node features: the model takes categorical, cardinalities [7], B has categorical, cardinalities [18]"
    )
    with_edges = dataclasses.replace(config, edge_features=FeatureSpec("float", 3))
    assert (
        input_mismatch(with_edges, info)
        == "edge features: the model takes float, 3 columns, A has categorical, cardinalities [4]"
    )
    assert (
        input_mismatch(config, dataclasses.replace(info, out_dim=3)) == "outputs (out_dim): the model takes 2, A has 3"
    )


@pytest.mark.parametrize(
    ("hidden", "message"),
    [
        (10**6, "{weights}: weights do not match the model config — shape mismatch"),
        (10**12, "{config}: invalid model config (sizes too large to build: "),
    ],
)
def test_a_config_claiming_sizes_its_weights_lack_is_refused_before_it_is_allocated(
    tmp_path, hidden: int, message: str
) -> None:
    """config.json's sizes are checked against the weights on a storage-less skeleton: a model of
    ``hidden`` 10**6 (terabytes) was allocated first, torch's "can't allocate memory" traceback (and
    one of gigabytes was allocated, then refused); 10**12 overflows even the skeleton's sizes."""
    path = save_checkpoint(tmp_path / "ckpt", _model())
    doc = json.loads((path / "config.json").read_text())
    doc["model"].update(hidden=hidden, head_dim=0, ffn_dim=0, layers=[])
    (path / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    expected = message.format(weights=path / "model.safetensors", config=path / "config.json")
    assert str(e.value).startswith(expected)


@pytest.mark.parametrize(
    ("recorded", "given", "conflicts"),
    [
        # TU, OGB and CSL read the same graphs at every size preset: no conflict (the default 'small' was
        # refused for a checkpoint trained with --size full, though both read the very same split)
        ({"name": "tu:NCI1", "size": "full", "seed": 0}, ("tu:NCI1", "small", 0), []),
        ({"name": "ogb:ogbg_molbace", "size": "full", "seed": 0}, ("ogb:ogbg_molbace", "small", 3), []),
        ({"name": "csl", "size": "full", "seed": 1}, ("csl", "small", 1), []),
        ({"name": "molhiv", "size": "full", "seed": 0}, ("molhiv", "full", 5), []),  # its split is shipped
        # where they pick the graphs, size and seed still conflict
        ({"name": "tu:NCI1", "size": "full", "seed": 0}, ("tu:NCI1", "full", 1), [("seed", 0, 1)]),
        ({"name": "molhiv", "size": "full", "seed": 0}, ("molhiv", "small", 0), [("size", "full", "small")]),
        (
            {"name": "cluster", "size": "small", "seed": 0},
            ("cluster", "full", 2),
            [("size", "small", "full"), ("seed", 0, 2)],
        ),
    ],
)
def test_data_spec_conflicts_only_where_the_dataset_reads_them(recorded, given, conflicts) -> None:
    from gtcompress.checkpoint_data import data_spec_conflicts
    from gtcompress.train.recipe import DataSpec

    name, size, seed = given
    assert data_spec_conflicts({"dataset": recorded}, DataSpec(name, size=size, seed=seed)) == conflicts
