"""The pipeline's config: defaults, typed keys, files and overrides, settings that contradict each other."""

import re
from pathlib import Path

import numpy as np
import pytest

from gtcompress.errors import ConfigError
from gtcompress.pipeline import PipelineConfig, load_config, run_pipeline


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["prune.budget=0.5"], "unknown key prune.budget"),
        (["nope.x=1"], "unknown section 'nope'"),
        (["prune"], "expected SECTION.KEY=VALUE"),
        # a value YAML cannot parse (a bracket left open) raised yaml's ParserError, a traceback from gtc pipeline
        (
            ["prune.budgets=[0.5"],
            re.escape(
                "--set 'prune.budgets=[0.5': the value '[0.5' is not valid YAML (expected ',' or ']', but got "
                "'<stream end>'); e.g. prune.budgets=[0.5,0.3], quoted for the shell"
            )
            + "$",
        ),
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
        # checked when read: it failed only when the train stage loaded the data, after "▶ train:gt"
        (
            ["data.name=Clustr"],
            re.escape("--set data.name=Clustr: data.name: unknown dataset 'Clustr'; valid names: pattern, cluster"),
        ),
        (["data.name='ogb:'"], re.escape("data.name: dataset name 'ogb:' needs a name after 'ogb:'") + "$"),
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

        def dataset_for(self, config):
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


def test_train_readout_is_how_the_trained_graph_level_model_pools(tmp_path) -> None:
    """Every model the pipeline trained pooled by the mean: ``train.readout`` chooses, as ``gtc train
    --readout`` does; its choices are the library's."""
    from gtcompress.checkpoint import load_checkpoint
    from gtcompress.models.config import READOUTS
    from gtcompress.pipeline.cache import StageCache
    from gtcompress.pipeline.config import _CHOICES
    from gtcompress.pipeline.context import RunContext
    from gtcompress.pipeline.model_stages import dense_models

    assert _CHOICES["train.readout"] == READOUTS
    with pytest.raises(ConfigError, match=re.escape("train.readout is 'min'; expected one of mean, sum, max") + "$"):
        load_config(None, ["train.readout=min"])
    sets = ["data.name=csl", "train.archs=[gt]", "train.hidden=8", "train.layers=1"]
    config = load_config(None, [*sets, "train.heads=1", "train.epochs=1", "train.readout=max"])
    ctx = RunContext(config, tmp_path / "run", StageCache(tmp_path / "run", lambda _: None), "data")
    (dense,) = dense_models(ctx)
    assert load_checkpoint(dense.ckpt)[0].config.readout == "max"
