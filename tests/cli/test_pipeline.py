"""End to end: the pipeline on a tiny config, its artifacts, resumption and interruption."""

import json
import math
import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from exporters.onnx import read_metadata
from gtcompress.errors import ConfigError
from gtcompress.pipeline import PipelineConfig, load_config, run_pipeline
from gtcompress.pipeline import run as pipeline

TINY = [
    "data.size=40,12,12",
    "train.archs=[gt]",
    "train.hidden=16",
    "train.layers=2",
    "train.heads=2",
    "train.epochs=1",
    "sparsify.epochs=1",
    "prune.budgets=[0.5]",
    "prune.epochs=1",
    "prune.finetune_epochs=1",
    "export.lowerings=[auto, plugin]",
    "export.verify_batches=2",
    "profile.batches=2",
    "profile.repeat=1",
    "profile.batch_graphs=6",
    "profile.graph_sizes=[16, 32]",
    "profile.sweep_iterations=2",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import os

    root = tmp_path_factory.mktemp("pipe")
    os.environ["GTCOMPRESS_CACHE"] = str(root / "cache")
    out = root / "run"
    report = run_pipeline(load_config(None, TINY), out, log=lambda _: None)
    return out, report


def test_every_artifact_exists_and_is_consistent(run) -> None:
    out, report = run
    assert json.loads((out / "report.json").read_text())["rows"] == json.loads(json.dumps(report["rows"]))
    assert (out / "report.md").read_text().startswith("# gtcompress pipeline report")
    assert (out / "pareto.png").stat().st_size > 1000
    prof = json.loads((out / "profile" / "report.json").read_text())
    assert [m["name"] for m in prof["models"]] == report["profile"]["models"]
    assert "gt-dense" in report["profile"]["models"] and len(report["profile"]["models"]) == 2
    for png in ("latency_vs_size.png", "op_breakdown.png"):
        assert (out / "profile" / png).stat().st_size > 1000
    models = {r["model"] for r in report["rows"]}
    assert models == {"gt-dense", "gt-dense-ft", "gt-teddy", "gt-gtsp-0.5", "gt-random-0.5"}
    # the dense-ft control: the dense model with the compressed models' extra epochs; deltas against it
    control = next(r for r in report["rows"] if r["model"] == "gt-dense-ft")
    assert control["method"] == "dense-ft" and control["delta_vs_dense_ft"] == 0.0
    for r in report["rows"]:
        assert r["delta_vs_dense_ft"] == pytest.approx(r["test"] - control["test"])
    ft_meta = json.loads(read_metadata(out / control["file"])["compression"])
    assert ft_meta["method"] == "dense-ft" and ft_meta["epochs_run"] == 2  # prune.epochs + finetune_epochs
    assert "| model | lowering | test | Δ vs dense-ft | Δ vs dense |" in (out / "report.md").read_text()
    for r in report["rows"]:
        path = out / r["file"]
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
        spec = json.loads(read_metadata(path)["input_spec"])
        assert spec["lowering"] == r["lowering"]
        assert r["max_abs_err"] <= 1e-4
        assert 0 <= r["test"] <= 100 and r["latency_ms_p50"] > 0
    teddy = next(r for r in report["rows"] if r["model"] == "gt-teddy")
    assert json.loads(read_metadata(out / teddy["file"])["teddy"])["edges"] == 0.3
    pruned = next(r for r in report["rows"] if r["model"] == "gt-gtsp-0.5")
    comp = json.loads(read_metadata(out / pruned["file"])["compression"])
    assert comp["method"] == "gtsp" and abs(comp["cost"]["flops_ratio"] - 0.5) <= 0.5 * 0.03 + 1e-9
    assert report["triton"] is not None
    assert (Path(report["triton"]["repository"]) / report["triton"]["model"] / "config.pbtxt").is_file()


def test_compressed_checkpoints_record_their_own_metrics(run) -> None:
    """The stages saved the dense parent's meta with the report added, so ``gtc info`` on a pruned
    checkpoint showed the dense model's params, val and test as its recorded metrics."""
    from gtcompress.checkpoint import load_checkpoint

    out, _ = run
    for name in ("gt-dense-ft", "gt-teddy", "gt-gtsp-0.5", "gt-random-0.5"):
        model, meta = load_checkpoint(out / "models" / name)
        m, rep = meta["metrics"], meta["compression"]
        assert m["params"] == sum(p.numel() for p in model.parameters()), name
        after = rep["metric"]["after"] if "cost" in rep else rep  # dense-ft's report holds val/test itself
        assert (m["val"], m["test"]) == (after["val"], after["test"]), name


def test_report_metric_matches_the_onnx_artifact(run) -> None:
    out, report = run
    from gtcompress.train.recipe import DataSpec

    row = next(r for r in report["rows"] if r["model"] == "gt-gtsp-0.5")
    spec = json.loads(read_metadata(out / row["file"])["input_spec"])
    ds = DataSpec("cluster", None, "40,12,12", 0).load(spec["pe"])
    again = pipeline.evaluate_onnx(out / row["file"], ds, report["config"]["profile"], None)
    assert again["test"] == pytest.approx(row["test"], abs=1e-6)


def test_rerun_skips_every_stage(run) -> None:
    out, _ = run
    before = {p: p.stat().st_mtime_ns for p in (out / "onnx").iterdir()}
    logs: list[str] = []
    run_pipeline(load_config(None, TINY), out, log=logs.append)
    ran = [line for line in logs if line.startswith("▶")]
    assert ran == []
    assert before == {p: p.stat().st_mtime_ns for p in (out / "onnx").iterdir()}


def test_a_run_made_by_other_code_is_redone(run, monkeypatch) -> None:
    """After an upgrade (or a changed default) the cached models are stale: training starts over."""
    out, _ = run
    import gtcompress.train.recipe as recipe

    class Retrained(Exception):
        pass

    def fit(*args, **kwargs):
        raise Retrained

    monkeypatch.setattr(pipeline, "code_fingerprint", lambda: "other code")
    monkeypatch.setattr(recipe, "fit", fit)
    logs: list[str] = []
    with pytest.raises(Retrained):
        run_pipeline(load_config(None, TINY), out, log=logs.append)
    assert [line for line in logs if line.startswith("▶")] == ["▶ train:gt"]


def test_interrupted_stage_leaves_nothing_half_written_and_resumes(run, monkeypatch) -> None:
    out, _ = run
    cfg = load_config(
        None, [*TINY, "prune.budgets=[0.6]", "prune.axes=tokens,heads,layers,ffn", "prune.random_baseline=false"]
    )
    import exporters.onnx as onnx_mod

    real = onnx_mod.onnx.save

    def crash(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt  # killed after writing the temp file, before the rename

    monkeypatch.setattr(onnx_mod.onnx, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, out, log=lambda _: None)
    leftovers = [p.name for p in (out / "onnx").iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []
    assert not (out / "onnx" / "gt-gtsp-0.6-auto.onnx").exists()
    monkeypatch.setattr(onnx_mod.onnx, "save", real)
    logs: list[str] = []
    report = run_pipeline(cfg, out, log=logs.append)
    ran = {line.split()[1] for line in logs if line.startswith("▶")}
    assert "prune:gt:gtsp:0.6" not in ran  # finished before the interruption: not redone
    assert "export:gt-gtsp-0.6:auto" in ran
    assert any(r["model"] == "gt-gtsp-0.6" for r in report["rows"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["prune.budget=0.5"], "unknown key prune.budget"),
        (["nope.x=1"], "unknown section 'nope'"),
        (["prune"], "expected SECTION.KEY=VALUE"),
        (["train.epochs=-3"], "train.epochs is -3; expected an integer >= 1$"),
        (["train.epochs=2.5"], "train.epochs is 2.5; expected an integer >= 1$"),
        (["train.epochs=true"], "train.epochs is True; expected an integer >= 1$"),
        (["sparsify.edges=1.5"], re.escape("sparsify.edges is 1.5; expected a number in [0, 1)")),
        (["control.dense_ft=maybe"], "control.dense_ft is 'maybe'; expected true or false$"),
        (["train.checkpoint=3"], "train.checkpoint is 3; expected a path or null$"),
        (["data.size=3"], "data.size is 3; expected a string$"),
        (["data.size=big"], "data.size: size must be 'small', 'full' or 'TRAIN,VAL,TEST' graph counts, got 'big'"),
        (["prune.axes=heads,bogus"], "prune.axes: unknown axis 'bogus'"),
        (
            ["prune.budgets=[0.5,1.5]"],
            re.escape(
                "prune.budgets is [0.5, 1.5]; expected a non-empty list of numbers, each in (0, 1) "
                "(the fraction of the dense model's FLOPs kept), e.g. prune.budgets=[0.5, 0.3, 0.2]"
            ),
        ),
        # the library's range, checked when read: 1 failed minutes later naming --target-flops
        (
            ["prune.budgets=[1, 0.5]"],
            re.escape(
                "--set prune.budgets=[1, 0.5]: prune.budgets is [1, 0.5]; expected a non-empty list of numbers, "
                "each in (0, 1) (the fraction of the dense model's FLOPs kept), e.g. prune.budgets=[0.5, 0.3, 0.2]"
            )
            + "$",
        ),
        # the size sweep needs 2 iterations: 1 failed only at the end of the run
        (["profile.sweep_iterations=1"], "profile.sweep_iterations is 1; expected an integer >= 2$"),
        # numpy refuses a negative seed with a traceback when the data is generated
        (["data.seed=-1"], "data.seed is -1; expected an integer >= 0$"),
        (["prune.budgets=0.5"], "prune.budgets is 0.5; expected a non-empty list of numbers"),
        (["prune.budgets=[]"], re.escape("prune.budgets is []; expected a non-empty list of numbers")),
        (["train.archs=[gt,foo]"], "expected a non-empty list of strings, each one of gt, gps, graphormer"),
        (["export.lowerings=[auto,foo]"], "each one of auto, scatter, padded, dense, plugin"),
        (["profile.graph_sizes=[1,4]"], "expected a non-empty list of integers, each >= 2"),
        (["prune.token_keep=1.5"], re.escape("prune.token_keep is 1.5; expected a number in (0, 1]") + "$"),
        (["prune.token_keep=most"], re.escape("prune.token_keep is 'most'; expected a number in (0, 1]") + "$"),
    ],
)
def test_config_errors(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_config_values_are_typed_when_read(tmp_path) -> None:
    """An integer where a number is due becomes that number; a file's values are checked as --set's."""
    cfg = load_config(None, ["train.lr=1", "profile.max_seconds=5", "prune.budgets=[0.5]", "train.checkpoint=null"])
    assert cfg["train"]["lr"] == 1.0 and isinstance(cfg["train"]["lr"], float)
    assert cfg["profile"]["max_seconds"] == 5.0 and isinstance(cfg["profile"]["max_seconds"], float)
    assert cfg["prune"]["budgets"] == [0.5] and all(isinstance(b, float) for b in cfg["prune"]["budgets"])
    (tmp_path / "c.yaml").write_text("profile: {threads: 0}\n")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(tmp_path / 'c.yaml'))}: profile.threads is 0; expected"):
        load_config(tmp_path / "c.yaml", [])


def test_prune_token_keep_is_null_by_default_and_a_ratio_when_given(tmp_path) -> None:
    """Null leaves the tokens axis to auto; a ratio given may be taken back to null by a later layer."""
    assert load_config(None, [])["prune"]["token_keep"] is None
    (tmp_path / "c.yaml").write_text("prune: {token_keep: 0.5}\n")
    assert load_config(tmp_path / "c.yaml", [])["prune"]["token_keep"] == 0.5
    assert load_config(tmp_path / "c.yaml", ["prune.token_keep=null"])["prune"]["token_keep"] is None
    assert load_config(None, ["prune.token_keep=1"])["prune"]["token_keep"] == 1.0


def test_a_token_keep_the_axes_cannot_use_fails_before_any_stage(tmp_path) -> None:
    cfg = load_config(None, ["prune.token_keep=0.5", "prune.axes=heads,ffn"])
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "prune.token_keep 0.5 sets the tokens axis, which prune.axes heads,ffn does not name; "
            "add tokens to prune.axes, or set prune.token_keep to null"
        ),
    ):
        run_pipeline(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("token_keep", "tokens_pruned"), [(None, False), (0.5, True)])
