"""The pipeline's config: defaults, typed keys, files and overrides, settings that contradict each other."""

import re
from pathlib import Path

import numpy as np
import pytest

from gtcompress.errors import ConfigError, GTCompressError
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
        (  # the name after tu: left out: YAML's mapping, not our bug
            ["data.name=tu:"],
            re.escape(
                "data.name is {'tu': None}; expected a string (YAML reads a colon followed by a space or the end of "
                "the value as a mapping: quote the value)"
            )
            + "$",
        ),
        (
            ["train.checkpoint=runs: gt"],
            re.escape("train.checkpoint is {'runs': 'gt'}; expected a path or null (YAML reads a colon") + ".*$",
        ),
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
        # an entry given twice ran twice: duplicate report rows, gt-dense "sped up" against itself
        (["train.archs=[gt,gps,gt]"], re.escape("train.archs: 'gt' given more than once in ['gt', 'gps', 'gt']") + "$"),
        (["profile.graph_sizes=[32,32]"], re.escape("profile.graph_sizes: 32 given more than once in [32, 32]") + "$"),
        (["prune.budgets=[0.5,0.50]"], re.escape("prune.budgets: 0.5 given more than once in [0.5, 0.5]") + "$"),
        # torch.manual_seed overflowed on 2**64 after minutes of work, and -1 was taken
        (["train.seed=-1"], re.escape("train.seed is -1; expected an integer from 0 to 9223372036854775807")),
        (["train.seed=9223372036854775808"], "train.seed is 9223372036854775808; expected an integer from 0 to"),
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


def test_a_number_in_exponent_form_is_a_number(tmp_path) -> None:
    """YAML 1.1 reads 1e-3 as a string (it wants 1.0e-3), and ``--set train.lr=1e-3`` was refused with
    "expected a number"; an integer key still takes integers only."""
    cfg = load_config(None, ["train.lr=1e-3", "prune.budgets=[5E-1, 3e-1]", "profile.max_seconds=1.5e+1"])
    assert cfg["train"]["lr"] == 0.001 and cfg["prune"]["budgets"] == [0.5, 0.3]
    assert cfg["profile"]["max_seconds"] == 15.0
    (tmp_path / "c.yaml").write_text("prune: {lr: 2e-4}\n")
    assert load_config(tmp_path / "c.yaml", [])["prune"]["lr"] == 0.0002
    with pytest.raises(ConfigError, match=re.escape("train.lr is '1e-3x'; expected a number")):
        load_config(None, ["train.lr=1e-3x"])
    with pytest.raises(ConfigError, match=re.escape("train.epochs is '1e3'; expected an integer >= 1")):
        load_config(None, ["train.epochs=1e3"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prune:\n  budgets: [0.5]\nprune:\n  epochs: 1\n", "line 3: section 'prune' given twice (first at line 1)"),
        ("prune:\n  budgets: [0.5]\n  budgets: [0.3]\n", "line 3: key prune.budgets given twice (first at line 2)"),
        ("train: {epochs: 3, epochs: 4}\n", "line 1: key train.epochs given twice (first at line 1)"),
    ],
)
def test_a_yaml_key_given_twice_is_refused(tmp_path, text, message) -> None:
    """YAML keeps the last of two equal keys: the first ``prune:`` section's budgets were lost without
    a word and the run did the default three."""
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "c.yaml", [])
    assert str(err.value) == f"{tmp_path / 'c.yaml'}, {message}; give it once"


def test_the_seed_range_is_the_training_loops() -> None:
    """``train.seed``, the --seed options and the training loop take the same seeds (no torch in the
    config module, nor in the CLI's start-up: each has the number written out)."""
    import torch

    from cli.library_values import MAX_SEED as CLI_MAX_SEED
    from gtcompress.pipeline.config import _MAX_SEED
    from gtcompress.train.loop import MAX_SEED, seed_everything

    assert _MAX_SEED == CLI_MAX_SEED == MAX_SEED == 2**63 - 1
    torch.manual_seed(MAX_SEED + 12345)  # the largest offset a stage adds (prune_run.STUDENT_SEED) still fits
    seed_everything(MAX_SEED)
    with pytest.raises(ConfigError, match=r"^seed 9223372036854775808: expected an integer from 0 to"):
        seed_everything(MAX_SEED + 1)


def test_a_refused_run_removes_the_parents_of_out_it_made_and_no_others(tmp_path) -> None:
    """``--out a/b/run`` refused inside the run left ``a/b`` behind: the run's folder was removed, the
    parents ``mkdir(parents=True)`` made for it were not. A parent that existed before stays."""
    (tmp_path / "keep").mkdir()
    out = tmp_path / "keep" / "a" / "b" / "run"
    cfg = load_config(None, ["data.name=tu:NOPE", f"data.root={tmp_path / 'keep'}"])
    with pytest.raises(GTCompressError, match="TU dataset folder not found"):
        run_pipeline(cfg, out, log=lambda line: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]
    assert list((tmp_path / "keep").iterdir()) == []


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


def test_export_quantize_takes_the_exporter_s_schemes_or_none() -> None:
    from exporters.quantize import SCHEMES
    from gtcompress.pipeline.config import _CHOICES

    assert _CHOICES["export.quantize"] == SCHEMES
    assert load_config(None, [])["export"]["quantize"] == ["int8"]
    assert load_config(None, ["export.quantize=[]"])["export"]["quantize"] == []
    with pytest.raises(ConfigError) as e:
        load_config(None, ["export.quantize=[int4]"])
    assert "export.quantize" in str(e.value) and "int8" in str(e.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("export.quantize_max_drop=.nan", "export.quantize_max_drop is nan; expected a number >= 0 and finite"),
        ("export.quantize_max_drop=.inf", "export.quantize_max_drop is inf; expected a number >= 0 and finite"),
        ("export.quantize_max_drop=-0.5", "export.quantize_max_drop is -0.5; expected a number >= 0 and finite"),
        ("export.mixed=yes please", "export.mixed is 'yes please'; expected true or false"),
    ],
)
def test_the_int8_search_s_settings_are_checked_when_read(override: str, message: str) -> None:
    """quantize_measured refuses a bound that is not a finite number >= 0, after the models were made."""
    assert load_config(None, ["export.quantize_max_drop=2"])["export"]["quantize_max_drop"] == 2.0
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert str(e.value).endswith(message)
