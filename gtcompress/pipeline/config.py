"""The pipeline's settings: :class:`PipelineConfig`, its defaults and how files and overrides load.

A config is nine sections of keys (``data``, ``train``, ``control``, ``sparsify``, ``prune``,
``export``, ``tensorrt``, ``profile``, ``triton``). Defaults, then a YAML or TOML file, then
``section.key=value`` overrides (values parsed as YAML), each layer checked for unknown sections
and keys so that a typo fails before minutes of training rather than being silently ignored.

Each default is written once. Keys that mean what a library config field means (model width,
learning rate, the pruning axes...) take the library's value from its config class
(:class:`~gtcompress.train.recipe.DataSpec`, :class:`~gtcompress.models.config.ModelConfig`,
:class:`~gtcompress.train.loop.TrainConfig`, :class:`~gtcompress.compress.prune_config.PruneConfig`);
the values written here are the pipeline's own: settings the library has no notion of, and
:data:`RECIPE`, where the default run deliberately trains less than the library would so that it
fits in about ten minutes on two CPU cores.
"""

from __future__ import annotations

import copy
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import yaml

from gtcompress.errors import ConfigError, GTCompressError

__all__ = ["RECIPE", "PipelineConfig", "load_config"]

#: Where the default run departs from a library default, with the library's value for comparison.
#: Short runs on purpose: the dense models get 15 epochs instead of TrainConfig's 50, and each
#: compressed model 2 epochs of mask training (or TEDDY fine-tuning) instead of 10; pruning then
#: fine-tunes 12 epochs at twice PruneConfig's learning rate to recover within that time.
RECIPE: dict[str, dict[str, Any]] = {
    "train": {"epochs": 15},  # TrainConfig.epochs: 50
    "sparsify": {"edges": 0.3, "epochs": 2},  # SparsifyConfig.edges: 0.0 (off), .epochs: 10
    "prune": {"epochs": 2, "finetune_epochs": 12, "lr": 1e-3},  # PruneConfig: 10, 10, 5e-4
}


def _defaults() -> dict[str, dict[str, Any]]:
    """Every section and key, in the order errors list them. Library values are read here, when a
    config is first built, so that importing this module stays torch-free."""
    from gtcompress.compress.prune_config import PruneConfig
    from gtcompress.models.config import ModelConfig
    from gtcompress.train.loop import TrainConfig
    from gtcompress.train.recipe import DataSpec

    return {
        "data": {"name": "cluster", "root": DataSpec.root, "size": DataSpec.size, "seed": DataSpec.seed},
        "train": {
            "archs": ["gt", "gps"],
            "checkpoint": None,  # a trained checkpoint to start from instead of training archs
            "hidden": ModelConfig.hidden,
            "layers": ModelConfig.num_layers,
            "heads": ModelConfig.heads,
            "readout": ModelConfig.readout,  # how a graph-level model pools its nodes (node-level: unread)
            "epochs": RECIPE["train"]["epochs"],
            "batch_size": TrainConfig.batch_size,  # every stage that trains: dense, dense-ft, TEDDY, pruning
            "lr": TrainConfig.lr,
            # the run's seed: dense training, and the dense-ft control, TEDDY and pruning after it (a run per
            # seed varies every stage, not only the dense model)
            "seed": TrainConfig.seed,
        },
        # dense-ft: the dense model trained as many extra epochs as the compressed ones get (prune epochs +
        # fine-tuning), with the same distillation recipe; every delta in the report is also against it
        "control": {"dense_ft": True},
        "sparsify": {"enabled": True, **RECIPE["sparsify"]},
        "prune": {
            "budgets": [0.5, 0.3, 0.2],  # a budget out of an architecture's reach is skipped with a note
            **RECIPE["prune"],
            "axes": PruneConfig.axes,
            # null: PruneConfig's ratio where the axes hold tokens (auto: GPS and Graphormer on graph-level
            # tasks); a number is the tokens ratio, and auto then adds the tokens axis, as gtc prune --token-keep
            "token_keep": None,
            "random_baseline": True,
        },
        # quantize: each export but the plugin's also quantized (exporters.quantize), measured beside it.
        # quantize_max_drop: how far below its float32 export an int8 file may fall on the val split (units of
        # triton.max_metric_drop); past it, mixed keeps the fewest blocks float32 that bring it within, as
        # gtc export --quantize int8 --max-drop --mixed does (the closest file found where none is)
        "export": {
            "lowerings": ["auto", "plugin"],
            "verify_batches": 4,
            "quantize": ["int8"],
            "quantize_max_drop": 1.0,
            "mixed": True,
        },
        "tensorrt": {"enabled": True, "fp16": False},
        "profile": {
            "threads": 1,  # measured: 2 ONNX Runtime threads are slower than 1 on these batches (68.8 vs 63.7 ms)
            "batch_graphs": 32,
            "batches": 8,
            "warmup": 2,
            "repeat": 3,
            "max_seconds": 20.0,  # two passes of every row (16 batches each) with the int8 rows beside the float32
            "graph_sizes": [32, 128, 512],  # the size sweep and per-op breakdown of dense vs compressed
            "sweep_iterations": 10,
        },
        # backend: auto (python, raw graphs in, when the model needs pre-processing), python or onnxruntime
        # max_metric_drop: in points for accuracy and ROC-AUC (reported in percent), in percent of the dense
        # parent's MAE for regression (pipeline.report.tolerance_drop)
        "triton": {"enabled": True, "max_metric_drop": 1.0, "backend": "auto"},
    }