def test_a_given_token_keep_prunes_tokens_as_gtc_prune_token_keep_does(token_keep, tokens_pruned, monkeypatch) -> None:
    """GT's auto axes leave tokens out; ``prune.token_keep`` given was silently ignored for it, where
    ``gtc prune --token-keep`` adds the tokens axis. The prune stage now passes it as that ratio."""
    import gtcompress.checkpoint
    import gtcompress.compress.prune
    from gtcompress.compress.prune_config import resolve_auto
    from gtcompress.data.base import FeatureSpec
    from gtcompress.models import ModelConfig, build_model
    from gtcompress.pipeline.context import ModelArtifact
    from gtcompress.pipeline.model_stages import _prune

    model = build_model(ModelConfig(arch="gt", node_features=FeatureSpec("float", 3), out_dim=2, hidden=16, heads=2))
    seen = []

    class Stop(Exception):
        pass

    def prune_model(m, data, cfg):
        seen.append(resolve_auto(cfg, m))
        raise Stop

    monkeypatch.setattr(gtcompress.checkpoint, "load_checkpoint", lambda path: (model, {}))
    monkeypatch.setattr(gtcompress.compress.prune, "prune_model", prune_model)

    class Context:
        config = load_config(None, [f"prune.token_keep={'null' if token_keep is None else token_keep}"])
        out = Path("unused")

        def stage(self, name, key, outputs, fn):
            return fn()

        def dataset(self, pe):
            return None

    with pytest.raises(Stop):
        _prune(Context(), ModelArtifact("gt-dense", Path("gt-dense"), "k", "gt", "dense", 1.0), 0.5, "gtsp")
    assert ("tokens" in seen[0].axes) is tokens_pruned
    assert seen[0].token_keep == (token_keep if tokens_pruned else 0.7)


