"""The pipeline started from a given trained checkpoint: its dataset, split and content key."""

import pytest

from gtcompress.errors import ConfigError
from gtcompress.pipeline import load_config, run_pipeline

#: every pipeline of this module caches in a folder of its own (tests/cli/conftest.py)
pytestmark = pytest.mark.usefixtures("module_cache")


@pytest.fixture(scope="module")
def given(tmp_path_factory):
    """Untrained GT checkpoints on CLUSTER (12,6,6 graphs, split seed 3): ``dense``; ``teddy`` (its
    inputs TEDDY-sparsified); ``nodata`` (no dataset recorded, two outputs where CLUSTER has six)."""
    import dataclasses

    import torch

    from gtcompress.checkpoint import save_checkpoint
    from gtcompress.models import ModelConfig, build_model
    from gtcompress.train.recipe import DataSpec

    root = tmp_path_factory.mktemp("given")
    spec = DataSpec("cluster", size="12,6,6", seed=3)
    info = spec.load().info
    torch.manual_seed(0)
    kw = {"hidden": 16, "num_layers": 1, "heads": 2, "pe": {}}
    model = build_model(ModelConfig.for_dataset("gt", info, **kw)).eval()
    meta = {"dataset": {**spec.to_dict(), "info": info.to_dict()}}
    save_checkpoint(root / "dense", model, meta)
    save_checkpoint(root / "teddy", model, {**meta, "teddy": {"edges": 0.3, "per_graph": True}})
    other = build_model(ModelConfig.for_dataset("gt", dataclasses.replace(info, out_dim=2), **kw)).eval()
    save_checkpoint(root / "nodata", other, {})
    return root


def test_a_given_checkpoint_brings_its_dataset_and_split(given) -> None:
    """gtc pipeline --checkpoint: the data section is the checkpoint's (a MUTAG model trained on
    split seed 3 was measured on seed 0's split, its test graphs partly its training graphs)."""
    from cli.pipeline import _with_checkpoint_data

    ck = given / "dense"
    cfg = _with_checkpoint_data(None, [f"train.checkpoint={ck}"])
    assert cfg["data"] == {"name": "cluster", "root": None, "size": "12,6,6", "seed": 3}
    cfg = _with_checkpoint_data(None, [f"train.checkpoint={ck}", "data.seed=3", "data.root=/elsewhere"])
    assert cfg["data"] == {"name": "cluster", "root": "/elsewhere", "size": "12,6,6", "seed": 3}


@pytest.mark.parametrize(
    ("setting", "message"), [("data.seed=0", "data.seed 0"), ("data.name=pattern", "data.name 'pattern'")]
)
def test_a_setting_that_contradicts_the_given_checkpoint_is_refused(given, setting: str, message: str) -> None:
    from cli.pipeline import _with_checkpoint_data

    ck = given / "dense"
    key = setting.split("=")[0].split(".")[1]
    was = {"seed": "3", "name": "'cluster'"}[key]
    with pytest.raises(ConfigError) as e:
        _with_checkpoint_data(None, [f"train.checkpoint={ck}", setting])
    assert str(e.value) == (
        f"{message} (from --data, --set or --config) conflicts with the dataset of checkpoint {ck} "
        f"(config.json dataset.{key} {was}); the model is measured on the dataset and split it was trained on: "
        f"leave data.{key} out to use the checkpoint's"
    )


def test_gtc_pipeline_with_a_contradicting_data_option_is_one_line(given) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    res = CliRunner().invoke(app, ["pipeline", "--checkpoint", str(given / "dense"), "--data", "pattern"])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1, res.output
    assert res.stderr.startswith("error: data.name 'pattern' (from --data, --set or --config) conflicts with")


def test_run_pipeline_refuses_data_other_than_the_given_checkpoints(given, tmp_path) -> None:
    """The library does not guess which setting the caller meant: a mismatch fails before any stage."""
    ck = given / "dense"
    with pytest.raises(ConfigError) as e:
        run_pipeline(load_config(None, [f"train.checkpoint={ck}"]), tmp_path / "run", log=lambda _: None)
    assert str(e.value) == (
        f"data.size 'small' conflicts with the dataset of train.checkpoint {ck} (config.json dataset.size "
        "'12,6,6'); set data to the dataset and split the checkpoint was trained on"
    )
    assert not (tmp_path / "run").exists()  # the run made it, and leaves no empty directory behind


def test_run_pipeline_refuses_a_teddy_checkpoint(given, tmp_path) -> None:
    ck = given / "teddy"
    cfg = load_config(None, [f"train.checkpoint={ck}", "data.size=12,6,6", "data.seed=3"])
    with pytest.raises(ConfigError) as e:
        run_pipeline(cfg, tmp_path / "run", log=lambda _: None)
    assert str(e.value) == (
        f"train.checkpoint {ck}: a TEDDY-sparsified model (config.json teddy); the pipeline starts from a dense "
        "checkpoint, give the one it was made from"
    )
    assert not (tmp_path / "run").exists()


def test_a_refused_run_keeps_a_directory_it_did_not_make(given, tmp_path) -> None:
    (out := tmp_path / "run" / "mine").mkdir(parents=True)
    cfg = load_config(None, [f"train.checkpoint={given / 'teddy'}", "data.size=12,6,6", "data.seed=3"])
    with pytest.raises(ConfigError):
        run_pipeline(cfg, out.parent, log=lambda _: None)
    assert out.is_dir()


