"""What the stages of one run share (:class:`RunContext`) and what they hand each other
(:class:`ModelArtifact`, :class:`OnnxArtifact`).

A stage reads its settings from the context's config, loads data through it (each dataset once
per positional-encoding setting and feature layout, however many stages use it), and runs under its stage cache. The
artifacts carry the cache key of what made them, so a stage's key is its settings plus its inputs'
keys and a changed setting re-runs exactly what depends on it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gtcompress.pipeline.cache import StageCache, stage_key
from gtcompress.pipeline.config import PipelineConfig

if TYPE_CHECKING:  # torch-side: imported when a stage loads data, not with this module
    from gtcompress.data.base import FeatureSpec, GraphDataset
    from gtcompress.models.config import ModelConfig
    from gtcompress.train.recipe import DataSpec

    #: the node and edge features of the model a dataset is laid out for
    Features = tuple[FeatureSpec | None, FeatureSpec | None]

__all__ = ["ModelArtifact", "OnnxArtifact", "RunContext", "data_spec"]


def data_spec(config: PipelineConfig) -> DataSpec:
    """The dataset of ``config``'s ``data`` section."""
    from gtcompress.train.recipe import DataSpec

    d = config["data"]
    return DataSpec(d["name"], d["root"], d["size"], d["seed"])


@dataclass(frozen=True)
class ModelArtifact:
    """A checkpoint a stage wrote: ``models/<name>``."""

    name: str  # e.g. "gt-dense", "gt-gtsp-0.5"
    ckpt: Path
    key: str  # cache key of the stage that wrote it
    arch: str
    method: str  # "dense", "dense-ft", "teddy", "gtsp" or "random"
    budget: float | None  # FLOP fraction kept: 1.0 for dense models, None for TEDDY
    teddy: dict[str, Any] | None = None  # TEDDY settings its inputs need, if any


@dataclass(frozen=True)
class OnnxArtifact:
    """A verified ONNX export of a model: ``onnx/<model>-<requested>.onnx``."""

    model: ModelArtifact
    requested: str  # the lowering asked for ("auto", "plugin", ...)
    lowering: str  # the lowering written ("auto" resolved)
    path: Path
    max_abs_err: float  # ONNX Runtime vs PyTorch, over the verification batches
    precision: str = "float32"  # or a quantization scheme (exporters.quantize.SCHEMES), its file quantized
    #: a quantized file's making: its quantize stage's key (the search's settings) and what it measured on the
    #: val split (``deploy_stages._quantize``); empty for an export
    quantized: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The report's name of the file: its model's, with the quantization scheme (``gt-gtsp-0.5-int8``)."""
        return self.model.name if self.precision == "float32" else f"{self.model.name}-{self.precision}"

    @property
    def key(self) -> str:
        """The key later stages (evaluation, timing, TensorRT, profiling) depend on: the model's and
        the file's lowering (the same model in another lowering is another file, timed anew), not
        the export settings that do not change the file's function (verification batches). A quantized
        file's depends on its quantize stage's too: other search settings write other blocks in int8."""
        return stage_key(
            self.model.key, self.requested, self.lowering, self.path.name, self.precision, self.quantized.get("stage")
        )


@dataclass
class RunContext:
    """One run's config, directory, stage cache and datasets."""

    config: PipelineConfig
    out: Path
    cache: StageCache
    data_key: str  # the dataset's and the code's key: the root of every stage key
    _datasets: dict[str, GraphDataset] = field(default_factory=dict)

    @property
    def log(self) -> Callable[[str], None]:
        return self.cache.log

    def stage(self, name: str, key: str, outputs: list[Path], fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``fn`` as the cached stage ``name`` (:meth:`StageCache.stage`)."""
        return self.cache.stage(name, key, outputs, fn)

    def data_spec(self) -> DataSpec:
        """The configured dataset (``data`` section)."""
        return data_spec(self.config)

    def dataset(self, pe: Mapping[str, int], features: Features | None = None) -> GraphDataset:
        """The configured dataset with positional encodings ``pe``, its features laid out for a model
        of ``features`` (node and edge :class:`~gtcompress.data.base.FeatureSpec`; a TU dataset as
        PyG's one-hots for a model trained on them, :meth:`DataSpec.load`), loaded once per both."""
        node, edge = features or (None, None)
        k = json.dumps([dict(pe), *(None if f is None else asdict(f) for f in (node, edge))], sort_keys=True)
        if k not in self._datasets:
            self._datasets[k] = self.data_spec().load(dict(pe), features)
        return self._datasets[k]

    def dataset_of_file(self, path: Path) -> GraphDataset:
        """The configured dataset with the positional encodings and the feature layout the exported file
        ``path`` takes (its input spec)."""
        from gtcompress.data.base import FeatureSpec
        from gtcompress.pipeline.measure import read_spec

        spec = read_spec(path)
        node, edge = (
            FeatureSpec(f.kind, f.dim, list(f.cardinalities)) if f else None for f in (spec.x, spec.edge_attr)
        )
        return self.dataset(spec.pe, (node, edge))

    def dataset_for(self, config: ModelConfig) -> GraphDataset:
        """The configured dataset as the model of ``config`` reads it (:meth:`DataSpec.load_for`)."""
        return self.dataset(config.pe, (config.node_features, config.edge_features))