class PipelineConfig(Mapping[str, dict[str, Any]]):
    """The settings of one pipeline run: ``config["prune"]["budgets"]``.

    Immutable: :meth:`with_file` and :meth:`with_overrides` return new configs, and indexing returns
    a copy of the section, so a config handed to :func:`~gtcompress.pipeline.run_pipeline` is the
    config its report records. Build one with :meth:`default` or :meth:`load`::

        PipelineConfig.default().with_overrides(["prune.budgets=[0.5]", "train.archs=[gt]"])
        PipelineConfig.load("pipeline.yaml", ["profile.threads=2"])
    """

    __slots__ = ("_sections",)

    def __init__(self, sections: Mapping[str, Mapping[str, Any]]) -> None:
        """Prefer :meth:`default`: this takes every section and key as given, unchecked."""
        self._sections = {name: dict(copy.deepcopy(values)) for name, values in sections.items()}

    @classmethod
    def default(cls) -> PipelineConfig:
        """The default run (see the module docstring for where the values come from)."""
        return cls(_defaults())

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: Iterable[str] = ()) -> PipelineConfig:
        """Defaults, then the YAML/TOML file ``path`` (if any), then ``SECTION.KEY=VALUE`` overrides."""
        cfg = cls.default()
        if path is not None:
            cfg = cfg.with_file(path)
        return cfg.with_overrides(overrides)

    def with_file(self, path: str | Path) -> PipelineConfig:
        """This config with the sections of a YAML or TOML (``.toml``) file merged in."""
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"{path}: is a folder; a config is a YAML or TOML (.toml) file")
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not a YAML or TOML config (not UTF-8 text: {e})") from None
        except OSError as e:
            raise ConfigError(f"{path}: unreadable ({e.strerror or e})") from None
        try:
            doc = tomllib.loads(text) if path.suffix == ".toml" else _load_yaml(text, path)
        except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
            raise ConfigError(f"{path}: cannot parse ({' '.join(str(e).split())})") from e
        if doc is not None and not isinstance(doc, dict):
            raise ConfigError(
                f"{path}: expected a mapping of sections ({', '.join(self._sections)}), got a {type(doc).__name__}"
            )
        sections = self.to_dict()
        for section, values in (doc or {}).items():
            _merge(sections, section, values, str(path))
        return PipelineConfig(sections)

    def with_overrides(self, overrides: Iterable[str] | Mapping[str, Mapping[str, Any]]) -> PipelineConfig:
        """This config with overrides: ``"section.key=value"`` strings (the value parsed as YAML, as
        ``gtc pipeline --set`` takes them) or a mapping of sections, ``{"prune": {"budgets": [0.5]}}``."""
        sections = self.to_dict()
        if isinstance(overrides, str):  # one override, not a sequence of one-character ones
            overrides = [overrides]
        if isinstance(overrides, Mapping):
            for section, values in overrides.items():
                _merge(sections, section, values, "overrides")
            return PipelineConfig(sections)
        for item in overrides:
            key, sep, raw = item.partition("=")
            if not sep or "." not in key:
                raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. prune.budgets=[0.5,0.3]")
            section, name = key.split(".", 1)
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError as e:  # an unclosed [ or {, a stray quote: the value, not the key, is wrong
                why = " ".join(str(getattr(e, "problem", None) or e).split())  # the caret diagram says no more
                raise ConfigError(
                    f"--set {item!r}: the value {raw!r} is not valid YAML ({why}); "
                    "e.g. prune.budgets=[0.5,0.3], quoted for the shell"
                ) from None
            _merge(sections, section, {name: value}, f"--set {item}")
        return PipelineConfig(sections)

    def check(self) -> None:
        """What no single key shows: settings that contradict each other. Each key's own type and
        range were checked when it was read; :func:`~gtcompress.pipeline.run_pipeline` calls this."""
        from gtcompress.data import check_data_root, check_size  # here: importing this module stays torch-free

        t, p, d = self._sections["train"], self._sections["prune"], self._sections["data"]
        check_data_root(d["name"], d["root"], "data.root")
        check_size(d["name"], d["size"])
        axes = _parse_axes()(p["axes"])  # checked when read: this cannot fail here
        if p["token_keep"] is not None and "auto" not in axes and "tokens" not in axes:
            raise ConfigError(
                f"prune.token_keep {p['token_keep']:g} sets the tokens axis, which prune.axes {','.join(axes)} does "
                "not name; add tokens to prune.axes, or set prune.token_keep to null"
            )
        if t["checkpoint"] is None and t["hidden"] % t["heads"]:
            raise ConfigError(
                f"train.hidden {t['hidden']} must be a multiple of train.heads {t['heads']} "
                "(each head gets hidden/heads channels)"
            )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """A plain, deep copy (what the report records as ``config``)."""
        return copy.deepcopy(self._sections)

    def __getitem__(self, section: str) -> dict[str, Any]:
        return copy.deepcopy(self._sections[section])

    def __iter__(self) -> Iterator[str]:
        return iter(self._sections)

    def __len__(self) -> int:
        return len(self._sections)

    def __repr__(self) -> str:
        return f"PipelineConfig({self._sections!r})"


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> PipelineConfig:
    """``gtc pipeline``'s ``--config`` and ``--set``: :meth:`PipelineConfig.load`."""
    return PipelineConfig.load(path, overrides)


