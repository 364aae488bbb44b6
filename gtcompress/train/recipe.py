"""Dataset → model → trained checkpoint in one call (what ``gtc train`` and ``bench/train.py`` run).

``DataSpec`` names a dataset reproducibly (name, directory, size preset, seed) and is stored in
every checkpoint, so ``gtc eval CHECKPOINT`` can rebuild exactly the data it was trained on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gtcompress.data.base import FeatureSpec, GraphDataset, add_pe, check_seed
from gtcompress.errors import ConfigError
from gtcompress.machine import machine_memory
from gtcompress.models.config import ARCHS, ModelConfig
from gtcompress.models.model import GraphModel, build_model
from gtcompress.train.loop import TrainConfig, TrainResult, seed_everything, train


@dataclass
class DataSpec:
    name: str  # "cluster", "pattern", "csl", "tu:NCI1", "ogb:ogbg_molbace", "molhiv"
    root: str | None = None  # directory for file-based datasets
    size: str = "small"  # "small", "full" or "TRAIN,VAL,TEST" (generated datasets and molhiv)
    seed: int = 0

    def __post_init__(self) -> None:
        # stored in every checkpoint and used by numpy to generate and split the data, which
        # refuses a negative seed only when the dataset is built: refuse it on construction
        check_seed(self.seed, "--seed")

    def to_dict(self) -> dict[str, Any]:
        """As a checkpoint records it: ``root`` made absolute, since a root typed relative to one
        working directory (``--data-root ../shared/data/TU``) named nothing once ``gtc prune`` ran
        from another."""
        out = asdict(self)
        if self.root:
            out["root"] = os.path.abspath(self.root)
        return out

    def load(
        self,
        pe: dict[str, int] | None = None,
        model_features: tuple[FeatureSpec | None, FeatureSpec | None] | None = None,
    ) -> GraphDataset:
        """Load (through the on-disk cache) and attach the positional encodings ``pe`` needs;
        ``model_features``: :func:`~gtcompress.data.load_dataset`'s."""
        from gtcompress.data import load_dataset

        root = Path(self.root) if self.root else None
        ds = load_dataset(self.name, root, self.size, self.seed, model_features=model_features)
        if pe:
            add_pe(ds, lap=pe.get("lap", 0), rwse_steps=pe.get("rwse", 0))
        return ds

    def load_for(self, config: ModelConfig) -> GraphDataset:
        """The data as the model of ``config`` reads it: its positional encodings, and its features'
        layout (a model trained on PyG's one-hot TU features gets them)."""
        return self.load(config.pe, (config.node_features, config.edge_features))


# Positional encodings each benchmark family is usually trained with (GraphGPS configs).
DEFAULT_PE: dict[str, dict[str, int]] = {
    "cluster": {"lap": 8},
    "pattern": {"lap": 8},
    "csl": {"lap": 20},
    "tu": {"rwse": 20},
    "ogb": {"rwse": 16},
    "molhiv": {"rwse": 16},
}


def default_pe(name: str) -> dict[str, int]:
    return dict(DEFAULT_PE.get(name.split(":")[0].lower(), {}))


#: Bytes a weight takes in training: float32 weight, gradient and AdamW's two moments.
TRAINING_BYTES_PER_WEIGHT = 16


def check_training_fits(config: ModelConfig) -> None:
    """Refuse a model whose weights alone cannot be trained in this machine's memory, counted on the meta
    device before anything is allocated: a hidden size typed with extra zeros was torch's "can't allocate
    memory" traceback, or took the machine's memory until the kernel stepped in. Activations are not
    counted, so no model that trains is refused. The message names the part of the model that holds
    most of the weights and the config field or data dimension that sizes it: a node label of 10**9 in
    a TU file makes a billion-row embedding, which fewer layers would not shrink."""
    import torch

    parts: dict[str, int] | None = None  # None: more than int64 counts, certainly too large
    largest = max((v for _, v in _int_fields(config.to_dict())), default=0)
    if largest <= torch.iinfo(torch.int64).max:  # else torch cannot even take the size
        try:
            with torch.device("meta"):
                parts = _weights_by_part(build_model(config), config)
        except RuntimeError:  # an element count past int64
            pass
    weights = None if parts is None else sum(parts.values())
    memory = machine_memory()
    if memory is None and weights is not None:
        return
    need = None if weights is None else weights * TRAINING_BYTES_PER_WEIGHT
    if need is None or need > memory:  # type: ignore[operator]
        count = "more weights than int64 counts" if weights is None else f"{weights:,} weights"
        size = "" if need is None else f", which take {need / 2**30:.1f} GiB to train"
        have = "" if memory is None else f", more than this machine's {memory / 2**30:.1f} GiB of memory"
        layers = f"{config.num_layers} layer" + ("s" if config.num_layers != 1 else "")
        if parts is None:
            name, value = _largest_field(config)
            part = _FIELD_PART.get(name, _FIELD_PART.get(name.split(".")[0], "layers"))
            held = f"the largest size is {name} {value}"
        else:
            part = max(parts, key=parts.__getitem__)
            held = f"{parts[part]:,} of them are {_describe(part, config)}"
        raise ConfigError(
            f"{config.arch} with hidden {config.hidden}, {layers}: {count}{size} "
            f"({TRAINING_BYTES_PER_WEIGHT} bytes a weight: the weight, its gradient and AdamW's two moments){have}; "
            f"{held}: {_advice(part, config)}"
        )