def test_contradicting_settings_fail_before_any_stage(tmp_path) -> None:
    cfg = load_config(None, ["train.heads=3"])  # each key is fine on its own
    with pytest.raises(ConfigError, match=r"^train\.hidden 64 must be a multiple of train\.heads 3"):
        run_pipeline(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_known_section_that_is_not_a_mapping_is_named_as_such(tmp_path) -> None:
    """``prune: 0.5`` was reported as "unknown section 'prune'; expected one of ..., prune, ...";
    a section whose keys are all commented out (YAML null) changes nothing instead of being refused."""
    (tmp_path / "c.yaml").write_text("prune: 0.5\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "c.yaml", [])
    assert str(err.value) == (
        f"{tmp_path / 'c.yaml'}: section 'prune' is 0.5; expected a mapping of its keys "
        "(budgets, epochs, finetune_epochs, lr, axes, token_keep, random_baseline), e.g. prune: {budgets: ...}"
    )
    with pytest.raises(ConfigError, match=r"^overrides: section 'train' is \[1\]; expected a mapping"):
        PipelineConfig.default().with_overrides({"train": [1]})
    (tmp_path / "c.yaml").write_text("prune:\n#  budgets: [0.5]\ntrain: {epochs: 3}\n")
    cfg = load_config(tmp_path / "c.yaml", [])
    assert cfg["prune"] == PipelineConfig.default()["prune"] and cfg["train"]["epochs"] == 3
    (tmp_path / "c.yaml").write_text("nope: {x: 1}\n")
    with pytest.raises(ConfigError, match="unknown section 'nope'; expected one of data, train"):
        load_config(tmp_path / "c.yaml", [])


def test_toml_and_yaml_configs(tmp_path) -> None:
    (tmp_path / "c.toml").write_text('[prune]\nbudgets = [0.7]\n[data]\nsize = "small"\n')
    (tmp_path / "c.yaml").write_text("prune: {budgets: [0.7]}\n")
    for name in ("c.toml", "c.yaml"):
        assert load_config(tmp_path / name, [])["prune"]["budgets"] == [0.7]
    assert np.isclose(load_config(tmp_path / "c.yaml", ["prune.budgets=[0.2]"])["prune"]["budgets"][0], 0.2)


def test_unreachable_budget_is_skipped_with_a_note(run) -> None:
    out, _ = run
    report = run_pipeline(load_config(None, [*TINY, "prune.budgets=[0.5, 0.001]"]), out, log=lambda _: None)
    assert len(report["skipped"]) == 1 and report["skipped"][0].startswith("gt at 0.001 of the FLOPs")
    models = {r["model"] for r in report["rows"]}
    assert {"gt-gtsp-0.5", "gt-random-0.5"} <= models  # the baseline moves to the smallest reached budget
    assert not any("0.001" in m for m in models)
    assert "Skipped: gt at 0.001 of the FLOPs" in (out / "report.md").read_text()


def test_triton_repository_holds_exactly_the_model_the_report_names(run, tmp_path) -> None:
    """A second run that picked another model (or none, or had triton disabled) left the earlier
    model in ``triton/``, where ``gtc tritonserver`` would serve it though the report named one."""
    import shutil

    from gtcompress.pipeline.cache import StageCache
    from gtcompress.pipeline.context import RunContext
    from gtcompress.pipeline.deploy_stages import triton_stage

    out, _ = run
    named = json.loads((out / "report.json").read_text())["triton"]["model"]  # the latest run's, on disk
    assert sorted(p.name for p in (out / "triton").iterdir()) == [named]
    (tmp_path / "onnx").mkdir()
    for name in ("gt-dense-auto.onnx", "gt-gtsp-0.5-auto.onnx"):
        shutil.copy(out / "onnx" / name, tmp_path / "onnx" / name)

    def stage(fast: str, dense_drop: float = 0.0, **triton) -> dict:
        rows = [
            {"model": m, "file": f"onnx/{m}-auto.onnx", "lowering": "auto", "metric_drop": drop}
            | {"latency_ms_p50": 1.0 if m == fast else 2.0}
            for m, drop in (("gt-dense", dense_drop), ("gt-gtsp-0.5", 0.5))
        ]
        cfg = load_config(None, [f"triton.{k}={v}" for k, v in triton.items()])
        rep = {"rows": rows}
        triton_stage(RunContext(cfg, tmp_path, StageCache(tmp_path, lambda _: None), "k"), rep)
        repo = tmp_path / "triton"
        held = sorted(p.name for p in repo.iterdir()) if repo.exists() else []
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp folder left
        return {"held": held, "triton": rep.get("triton", "absent")}

    assert stage("gt-dense")["held"] == ["gt-dense"]
    second = stage("gt-gtsp-0.5")
    assert second["held"] == ["gt-gtsp-0_5"] and second["triton"]["model"] == "gt-gtsp-0_5"
    assert second["triton"]["repository"] == str(tmp_path / "triton")
    assert stage("gt-gtsp-0.5", max_metric_drop=0.1)["held"] == ["gt-dense"]  # gtsp no longer qualifies
    assert stage("gt-dense", max_metric_drop=0.1)["held"] == ["gt-dense"]  # cached: the same repository
    assert stage("gt-dense", dense_drop=0.5, max_metric_drop=0.1) == {"held": [], "triton": None}  # none qualifies
    assert stage("gt-gtsp-0.5")["held"] == ["gt-gtsp-0_5"]
    assert stage("gt-gtsp-0.5", enabled="false") == {"held": [], "triton": "absent"}
    # a repository that other code left with an extra model is rebuilt, though the stage's key matches
    assert stage("gt-dense")["held"] == ["gt-dense"]
    (tmp_path / "triton" / "stale").mkdir()
    assert stage("gt-dense")["held"] == ["gt-dense"]


@pytest.fixture(scope="module")
def given(tmp_path_factory):
    """Untrained GT checkpoints on CLUSTER (12,6,6 graphs, split seed 3): ``dense``; ``teddy`` (its
    inputs TEDDY-sparsified); ``nodata`` (no dataset recorded, two outputs where CLUSTER has six)."""
    import dataclasses
    import os

    import torch

    from gtcompress.checkpoint import save_checkpoint
    from gtcompress.models import ModelConfig, build_model
    from gtcompress.train.recipe import DataSpec

    root = tmp_path_factory.mktemp("given")
    os.environ["GTCOMPRESS_CACHE"] = str(root / "cache")
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


def test_side_by_side_latency_includes_teddy(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """TEDDY ran once while the batches were built, outside the timer: a TEDDY model's latency,
    speed-up and serving pick counted the sparsification a server pays per request as free. Now each
    timed call sparsifies the union (the same edges as per graph) before the model runs."""
    from pathlib import Path

    import gtcompress.pipeline.measure as measure
    import gtcompress.preprocess.inputs as inputs_mod
    import gtcompress.preprocess.teddy as teddy_mod
    from gtcompress.data import load_dataset

    ds = load_dataset("cluster", size="4,2,6", seed=0, cache_dir=tmp_path)
    seen: dict[str, list[int]] = {"dense.onnx": [], "teddy.onnx": []}
    calls = []

    class Session:
        def __init__(self, path: Path) -> None:
            self.name = path.name

        def run(self, outputs: object, inputs: dict[str, int]) -> None:
            seen[self.name].append(inputs["edges"])

    sparsify = teddy_mod.teddy_sparsify
    monkeypatch.setattr(measure, "_ort_session", lambda path, threads: Session(path))
    monkeypatch.setattr(measure, "read_spec", lambda path: None)
    monkeypatch.setattr(inputs_mod, "build_inputs", lambda b, spec: {"edges": b.num_edges})
    monkeypatch.setattr(teddy_mod, "teddy_sparsify", lambda *a, **k: calls.append(1) or sparsify(*a, **k))
    pcfg = {"batch_graphs": 3, "batches": 2, "warmup": 1, "repeat": 2, "max_seconds": 60, "threads": 1}
    rows = measure.time_side_by_side(
        [(Path("dense.onnx"), ds, None), (Path("teddy.onnx"), ds, {"edges": 0.3, "per_graph": True})], pcfg
    )
    assert [r["timed_batches"] for r in rows] == [4, 4]  # 2 batches x 2 passes each
    assert len(calls) == 1 + 4  # the warm-up batch and every timed one
    dense, teddy = seen["dense.onnx"], seen["teddy.onnx"]
    assert all(t < d for t, d in zip(teddy, dense, strict=True))
    graphs = [g.to_numpy() for g in ds["test"][:3]]
    want = sum(sparsify(g, 0.3, True).num_edges for g in graphs)  # as evaluate_onnx sparsifies: per graph
    assert teddy[1] == want


def test_the_report_does_not_call_a_slower_model_the_fastest() -> None:
    """report.md named the largest speed-up over its own dense parent "fastest compressed model": a
    50 ms GPS model beside the 40 ms GT one the repository serves."""
    from pathlib import Path

    from gtcompress.pipeline.report import build_report, choose_for_serving, markdown

    def row(model: str, arch: str, method: str, p50: float) -> dict:
        test = 60.0 - 0.1 * (method != "dense")
        return {"model": model, "arch": arch, "method": method, "budget": None, "lowering": "dense",
                "file": f"{model}.onnx", "max_abs_err": 1e-5, "metric": "accuracy", "test": test, "file_mb": 1.0,
                "latency_ms_p50": p50, "latency_ms_mean": p50, "latency_ms_p90": p50, "prep_ms_p50": 1.0,
                "timed_batches": 8, "graphs_per_batch": 32, "threads": 1}  # fmt: skip

    rows = [row("gt-dense", "gt", "dense", 60.0), row("gt-gtsp-0.5", "gt", "gtsp", 40.0),
            row("gps-dense", "gps", "dense", 100.0), row("gps-gtsp-0.5", "gps", "gtsp", 50.0)]  # fmt: skip
    rep = build_report(rows, {"data": {"name": "CLUSTER", "size": "small"}}, "n/a", Path("/tmp/run"))
    assert choose_for_serving(rep, 1.0)["model"] == "gt-gtsp-0.5"
    text = markdown(rep)
    assert "Fastest" not in text
    assert (
        "Largest speed-up of a compressed model within 1 point of its dense parent: `gps-gtsp-0.5`, 2.00x lower "
        "latency (50.0 ms p50) at -0.10 points." in text
    )


def _mae_report(dense: float, tests: dict[str, float], metric: str = "mae") -> dict:
    """A report of ``metric`` rows: ``gt-dense`` at ``dense`` (60 ms) and compressed GT models, each faster."""
    from pathlib import Path

    from gtcompress.pipeline.report import build_report

    def row(model: str, method: str, test: float, p50: float) -> dict:
        return {"model": model, "arch": "gt", "method": method, "budget": 0.5, "lowering": "dense",
                "file": f"{model}.onnx", "max_abs_err": 1e-5, "metric": metric, "test": test, "file_mb": 1.0,
                "latency_ms_p50": p50, "latency_ms_mean": p50, "latency_ms_p90": p50, "prep_ms_p50": 1.0,
                "timed_batches": 8, "graphs_per_batch": 32, "threads": 1}  # fmt: skip

    rows = [row("gt-dense", "dense", dense, 60.0)]
    rows += [row(m, "gtsp", t, 30.0 - i) for i, (m, t) in enumerate(tests.items())]
    return build_report(rows, {"data": {"name": "ogb:ogbg_molesol", "size": "small"}}, "n/a", Path("/tmp/run"))


def test_an_mae_tolerance_is_relative_to_the_dense_models_mae() -> None:
    """max_metric_drop 1.0 was compared with the raw rise in MAE: a model with 2.8 times its dense
    parent's MAE (0.5 -> 1.4) was served and reported "within 1 point of its dense parent"."""
    from gtcompress.pipeline.report import choose_for_serving, markdown

    rep = _mae_report(0.5, {"gt-gtsp-0.5": 1.4})
    worse = rep["rows"][1]
    assert worse["metric_drop"] == pytest.approx(0.9) and worse["metric_drop_pct"] == pytest.approx(180.0)
    assert choose_for_serving(rep, 1.0)["model"] == "gt-dense"
    assert choose_for_serving(rep, 200.0)["model"] == "gt-gtsp-0.5"
    assert "No compressed model stayed within 1 % of its dense parent's MAE." in markdown(rep)

    rep = _mae_report(2.0, {"gt-gtsp-0.5": 2.01, "gt-gtsp-0.3": 1.9})  # +0.5 %: within; lower MAE: a gain
    assert [r["metric_drop_pct"] for r in rep["rows"][1:]] == pytest.approx([0.5, -5.0])
    assert choose_for_serving(rep, 1.0)["model"] == "gt-gtsp-0.3"
    assert choose_for_serving(rep, 0.0)["model"] == "gt-gtsp-0.3"
    assert (
        "Largest speed-up of a compressed model within 1 % of its dense parent's MAE: `gt-gtsp-0.3`, 2.07x lower "
        "latency (29.0 ms p50) at MAE 1.90, 5.0 % below its dense parent's." in markdown(rep)
    )


@pytest.mark.parametrize(("metric", "better"), [("mae", "lower"), ("accuracy", "higher")])
def test_the_pareto_plot_names_the_datasets_metric(metric: str, better: str, tmp_path, monkeypatch) -> None:
    """pareto.png was titled "Accuracy vs latency" over an MAE axis, where lower is better."""
    import matplotlib.pyplot as plt

    from gtcompress.pipeline.report import write_report

    figures: list = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (figures.append(fig), real_close(fig)))
    write_report(_mae_report(0.5, {"gt-gtsp-0.5": 0.6}, metric), tmp_path)
    assert (tmp_path / "pareto.png").stat().st_size > 1000
    (ax,) = figures[0].axes
    assert ax.get_title() == f"Test {metric} vs latency: what compression bought"
    assert ax.get_ylabel() == f"test {metric} ({better} is better, from the ONNX model)"


def test_an_undefined_test_metric_is_not_called_a_drop() -> None:
    """With a test split of one class every ROC-AUC is NaN: nothing can be served (NaN is within no
    tolerance), but report.md said "No compressed model stayed within 1 point of its dense parent"."""
    from gtcompress.pipeline.report import choose_for_serving, markdown

    rep = _mae_report(math.nan, {"gt-gtsp-0.5": math.nan}, "rocauc")
    assert choose_for_serving(rep, 1.0) is None
    text = markdown(rep)
    assert "No compressed model stayed" not in text
    assert (
        "The test rocauc is undefined (NaN) for `gt-dense`, `gt-gtsp-0.5`: ROC-AUC needs both classes among the "
        "test labels; a model without a defined metric, or whose dense parent has none, is never compared, picked "
        "or served." in text
    )


def test_latency_is_retimed_when_the_exported_files_change(tmp_path) -> None:
    """The latency and profile keys held only the models' keys: with export.lowerings reordered, the
    cached timings were zipped onto the new row order (the auto files given the plugin files'
    latencies); with a lowering changed, the old files' timings were reported for the new ones."""
    out = tmp_path / "run"
    first = run_pipeline(load_config(None, TINY), out, log=lambda _: None)
    logs: list[str] = []
    report = run_pipeline(load_config(None, [*TINY, "export.lowerings=[plugin, auto]"]), out, log=logs.append)
    ran = [line for line in logs if line.startswith("▶")]
    assert "▶ latency" in ran and not [r for r in ran if r.startswith(("▶ export", "▶ train", "▶ evaluate"))]
    for rep in (first, report):  # the fallback of the fused op is several times slower than auto's lowering
        p50 = {(r["model"], r["lowering"] == "plugin"): r["latency_ms_p50"] for r in rep["rows"]}
        both = {m for m, plugin in p50 if plugin and (m, False) in p50}
        assert both and all(p50[m, True] > p50[m, False] for m in both), p50


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


def test_a_stage_killed_inside_leaves_no_old_key_over_its_new_outputs(tmp_path) -> None:
    """The manifest was rewritten only after a stage: killed between writing its outputs and that,
    the previous run's entry vouched for the new outputs, and going back to the old settings reused them."""
    from gtcompress.pipeline.cache import StageCache

    out = tmp_path / "model.txt"
    cache = StageCache(tmp_path, log=lambda _: None)
    cache.stage("train", "key-seed-0", [out], lambda: out.write_text("seed 0") and {})

    def killed() -> dict:
        out.write_text("seed 1")
        raise KeyboardInterrupt  # stands in for the kill

    with pytest.raises(KeyboardInterrupt):
        cache.stage("train", "key-seed-1", [out], killed)
    reread = StageCache(tmp_path, log=lambda _: None)
    assert "train" not in reread.manifest
    ran = []
    reread.stage("train", "key-seed-0", [out], lambda: ran.append(1) or {})
    assert ran == [1]  # redone, not "seed 0" cached over seed 1's file


def test_a_dataset_changed_on_disk_is_a_new_dataset(tmp_path, monkeypatch) -> None:
    """The data key held the name, root, size and seed only: MUTAG with every label flipped reused the
    cached models and metrics; so did another GTCOMPRESS_DATA with root unset."""
    import os

    from gtcompress.pipeline.run import _data_key

    for d in ("a", "b"):
        (tmp_path / d / "TU" / "FAKE").mkdir(parents=True)
        (tmp_path / d / "TU" / "FAKE" / "FAKE_graph_labels.txt").write_text("1\n0\n")
    monkeypatch.setenv("GTCOMPRESS_DATA", str(tmp_path / "a"))
    cfg = load_config(None, ["data.name=tu:FAKE"])
    before = _data_key(cfg)
    assert _data_key(cfg) == before  # stable while nothing changes
    labels = tmp_path / "a" / "TU" / "FAKE" / "FAKE_graph_labels.txt"
    stamp = labels.stat().st_mtime_ns
    labels.write_text("0\n1\n")
    os.utime(labels, ns=(stamp + 1_000_000, stamp + 1_000_000))
    assert _data_key(cfg) != before
    changed = _data_key(cfg)
    monkeypatch.setenv("GTCOMPRESS_DATA", str(tmp_path / "b"))
    assert _data_key(cfg) != changed
    assert _data_key(load_config(None, ["data.name=cluster"])) == _data_key(load_config(None, ["data.name=cluster"]))


def test_a_second_run_into_the_same_folder_is_refused(tmp_path) -> None:
    """Two runs into one --out would interleave stage files under one manifest: while one holds the
    folder's lock, another is refused before any stage, and leaves the folder as it was."""
    from filelock import FileLock

    out = tmp_path / "run"
    out.mkdir()
    with FileLock(out / pipeline.LOCK_NAME, timeout=0), pytest.raises(ConfigError) as e:
        run_pipeline(load_config(None, TINY), out, log=lambda _: None)
    assert str(e.value) == (
        f"--out {out}: another `gtc pipeline` is running into this folder; wait for it to finish, or give another --out"
    )
    assert sorted(p.name for p in out.iterdir()) == [pipeline.LOCK_NAME]


def test_the_lock_of_a_finished_run_does_not_block_the_next(run) -> None:
    from filelock import FileLock

    out, _ = run
    assert (out / pipeline.LOCK_NAME).exists()
    with FileLock(out / pipeline.LOCK_NAME, timeout=0):  # free: a next run takes it
        pass


def test_an_out_that_is_a_file_is_refused(tmp_path) -> None:
    (out := tmp_path / "run").write_text("mine")
    with pytest.raises(ConfigError) as e:
        run_pipeline(load_config(None, TINY), out, log=lambda _: None)
    assert str(e.value) == f"--out {out}: is a file; the pipeline writes its run into a folder"
    assert out.read_text() == "mine"


def test_a_model_tensorrt_cannot_build_leaves_the_other_engines(monkeypatch, tmp_path) -> None:
    """One export TensorRT refuses (an operator it lacks) stopped the whole run; it is now a note in the
    report and the other engines are built."""
    from types import SimpleNamespace

    import exporters.tensorrt
    import trt_plugins.tensorrt_plugin
    from gtcompress.errors import ModelFileError
    from gtcompress.pipeline.cache import StageCache
    from gtcompress.pipeline.deploy_stages import tensorrt_stages

    def build(onnx_path: Path, plan: Path, *args: object, **kwargs: object) -> Path:
        if onnx_path.stem == "bad":
            raise ModelFileError(f"{onnx_path}: TensorRT's ONNX parser failed: no importer for op Foo")
        plan.write_bytes(b"engine")
        return plan

    monkeypatch.setattr(trt_plugins.tensorrt_plugin, "tensorrt_available", lambda: True)
    monkeypatch.setattr(exporters.tensorrt, "build_engine", build)
    logs: list[str] = []
    cache = StageCache(tmp_path, logs.append)
    ctx = SimpleNamespace(config={"tensorrt": {"enabled": True, "fp16": False}}, log=logs.append, stage=cache.stage)
    exported = [
        SimpleNamespace(path=tmp_path / f"{n}.onnx", key=n, requested="auto", model=SimpleNamespace(name=n))
        for n in ("bad", "good")
    ]
    note = tensorrt_stages(ctx, exported)  # type: ignore[arg-type]
    assert note == (
        f"built 1 of 2 engines; not built: bad.onnx ({tmp_path / 'bad.onnx'}: TensorRT's ONNX parser failed: "
        "no importer for op Foo)"
    )
    assert (tmp_path / "good.plan").read_bytes() == b"engine" and not (tmp_path / "bad.plan").exists()
    assert "tensorrt:bad:auto" not in cache.manifest and "tensorrt:good:auto" in cache.manifest