def _load_yaml(text: str, path: Path) -> Any:
    """``yaml.safe_load(text)``, but a key given twice in one mapping is refused, naming both lines.

    YAML's loader keeps the last of two equal keys without a word: a second ``prune:`` section dropped
    the first one's ``budgets`` (the run did three budgets instead of the one asked for), as a second
    ``budgets:`` silently replaced the first. TOML's parser refuses both already."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:  # an empty file, or only comments
            return None
        _refuse_duplicate_keys(node, (), path)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _refuse_duplicate_keys(node: yaml.Node, keys: tuple[str, ...], path: Path) -> None:
    """A ConfigError for the first mapping key under ``node`` given twice; ``keys``: where ``node`` is."""
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_duplicate_keys(item, keys, path)
        return
    if not isinstance(node, yaml.MappingNode):
        return
    first_line: dict[tuple[str, str], int] = {}
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
            line = key.start_mark.line + 1
            if (key.tag, key.value) in first_line:
                what = f"section {key.value!r}" if not keys else f"key {'.'.join((*keys, key.value))}"
                raise ConfigError(
                    f"{path}, line {line}: {what} given twice (first at line {first_line[key.tag, key.value]}); "
                    "give it once"
                )
            first_line[key.tag, key.value] = line
        _refuse_duplicate_keys(value, (*keys, str(key.value)) if isinstance(key, yaml.ScalarNode) else keys, path)


def _merge(cfg: dict[str, dict[str, Any]], section: str, values: Any, where: str) -> None:
    if section not in cfg:
        raise ConfigError(f"{where}: unknown section {section!r}; expected one of {', '.join(cfg)}")
    if values is None:  # a YAML section whose keys are all commented out: nothing to change
        return
    if not isinstance(values, dict):  # ``prune: 0.5``: the section is known, its value is not keys
        raise ConfigError(
            f"{where}: section {section!r} is {values!r}; expected a mapping of its keys "
            f"({', '.join(cfg[section])}), e.g. {section}: {{{next(iter(cfg[section]))}: ...}}"
        )
    for k, v in values.items():
        if k not in cfg[section]:
            raise ConfigError(f"{where}: unknown key {section}.{k}; expected one of {', '.join(cfg[section])}")
        cfg[section][k] = _checked(section, k, v, cfg[section][k], where)


def _checked(section: str, key: str, value: Any, default: Any, where: str) -> Any:
    """``value`` for ``section.key`` if it has the default's type (an int where a float is due is
    taken as that float), lies in the key's range and is one of its choices; else a ConfigError that
    says what was expected, raised when the config is read rather than minutes later by a stage."""
    name = f"{section}.{key}"
    if name in _NULLABLE:  # null or a value of the exemplar's type, whichever the key holds now
        if value is None:
            return None
        default = _NULLABLE[name]
    if isinstance(default, list):
        empty_ok = name in _MAY_BE_EMPTY
        kind = f"a {'' if empty_ok else 'non-empty '}list of {_PLURAL[type(default[0])]}, e.g. {name}={_yaml(default)}"
        if isinstance(value, list) and not value and empty_ok:
            return []
        if isinstance(value, list) and value:
            checked = [_scalar(name, v, default[0]) for v in value]
            if None not in checked:
                # Each entry is a run of its own (a budget, a lowering, an arch, a profiled size): one given
                # twice ran twice and doubled the report's rows (gt-dense compared with itself), as
                # gtc profile --sizes 32,32 refuses.
                twice = list(dict.fromkeys(v for v in checked if checked.count(v) > 1))
                if twice:
                    shown = ", ".join(map(repr, twice))
                    raise ConfigError(f"{where}: {name}: {shown} given more than once in {checked!r}")
                return checked
        _bad(where, name, value, kind, each=True)
    if default is None:  # a path, or none
        if value is not None and not isinstance(value, str):
            _bad(where, name, value, "a path or null")
        return value
    checked = _scalar(name, value, default)
    if checked is None:
        _bad(where, name, value, _KIND[type(default)])
    parse = _PARSED.get(name)
    if parse is not None:
        try:
            parse()(checked)
        except GTCompressError as e:
            raise ConfigError(f"{where}: {name}: {e}") from e
    return checked


def _scalar(name: str, value: Any, default: Any) -> Any:
    """``value`` as the default's type if it is one, in range and among the choices; else None."""
    if isinstance(default, bool | str):
        ok = type(value) is type(default)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        if isinstance(value, str) and _EXPONENT_FORM.fullmatch(value):
            value = float(value)  # YAML 1.1 reads 1e-3 as a string, though it is what users type for 0.001
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    rule = _RANGES.get(name)
    if not ok or (rule is not None and not rule[0](value)):
        return None
    return None if name in _CHOICES and value not in _CHOICES[name] else value


