"""Dataset → model → trained checkpoint in one call (what ``gtc train`` and ``bench/train.py`` run).

``DataSpec`` names a dataset reproducibly (name, directory, size preset, seed) and is stored in
every checkpoint, so ``gtc eval CHECKPOINT`` can rebuild exactly the data it was trained on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gtcompress.data.base import GraphDataset, add_pe, check_seed
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
        return asdict(self)

    def load(self, pe: dict[str, int] | None = None) -> GraphDataset:
        """Load (through the on-disk cache) and attach the positional encodings ``pe`` needs."""
        from gtcompress.data import load_dataset

        ds = load_dataset(self.name, Path(self.root) if self.root else None, self.size, self.seed)
        if pe:
            add_pe(ds, lap=pe.get("lap", 0), rwse_steps=pe.get("rwse", 0))
        return ds


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
    counted, so no model that trains is refused."""
    import torch

    weights: int | None = None  # None: more than int64 counts, certainly too large
    if _largest_int(config.to_dict()) <= torch.iinfo(torch.int64).max:  # else torch cannot even take the size
        try:
            with torch.device("meta"):
                weights = sum(p.numel() for p in build_model(config).parameters())
        except RuntimeError:  # an element count past int64
            pass
    memory = machine_memory()
    if memory is None and weights is not None:
        return
    need = None if weights is None else weights * TRAINING_BYTES_PER_WEIGHT
    if need is None or need > memory:  # type: ignore[operator]
        count = "more weights than int64 counts" if weights is None else f"{weights:,} weights"
        size = "" if need is None else f", which take {need / 2**30:.1f} GiB to train"
        have = "" if memory is None else f", more than this machine's {memory / 2**30:.1f} GiB of memory"
        layers = f"{config.num_layers} layer" + ("s" if config.num_layers != 1 else "")
        raise ConfigError(
            f"{config.arch} with hidden {config.hidden}, {layers}: {count}{size} "
            f"({TRAINING_BYTES_PER_WEIGHT} bytes a weight: the weight, its gradient and AdamW's two moments){have}; "
            "choose a smaller hidden size or fewer layers"
        )


def _largest_int(value: Any) -> int:
    """The largest integer anywhere in a config's nested dicts and lists (0 if none)."""
    if isinstance(value, dict):
        return max(map(_largest_int, value.values()), default=0)
    if isinstance(value, list):
        return max(map(_largest_int, value), default=0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


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