def _weights_by_part(model: GraphModel, config: ModelConfig) -> dict[str, int]:
    """Weight counts by the part of the model that holds them (the parts :func:`_advice` knows). The
    feed-forward blocks are a part of their own only where ``ffn_dim`` is set above its default of
    2 × hidden; otherwise ``hidden`` sizes them with the rest of the layers."""
    own_ffn = max((s.ffn_dim for s in config.layers), default=0) > 2 * config.hidden
    parts: dict[str, int] = {}
    for name, p in model.named_parameters():
        top, *rest = name.split(".")
        if top == "layers":  # layers.<i>.ffn.…, layers.<i>.attn.spd_bias.…
            part = "ffn" if rest[1] == "ffn" and own_ffn else "spd" if rest[1:3] == ["attn", "spd_bias"] else "layers"
        else:
            part = {"in_degree": "degree", "out_degree": "degree", "final_norm": "layers"}.get(top, top)
        parts[part] = parts.get(part, 0) + p.numel()
    return parts


# The part of the model a config field sizes, for a config too large to build and count.
_FIELD_PART = {
    "node_features": "node_encoder",
    "edge_features": "edge_encoder",
    "pe": "pe_encoders",
    "pe_dim": "pe_encoders",
    "out_dim": "head",
    "head_layers": "head",
    "head_widths": "head",
    "ffn_dim": "ffn",
    "layers.ffn_dim": "ffn",
    "max_spd": "spd",
    "max_degree": "degree",
}


def _int_fields(value: Any, name: str = "") -> Iterator[tuple[str, int]]:
    """Every integer in a config's nested dicts and lists with its dotted name; a list entry is named by
    its field (``layers.ffn_dim``), which is what the advice is about."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _int_fields(v, f"{name}.{k}" if name else str(k))
    elif isinstance(value, list):
        for v in value:
            yield from _int_fields(v, name)
    elif isinstance(value, int) and not isinstance(value, bool):
        yield name, value


def _largest_field(config: ModelConfig) -> tuple[str, int]:
    """The config's largest integer and its name, leaving out the sizes derived from ``hidden`` by
    default (``ffn_dim`` 2 × hidden, ``head_dim`` hidden / heads): ``hidden`` is the one to name then."""
    derived = {
        "ffn_dim": 2 * config.hidden,
        "layers.ffn_dim": 2 * config.hidden,
        "head_dim": config.hidden // config.heads,
    }
    chosen = [(n, v) for n, v in _int_fields(config.to_dict()) if derived.get(n) != v]
    return max(chosen, key=lambda f: f[1], default=("hidden", config.hidden))


def _feature_count(field: str, spec: Any) -> str:
    if spec.kind == "categorical":
        return f"{sum(spec.cardinalities):,} categories ({field}.cardinalities {spec.cardinalities}, from the dataset)"
    return f"{spec.dim:,} input features ({field}.dim, from the dataset)"


def _describe(part: str, config: ModelConfig) -> str:
    """What ``part`` is and the sizes that make it, for the refusal's message."""
    c = config
    if part in ("node_encoder", "edge_encoder"):
        what = "node" if part == "node_encoder" else "edge"
        spec = c.node_features if what == "node" else c.edge_features
        return f"the {what} feature encoder: hidden {c.hidden} for each of {_feature_count(f'{what}_features', spec)}"
    if part == "pe_encoders":
        pe = ",".join(f"{kind}:{k}" for kind, k in sorted(c.pe.items()))
        return f"the positional-encoding projections (pe {pe}" + (f", pe_dim {c.pe_dim})" if c.pe_dim else ")")
    if part == "head":
        widths = f", head_widths {c.head_widths}" if c.head_widths else ""
        return f"the prediction head (hidden {c.hidden} to out_dim {c.out_dim}, head_layers {c.head_layers}{widths})"
    if part == "ffn":
        return f"the feed-forward blocks (ffn_dim {max(s.ffn_dim for s in c.layers)}, hidden {c.hidden})"
    if part == "spd":
        return f"the shortest-path biases (max_spd {c.max_spd})"
    if part == "degree":
        return f"the degree embeddings (max_degree {c.max_degree}, hidden {c.hidden})"
    if part == "layers":
        heads = max((s.heads for s in c.layers), default=0)
        return f"the transformer layers (hidden {c.hidden}, heads {heads}, head_dim {c.head_dim}, ffn_dim {c.ffn_dim})"
    return f"the {part} weights"