def _bad(where: str, name: str, value: Any, kind: str, each: bool = False) -> NoReturn:
    """Raise the error for ``name``: its type (``kind``) with its range or choices."""
    if name in _CHOICES:  # names: the choices say it all
        condition = f"one of {', '.join(_CHOICES[name])}"
        kind = kind.replace(", e.g.", f", each {condition}, e.g.") if each else condition
    elif name in _RANGES:
        condition = _RANGES[name][1]
        kind = kind.replace(", e.g.", f", each {condition}, e.g.") if each else f"{kind} {condition}"
    hint = ""
    if isinstance(value, dict) and kind.startswith(("a string", "a path")):
        # data.name=tu: (a name left out) was "data.name is {'tu': None}; expected a string", which reads as our bug
        hint = " (YAML reads a colon followed by a space or the end of the value as a mapping: quote the value)"
    raise ConfigError(f"{where}: {name} is {value!r}; expected {kind}{hint}")


def _yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip()


#: A number in exponent form that YAML 1.1 (PyYAML) leaves a string: it wants a dot and a signed exponent
#: (1.0e-3), so 1e-3, 5E-4 and 1.5e3 were refused with "expected a number". ASCII digits only; no inf/nan.
_EXPONENT_FORM = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+", re.ASCII)

_KIND = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_PLURAL = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
_POSITIVE = (lambda v: v > 0), "> 0"
#: A learning rate: YAML's ``.inf`` passed ``> 0``, and the run trained on it (NaN weights) until a loss caught it.
_LEARNING_RATE = (lambda v: 0 < v < math.inf), "> 0 (a finite number)"
_FRACTION = (lambda v: 0 < v <= 1), "in (0, 1]"
#: PruneConfig's --target-flops range: a budget of 1 keeps every FLOP, and the library refuses it,
#: but only when the prune stage starts, minutes into the run and naming an option gtc pipeline lacks.
_BUDGET = (lambda v: 0 < v < 1), "in (0, 1) (the fraction of the dense model's FLOPs kept)"