def test_a_given_checkpoint_without_a_dataset_must_fit_the_configured_one(given, tmp_path) -> None:
    """Nothing recorded to compare: the configured dataset's inputs and outputs are checked against
    the model (it was a ValueError traceback from the first stage that used the data)."""
    ck = given / "nodata"
    cfg = load_config(None, [f"train.checkpoint={ck}", "data.size=12,6,6"])
    with pytest.raises(ConfigError) as e:
        run_pipeline(cfg, tmp_path / "run", log=lambda _: None)
    assert str(e.value) == (
        f"data.name 'cluster' does not fit train.checkpoint {ck}: outputs (out_dim): the model takes 2, CLUSTER has 6"
    )
    assert not (tmp_path / "run").exists()


def test_a_given_checkpoint_is_keyed_by_its_content(given, tmp_path) -> None:
    """The key held the directory's mtime, which stays when its files are overwritten in place (or
    copied with cp -a): a run on another model at the same path reused every cached stage."""
    import os
    import shutil

    from gtcompress.pipeline.model_stages import _content_digest

    ck = tmp_path / "ck"
    shutil.copytree(given / "dense", ck)
    before, stamp = _content_digest(ck), os.stat(ck).st_mtime_ns
    for f in (given / "nodata").iterdir():
        shutil.copyfile(f, ck / f.name)
    os.utime(ck, ns=(stamp, stamp))
    assert os.stat(ck).st_mtime_ns == stamp and _content_digest(ck) != before


def test_a_given_model_of_pygs_tu_one_hots_reads_them_in_every_stage(tmp_path) -> None:
    """A model trained on PyG's TUDataset (float one-hots: 7 node and 4 edge columns on MUTAG), which
    ``gtc eval`` and ``gtc prune`` read the TU files for as PyG lays them out, was refused by the pipeline:
    "data.name 'tu:MUTAG' does not fit train.checkpoint ...: node features: the model takes float, 7 columns,
    MUTAG has categorical, cardinalities [7]". Its stages, and the evaluation of its ONNX files, now get
    that layout (one dataset, loaded once)."""
    import os
    from pathlib import Path

    import torch

    from exporters.onnx import export_onnx
    from gtcompress.checkpoint import load_checkpoint, save_checkpoint
    from gtcompress.data.base import FeatureSpec
    from gtcompress.models import ModelConfig, build_model
    from gtcompress.pipeline.cache import StageCache
    from gtcompress.pipeline.context import RunContext
    from gtcompress.pipeline.model_stages import dense_models

    env = os.environ.get("GTCOMPRESS_DATA")
    tu = (Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data") / "TU"
    if not (tu / "MUTAG").is_dir():
        pytest.skip(f"real TU data not found at {tu} (set GTCOMPRESS_DATA)")
    node, edge = FeatureSpec("float", 7), FeatureSpec("float", 4)
    torch.manual_seed(0)
    cfg = ModelConfig(arch="gps", node_features=node, edge_features=edge, out_dim=2, hidden=16, heads=2,
                      num_layers=1, task_level="graph", readout="max", pe={})  # fmt: skip
    save_checkpoint(tmp_path / "ck", build_model(cfg).eval(), {})
    config = load_config(None, [f"train.checkpoint={tmp_path / 'ck'}", "data.name=tu:MUTAG", f"data.root={tu}"])
    ctx = RunContext(config, tmp_path / "run", StageCache(tmp_path / "run", lambda _: None), "data")
    (dense,) = dense_models(ctx)
    model, _ = load_checkpoint(dense.ckpt)
    ds = ctx.dataset_for(model.config)
    assert (ds.info.node_features, ds.info.edge_features) == (node, edge)
    assert ds["train"][0].x.dtype == torch.float32 and set(ds["train"][0].x.sum(1).tolist()) == {1.0}
    res = export_onnx(model, tmp_path / "ck.onnx", "dense", verify=False)
    assert ctx.dataset_of_file(res.path) is ds


def test_a_given_model_of_neither_tu_layouts_width_names_the_checkpoint(tmp_path) -> None:
    """The TU loader refuses a model whose float width is neither layout's, naming both widths; the
    pipeline says which checkpoint, as it does for any other misfit."""
    import os
    from pathlib import Path

    from gtcompress.checkpoint import save_checkpoint
    from gtcompress.data.base import FeatureSpec
    from gtcompress.models import ModelConfig, build_model

    env = os.environ.get("GTCOMPRESS_DATA")
    tu = (Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data") / "TU"
    if not (tu / "MUTAG").is_dir():
        pytest.skip(f"real TU data not found at {tu} (set GTCOMPRESS_DATA)")
    cfg = ModelConfig(arch="gt", node_features=FeatureSpec("float", 9), out_dim=2, hidden=8, heads=1, num_layers=1)
    save_checkpoint(ck := tmp_path / "ck", build_model(cfg).eval(), {})
    config = load_config(None, [f"train.checkpoint={ck}", "data.name=tu:MUTAG", f"data.root={tu}"])
    with pytest.raises(ConfigError) as e:
        run_pipeline(config, tmp_path / "run", log=lambda _: None)
    assert str(e.value) == (
        f"data.name 'tu:MUTAG' does not fit train.checkpoint {ck}: tu:MUTAG node features: the model takes float, "
        "9 columns; MUTAG gives categorical, cardinalities [7] (our layout) or float, 7 columns (PyG's TUDataset: "
        "one-hot labels, cardinalities [7])"
    )