def _advice(part: str, config: ModelConfig) -> str:
    """What to change about ``part``: the field that sizes it, or the dataset where the data does."""
    c = config
    if part in ("node_encoder", "edge_encoder"):
        spec, what = (c.node_features, "node") if part == "node_encoder" else (c.edge_features, "edge")
        if spec is not None and spec.kind == "categorical":
            # a column embeds a row for every value up to its largest: one stray large label does it
            return f"renumber the dataset's {what} labels densely from 0, or choose a smaller hidden size"
        return f"give the dataset fewer {what} features, or choose a smaller hidden size"
    if part == "head" and max(c.head_widths, default=0) > c.hidden:
        return "choose smaller head_widths"
    if part == "head" and c.out_dim > c.hidden:
        return "train on a dataset with fewer classes or targets (out_dim), or choose a smaller hidden size"
    if part == "ffn":
        return "choose a smaller ffn_dim"
    if part == "layers" and max((s.heads for s in c.layers), default=0) * c.head_dim > c.hidden:
        return "choose a smaller head_dim or fewer heads"
    fields = {
        "pe_encoders": "fewer positional-encoding dimensions",
        "spd": "a smaller max_spd",
        "degree": "a smaller max_degree",
    }
    return f"choose {fields.get(part, 'a smaller hidden size or fewer layers')}"


@dataclass
class FitResult:
    model: GraphModel
    dataset: GraphDataset
    result: TrainResult
    meta: dict[str, Any] = field(default_factory=dict)


def fit(
    data: DataSpec,
    arch: str,
    model_overrides: dict[str, Any] | None = None,
    train_cfg: TrainConfig | None = None,
    dataset: GraphDataset | None = None,
    show_progress: bool = True,
) -> FitResult:
    """Build ``arch`` for ``data`` and train it; ``meta`` is what a checkpoint should store."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHS)}")
    overrides = dict(model_overrides or {})
    overrides.setdefault("pe", default_pe(data.name))
    train_cfg = train_cfg or TrainConfig()
    ds = dataset if dataset is not None else data.load(overrides["pe"])
    readout = overrides.get("readout", ModelConfig.readout)
    if ds.info.task_level == "node" and readout != ModelConfig.readout:  # accepted, then never read
        raise ConfigError(
            f"readout {readout!r} pools each graph's nodes into one prediction, but {ds.info.name} is node-level "
            f"(a prediction per node, nothing pooled): leave the readout at {ModelConfig.readout!r}"
        )
    config = ModelConfig.for_dataset(arch, ds.info, **overrides)
    check_training_fits(config)
    seed_everything(train_cfg.seed)
    model = build_model(config)
    res = train(model, ds, train_cfg, show_progress=show_progress, description=f"{arch} on {ds.info.name}")
    params = sum(p.numel() for p in model.parameters())
    meta = {
        "dataset": {**data.to_dict(), "info": ds.info.to_dict()},
        "train": train_cfg.to_dict(),
        "metrics": {
            "metric": ds.info.metric,
            "val": res.val_metric,
            "test": res.test_metric,
            "best_epoch": res.best_epoch,
            "epochs_run": res.epochs_run,
            "train_time_s": res.train_time_s,
            "params": params,
        },
        "history": res.history,
    }
    return FitResult(model, ds, res, meta)