#: Keys that may be null, with an exemplar of the type they hold otherwise.
_NULLABLE: dict[str, Any] = {"prune.token_keep": 1.0}


def _at_least(low: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v >= low), f">= {low}"


#: ``gtcompress.train.loop.MAX_SEED`` (a test keeps them equal; no torch here): the largest seed the training
#: loops take. A larger train.seed crashed the train stage with torch's "Overflow when unpacking long long".
_MAX_SEED = 9_223_372_036_854_775_807

#: Ranges of numeric keys (a list's range applies to each item).
_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "data.seed": _at_least(0),  # numpy's generators refuse a negative seed (DataSpec does too, later)
    "train.hidden": _at_least(8),
    "train.layers": _at_least(1),
    "train.heads": _at_least(1),
    "train.epochs": _at_least(1),
    "train.batch_size": _at_least(1),
    "train.lr": _LEARNING_RATE,
    # as every --seed option: a negative one was taken, where gtc train --seed -1 is refused
    "train.seed": ((lambda v: 0 <= v <= _MAX_SEED), f"from 0 to {_MAX_SEED} (2**63-1)"),
    "sparsify.edges": ((lambda v: 0 <= v < 1), "in [0, 1) (the share of edges TEDDY removes)"),
    "sparsify.epochs": _at_least(0),
    "prune.budgets": _BUDGET,
    "prune.epochs": _at_least(0),
    "prune.finetune_epochs": _at_least(0),
    "prune.lr": _LEARNING_RATE,
    "prune.token_keep": _FRACTION,
    "export.verify_batches": _at_least(0),
    "export.quantize_max_drop": ((lambda v: math.isfinite(v) and v >= 0), ">= 0 and finite"),
    "profile.threads": _at_least(1),
    "profile.batch_graphs": _at_least(1),
    "profile.batches": _at_least(1),
    "profile.warmup": _at_least(0),
    "profile.repeat": _at_least(1),
    "profile.max_seconds": _POSITIVE,
    "profile.graph_sizes": _at_least(2),
    "profile.sweep_iterations": _at_least(2),  # the size sweep's own minimum (runtime.profile), checked at the end
    "triton.max_metric_drop": ((lambda v: v >= 0), ">= 0"),
}


def _parse_size() -> Callable[[str], Any]:
    from gtcompress.data import parse_size

    return parse_size


def _dataset_name() -> Callable[[str], Any]:
    from gtcompress.data import check_dataset_name

    return check_dataset_name


def _parse_axes() -> Callable[[str], Any]:
    from gtcompress.compress.gates import parse_axes

    return lambda text: parse_axes(text, allow_auto=True)


#: Keys whose string the library parses: checked by the library's own parser when read.
_PARSED: dict[str, Callable[[], Callable[[str], Any]]] = {
    "data.name": _dataset_name,
    "data.size": _parse_size,
    "prune.axes": _parse_axes,
}

#: List keys that may be empty: the list is of extras (``export.quantize=[]``: no quantized files).
_MAY_BE_EMPTY = frozenset({"export.quantize"})

#: Keys whose value is one of a few names (a list's choices apply to each item).
_CHOICES: dict[str, tuple[str, ...]] = {
    "triton.backend": ("auto", "python", "onnxruntime"),
    "train.archs": ("gt", "gps", "graphormer"),
    "train.readout": ("mean", "sum", "max"),  # ModelConfig's READOUTS (a test keeps them equal): no torch here
    "export.lowerings": ("auto", "scatter", "padded", "dense", "plugin"),
    "export.quantize": ("int8",),  # exporters.quantize.SCHEMES (a test keeps them equal): no onnx here
}
