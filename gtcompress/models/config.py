"""Model configuration: enough to rebuild any model, dense or materialised.

A materialised (compressed) model has the same class and a smaller config: ``layers`` lists,
per layer, how many attention heads remain (0 = attention sublayer removed), the FFN width
(0 = FFN sublayer removed) and the token keep ratio of global attention.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from numbers import Integral, Real
from typing import Any

from gtcompress.data.base import DatasetInfo, FeatureSpec
from gtcompress.errors import ConfigError
from gtcompress.preprocess.spec import PE_KINDS

ARCHS = ("gt", "gps", "graphormer")
NORMS = ("batch", "layer", "none")  # gtcompress.nn.blocks.make_norm
READOUTS = ("mean", "sum", "max")  # gtcompress.nn.blocks.readout

# Integer fields and the least value that builds a model. A config read from a checkpoint's
# config.json or a CLI option can hold anything; a zero or negative size must be a ConfigError
# naming the field here, not a ZeroDivisionError, an empty layer stack or a torch error later.
_MIN_INT = {
    "out_dim": 1,
    "hidden": 1,
    "heads": 1,  # the default per-layer head count and hidden // heads; 0 heads is a LayerSpec matter
    "head_dim": 0,  # 0 → hidden // heads
    "ffn_dim": 0,  # 0 → 2 * hidden
    "gine_edge_dim": 0,
    "pe_dim": 0,
    "head_layers": 1,
    "max_spd": 0,
    "max_degree": 0,
    "attention_topk": 0,
}
#: The most transformer layers (``num_layers``, or the length of ``layers``) and prediction-head
#: layers a config may name. The model is built (on the meta device, before the weights are checked
#: against it) one module at a time: a checkpoint's config.json with ``"num_layers": 1000000`` or
#: ``"head_layers": 10000000`` took 20 minutes and tens of GiB to build before any error, where
#: 10**5 layers already took 13 s and 800 MiB. Far above any trained graph transformer.
MAX_LAYERS = 1024
MAX_HEAD_LAYERS = 64


def _nested(cls: type, name: str, value: Any) -> Any:
    """``cls(**value)`` for a dict read from JSON, with a missing or unknown key reported as a
    ConfigError naming the field (not a TypeError about ``__init__`` arguments)."""
    if not isinstance(value, dict):
        return value
    try:
        return cls(**value)
    except TypeError as e:
        raise ConfigError(f"{name}: {value!r} is not a valid {cls.__name__} ({e})") from e
    except ValueError as e:
        raise ConfigError(f"{name}: {e}") from e


class UnknownFieldError(ConfigError):
    """A model config names a field this version does not have."""


def _is_int(v: object) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def _check_int(name: str, v: object, least: int, most: int | None = None) -> None:
    if not _is_int(v) or v < least:  # type: ignore[operator]
        want = "a positive integer" if least == 1 else f"an integer >= {least}"
        raise ConfigError(f"{name} must be {want}, got {v!r}")
    if most is not None and v > most:  # type: ignore[operator]
        raise ConfigError(f"{name} must be at most {most}, got {v!r}")


@dataclass
class LayerSpec:
    heads: int
    ffn_dim: int
    token_keep: float = 1.0


@dataclass
class ModelConfig:
    arch: str
    node_features: FeatureSpec
    out_dim: int
    task_level: str = "node"  # "node" or "graph"
    edge_features: FeatureSpec | None = None
    hidden: int = 64
    num_layers: int = 4
    heads: int = 4
    head_dim: int = 0  # 0 → hidden // heads
    ffn_dim: int = 0  # 0 → 2 * hidden
    dropout: float = 0.0
    attn_dropout: float = 0.0
    norm: str = ""  # "" → "batch" (gt, gps) or "layer" (graphormer)
    local_conv: str = "gine"  # gps only: "gine", "gin" or "none"
    gine_edge_dim: int = 0  # gps: >0 gives GINE its own Linear(edge_dim → hidden) (PyG GINEConv(edge_dim=…))
    pe: dict[str, int] = field(default_factory=dict)  # e.g. {"lap": 8} or {"rwse": 20}
    pe_dim: int = 0  # 0 → PE projected to hidden and added; >0 → concatenated (GraphGPS style)
    pe_norm: bool = False  # BatchNorm on the raw PE before its projection (PyG GPS example)
    readout: str = "mean"
    head_layers: int = 2
    # widths of the head's hidden layers, head_layers - 1 of them; empty: each layer halves the last
    # (hidden → hidden/2 → …), which is every model gtcompress trains. An imported model's own widths.
    head_widths: list[int] = field(default_factory=list)
    attention_layout: str = "auto"  # gt: "sparse", "dense", "fused" or "auto" (fused on CUDA, else by size);
    # gps with attention_topk: "sparse"/"fused" run its attention over the pairs instead of a mask
    max_spd: int = 8  # graphormer: shortest-path distances clipped here
    max_degree: int = 64  # graphormer: degree embedding size
    # gps: >0 sparsifies global attention to input edges + self + the k top-scoring nodes of each
    # graph (TEDDY on attention edges, gtcompress.compress.attention_graph); score "teddy" or "degree"
    attention_topk: int = 0
    attention_score: str = "teddy"
    layers: list[LayerSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.node_features = _nested(FeatureSpec, "node_features", self.node_features)
        self.edge_features = _nested(FeatureSpec, "edge_features", self.edge_features)
        if not isinstance(self.head_widths, list):
            raise ConfigError(
                f"head_widths must be a list of the head's hidden widths (or [] to halve), got {self.head_widths!r}"
            )
        if not isinstance(self.layers, list):
            raise ConfigError(f"layers must be a list of per-layer specs, got {self.layers!r}")
        if len(self.layers) > MAX_LAYERS:  # before a LayerSpec is made for each
            raise ConfigError(f"layers lists {len(self.layers)} layers; at most {MAX_LAYERS} are allowed")
        self.layers = [_nested(LayerSpec, f"layers[{i}]", s) for i, s in enumerate(self.layers)]
        self._check_values()
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown arch {self.arch!r}; expected one of {', '.join(ARCHS)}")
        if self.task_level not in ("node", "graph"):
            raise ConfigError(f"task_level must be 'node' or 'graph', got {self.task_level!r}")
        if not self.head_dim:
            if self.hidden % self.heads:
                raise ConfigError(f"hidden={self.hidden} is not divisible by heads={self.heads}; set head_dim")
            self.head_dim = self.hidden // self.heads
        self.ffn_dim = self.ffn_dim or 2 * self.hidden
        self.norm = self.norm or ("layer" if self.arch == "graphormer" else "batch")
        # Read by make_norm and readout only when the model is built or first run: an unknown value was a
        # ValueError from build_model (outside load_checkpoint's error handling) or, for the readout, an
        # error deep inside torch.onnx's tracing, instead of a ConfigError naming the field.
        if self.norm not in NORMS:
            raise ConfigError(f"norm must be {', '.join(map(repr, NORMS))} (or '' for the default), got {self.norm!r}")
        if self.readout not in READOUTS:
            raise ConfigError(f"readout must be {', '.join(map(repr, READOUTS))}, got {self.readout!r}")
        if self.arch == "gps" and self.local_conv == "gine" and self.edge_features is None:
            self.local_conv = "gin"  # GINE needs edge features; without them it is GIN
        if self.local_conv not in ("gine", "gin", "none"):
            raise ConfigError(f"local_conv must be 'gine', 'gin' or 'none', got {self.local_conv!r}")
        if self.gine_edge_dim not in (0, self.hidden):  # its Linear takes the edge encoding, hidden wide
            raise ConfigError(
                f"gine_edge_dim={self.gine_edge_dim}: 0 (GINE adds the edge encoding as it is) or hidden={self.hidden} "
                "(GINE's own Linear over the edge encoding, which is hidden wide)"
            )
        if self.attention_layout not in ("auto", "sparse", "dense", "fused"):
            raise ConfigError(f"attention_layout must be auto, sparse, dense or fused, got {self.attention_layout!r}")
        if len(self.pe) > 1 and self.pe_dim:
            raise ConfigError("concatenated PE (pe_dim > 0) supports one PE kind; use pe_dim=0 to add several")
        if self.pe_dim and not self.pe:  # the node encoding would be pe_dim columns short of hidden
            raise ConfigError(
                f"pe_dim={self.pe_dim} concatenates a positional encoding, but pe names none; "
                "set pe (e.g. {'rwse': 20}) or pe_dim=0"
            )
        if self.pe_dim >= self.hidden:
            raise ConfigError(f"pe_dim={self.pe_dim} must be smaller than hidden={self.hidden}")
        if self.attention_topk < 0 or (self.attention_topk and self.arch != "gps"):
            raise ConfigError(f"attention_topk={self.attention_topk}: a k >= 0, and only for gps (full attention)")
        if self.attention_score not in ("teddy", "degree"):
            raise ConfigError(f"attention_score must be 'teddy' or 'degree', got {self.attention_score!r}")
        if not self.layers:
            self.layers = [LayerSpec(self.heads, self.ffn_dim) for _ in range(self.num_layers)]
        self.num_layers = len(self.layers)

    def _check_values(self) -> None:
        """Types and ranges of the numeric fields, checked before any arithmetic uses them."""
        for name, least in _MIN_INT.items():
            _check_int(name, getattr(self, name), least, MAX_HEAD_LAYERS if name == "head_layers" else None)
        for w in self.head_widths:
            _check_int("head_widths", w, 1)
        if self.head_widths and len(self.head_widths) != self.head_layers - 1:
            raise ConfigError(
                f"head_widths {self.head_widths} lists {len(self.head_widths)} width(s); a head of head_layers="
                f"{self.head_layers} has {self.head_layers - 1} hidden width(s) (or leave head_widths empty to halve)"
            )
        if not self.layers:  # with explicit layers, num_layers is their count
            _check_int("num_layers", self.num_layers, 1, MAX_LAYERS)
        for name in ("dropout", "attn_dropout"):
            p = getattr(self, name)
            if not isinstance(p, Real) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
                raise ConfigError(f"{name} must be a probability in [0, 1], got {p!r}")
        for name in ("node_features", "edge_features"):
            spec = getattr(self, name)
            if spec is None and name == "edge_features":
                continue
            if not isinstance(spec, FeatureSpec):
                raise ConfigError(f"{name} must be a feature spec ({{'kind': ..., 'dim': ...}}), got {spec!r}")
            if spec.kind not in ("categorical", "float"):
                raise ConfigError(f"{name}.kind must be 'categorical' or 'float', got {spec.kind!r}")
            _check_int(f"{name}.dim", spec.dim, 1)
            if not isinstance(spec.cardinalities, list):
                raise ConfigError(f"{name}.cardinalities must be a list, got {spec.cardinalities!r}")
            for c in spec.cardinalities:
                _check_int(f"{name}.cardinalities", c, 1)
        if not isinstance(self.pe, dict):
            raise ConfigError(f"pe must map a PE kind to its dimension (e.g. {{'lap': 8}}), got {self.pe!r}")
        for kind, dim in self.pe.items():
            if kind not in PE_KINDS:  # deployments compute each kind by name: another would get RWSE's values
                raise ConfigError(f"pe kind {kind!r}: expected {' or '.join(PE_KINDS)}")
            _check_int(f"pe[{kind!r}]", dim, 1)
        for i, spec in enumerate(self.layers):
            if not isinstance(spec, LayerSpec):
                raise ConfigError(
                    f"layers[{i}] must be {{'heads': ..., 'ffn_dim': ..., 'token_keep': ...}}, got {spec!r}"
                )
            _check_int(f"layers[{i}].heads", spec.heads, 0)
            _check_int(f"layers[{i}].ffn_dim", spec.ffn_dim, 0)
            keep = spec.token_keep
            if not isinstance(keep, Real) or isinstance(keep, bool) or not 0.0 < keep <= 1.0:
                raise ConfigError(f"layers[{i}].token_keep must lie in (0, 1], got {keep!r}")

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values; ``head_widths`` only where it is set, so that a model with the
        halving head writes the config.json (and ONNX metadata) it wrote before the field existed, which
        older gtcompress versions still read."""
        d = asdict(self)
        if not d["head_widths"]:
            del d["head_widths"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """The config a :meth:`to_dict` wrote; a key this version has no field for is an
        :class:`UnknownFieldError` naming it (a later gtcompress's field, or a typo in a hand edit)."""
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise UnknownFieldError(f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}")
        return cls(**d)

    @classmethod
    def for_dataset(cls, arch: str, info: DatasetInfo, **overrides: Any) -> ModelConfig:
        """Input/output sizes from the dataset; everything else from ``overrides`` or defaults."""
        return cls(
            arch=arch,
            node_features=info.node_features,
            edge_features=info.edge_features,
            out_dim=info.out_dim,
            task_level=info.task_level,
            **overrides,
        )
