"""The input contract of an exported model: :class:`InputSpec`, with its :class:`Lowering`.

An exported model (ONNX file, TensorRT engine, or a checkpoint served with torch) takes the tensors
a deployment builds per request with :func:`gtcompress.preprocess.inputs.build_inputs`. Which ones,
with which dtypes and widths, and which attention layout they carry is this spec. The exporter
writes it (:func:`exporters.onnx.input_spec`), stores it as JSON in the ONNX ``metadata_props``
(:meth:`InputSpec.to_json`, with a ``version``), and the runtime, preprocessing and the model read
it back (:meth:`InputSpec.from_json`). Everything downstream reads typed fields; the lowering is an
enum, never decoded from which tensor names happen to be present.

:func:`choose_lowering` is the one rule for picking a lowering, used by the exporter (``auto``) and
by a model that was given no layout (eager ``GraphModel.compute``): dense for full attention and
token-pruned models, the fused op on a CUDA device, else the cheapest by the per-element costs
measured on ONNX Runtime CPU (:func:`estimate_costs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np

#: Version of the JSON form. 1: the dict written before the typed spec (no ``version`` key); 2: the
#: same keys plus ``version``. Readers take both.
SPEC_VERSION = 2


class Lowering(StrEnum):
    """How a model's edge attention is laid out; the same function on every one.

    ``scatter``: Gather + ScatterElements. ``padded``: degree-bucketed neighbour lists. ``dense``:
    per-graph padded batch with a log-count mask. ``plugin``: the fused op on CSR (one ONNX node that
    TensorRT runs as our plugin, ONNX Runtime as a function, torch on a GPU as our Triton kernel).
    """

    SCATTER = "scatter"
    PADDED = "padded"
    DENSE = "dense"
    PLUGIN = "plugin"


#: Layout tensors of each lowering (``padded`` with degree buckets: :func:`bucket_inputs`).
LAYOUT_INPUTS: dict[Lowering, tuple[str, ...]] = {
    Lowering.SCATTER: (),
    Lowering.DENSE: ("node_slot", "pad_mask"),
    Lowering.PADDED: ("nbr_src", "nbr_edge", "nbr_mask"),
    Lowering.PLUGIN: ("rowptr", "col", "perm"),
}


def bucket_inputs(buckets: int) -> list[str]:
    """Inputs of the degree-bucketed ``padded`` layout (:func:`~gtcompress.preprocess.layouts.bucketed_layout`)."""
    per = [f"nbr_{what}_{b}" for b in range(buckets) for what in ("node", "src", "edge", "mask")]
    return [*per, "nbr_inv"]


@dataclass(frozen=True)
class FeatureInput:
    """Node or edge features: ``categorical`` int64 columns (``cardinalities``) or ``float`` float32 columns."""

    kind: str
    dim: int
    cardinalities: tuple[int, ...] = ()

    @property
    def dtype(self) -> str:
        return "int64" if self.kind == "categorical" else "float32"

    def to_json(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "kind": self.kind, "dim": self.dim, "cardinalities": list(self.cardinalities)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FeatureInput:
        kind = d.get("kind") or ("categorical" if d.get("dtype") == "int64" else "float")
        return cls(kind=str(kind), dim=int(d["dim"]), cardinalities=tuple(int(c) for c in d.get("cardinalities") or ()))


@dataclass(frozen=True)
class OutputSpec:
    name: str
    dim: int
    per: str  # "node" or "graph"


#: The positional-encoding kinds deployments compute per request (:mod:`gtcompress.preprocess.pe`).
PE_KINDS = ("lap", "rwse")


@dataclass(frozen=True)
class InputSpec:
    """What an exported model takes and returns. Frozen; :meth:`with_teddy` returns a copy."""

    arch: str
    task_level: str
    lowering: Lowering
    x: FeatureInput
    output: OutputSpec
    edge_attr: FeatureInput | None = None
    pe: Mapping[str, int] = field(default_factory=dict)  # kind -> width, e.g. {"lap": 8}
    global_attention: bool = False  # gps, graphormer: also the per-graph padded layout
    buckets: int = 0  # padded: degree buckets of the neighbour lists (0: one unbucketed list)
    packed: bool = False  # dense GT: small graphs share padded rows
    teddy: Mapping[str, Any] | None = None  # TEDDY settings deployments apply to every incoming graph

    def __post_init__(self) -> None:
        object.__setattr__(self, "lowering", Lowering(self.lowering))
        object.__setattr__(self, "pe", dict(sorted(self.pe.items())))
        unknown = [k for k in self.pe if k not in PE_KINDS]
        if unknown:  # each kind is computed per request by name: another name has no computation
            raise ValueError(f"input spec: unknown PE kind {unknown[0]!r}; expected {' or '.join(PE_KINDS)}")
        for kind, width in self.pe.items():  # a width is an array dimension of every request's PE
            if isinstance(width, bool) or not isinstance(width, int) or width < 1:
                raise ValueError(f"input spec: PE {kind!r} width must be a positive integer, got {width!r}")

    @property
    def node_level(self) -> bool:
        return self.output.per == "node"

    @property
    def layout_inputs(self) -> list[str]:
        """The attention layout tensors, in input order."""
        layout = list(LAYOUT_INPUTS[self.lowering])
        if self.lowering is Lowering.PADDED and self.buckets:
            layout = bucket_inputs(self.buckets)
        if self.global_attention and "pad_mask" not in layout:
            layout = ["node_slot", "pad_mask", *layout]
        return layout

    @property
    def inputs(self) -> list[str]:
        """Input names in the model's order."""
        names = ["x", "edge_index"]
        if self.edge_attr is not None:
            names.append("edge_attr")
        names += ["batch", "node_counts"]
        names += [f"pe_{k}" for k in self.pe]
        return names + self.layout_inputs

    def with_teddy(self, teddy: Mapping[str, Any] | None) -> InputSpec:
        return replace(self, teddy=None if teddy is None else dict(teddy))

    def to_json(self) -> dict[str, Any]:
        """The JSON form stored in metadata (``inputs`` included for readers that only want names)."""
        d: dict[str, Any] = {
            "version": SPEC_VERSION,
            "arch": self.arch,
            "task_level": self.task_level,
            "lowering": str(self.lowering),
            "global_attention": self.global_attention,
            "pe": dict(self.pe),
            "x": self.x.to_json(),
            "edge_attr": None if self.edge_attr is None else self.edge_attr.to_json(),
            "output": {"name": self.output.name, "dim": self.output.dim, "per": self.output.per},
        }
        if self.buckets:
            d["buckets"] = self.buckets
        if self.packed:
            d["packed"] = True
        if self.teddy is not None:
            d["teddy"] = dict(self.teddy)
        d["inputs"] = self.inputs
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | InputSpec) -> InputSpec:
        """Read the stored form (version 1 or 2); raises ``ValueError`` naming what is missing or wrong."""
        if isinstance(d, InputSpec):
            return d
        version = int(d.get("version", 1))
        if version > SPEC_VERSION:
            raise ValueError(f"input spec version {version} is newer than this gtcompress reads ({SPEC_VERSION})")
        missing = [k for k in ("arch", "task_level", "lowering", "x", "output") if k not in d]
        if missing:
            raise ValueError(f"input spec lacks {', '.join(missing)}")
        try:
            lowering = Lowering(d["lowering"])
        except ValueError:
            raise ValueError(
                f"input spec: unknown lowering {d['lowering']!r}; expected one of {', '.join(Lowering)}"
            ) from None
        out = d["output"]
        spec = cls(
            arch=str(d["arch"]),
            task_level=str(d["task_level"]),
            lowering=lowering,
            x=FeatureInput.from_json(d["x"]),
            output=OutputSpec(str(out.get("name", "output")), int(out["dim"]), str(out["per"])),
            edge_attr=None if not d.get("edge_attr") else FeatureInput.from_json(d["edge_attr"]),
            pe={str(k): int(v) for k, v in (d.get("pe") or {}).items()},
            global_attention=bool(d.get("global_attention", False)),
            buckets=int(d.get("buckets") or 0),
            packed=bool(d.get("packed", False)),
            teddy=d.get("teddy") or (d.get("preprocess") or {}).get("teddy"),  # version 1 kept it either way
        )
        stored = d.get("inputs")
        if stored is not None and list(stored) != spec.inputs:
            raise ValueError(f"input spec lists inputs {list(stored)} but its fields give {spec.inputs}")
        return spec


# ---------------------------------------------------------------------------------- choosing a lowering
# Milliseconds per unit of work on ONNX Runtime CPU (d=64, 4 heads, 4 layers), re-measured with 1
# thread on the bench/export.py SBM batch after the dense lowering got its Softmax node: attention
# time = total - ~13 ms of per-node layers; scatter 952 ms / 147k edges, padded 186 ms / 241k
# slots, dense 43 ms / 769k pairs. The molecule batch agrees (dense 18.3 ms < padded 21.6 ms).
# Padded re-measured after degree buckets and the folded K/V gather (1 thread, same SBM batch):
# 78 ms / 163k bucketed slots; its 4 buckets x layers of small ops cost a few ms whatever the size
# (molecule batch: padded 21.8 ms > dense 18.8 ms), hence the fixed term.
COST_PER_EDGE_SCATTER = 6.4e-3
COST_PER_SLOT_PADDED = 4.0e-4
COST_FIXED_PADDED = 5.0
COST_PER_PAIR_DENSE = 3.9e-5


#: Eager torch on CPU: the padded score matrix may be this many times the edge count before scatter
#: wins (small dense graphs such as SBMs and molecules run an order of magnitude faster as batched
#: MatMuls; large sparse ones would pad quadratically).
TORCH_DENSE_FACTOR = 8


def estimate_costs(graph: Any) -> dict[Lowering, float]:
    """Estimated attention milliseconds of each ONNX lowering on ONNX Runtime CPU for a batch shaped
    like ``graph`` (a :class:`~gtcompress.preprocess.batching.NumpyGraph`)."""
    from gtcompress.preprocess.layouts import NBR_BUCKETS, bucketed_layout

    counts = np.bincount(graph.batch, minlength=graph.num_graphs) if graph.batch is not None else [graph.num_nodes]
    max_nodes = int(np.max(counts)) if len(counts) else 1
    lay = bucketed_layout(graph.edge_index, graph.num_nodes, NBR_BUCKETS)
    slots = sum(lay[f"nbr_src_{b}"].size for b in range(NBR_BUCKETS))
    return {
        Lowering.SCATTER: COST_PER_EDGE_SCATTER * graph.num_edges,
        Lowering.PADDED: COST_FIXED_PADDED + COST_PER_SLOT_PADDED * slots,
        Lowering.DENSE: COST_PER_PAIR_DENSE * len(counts) * max_nodes**2,
    }


def choose_lowering(
    arch: str,
    *,
    token_pruned: bool = False,
    device: str = "cpu",
    profile: Any = None,
    sizes: tuple[int, int, int] | None = None,
    compiled: bool = False,
) -> Lowering:
    """The one rule for a model's attention layout.

    * Full attention (GPS, Graphormer) and token pruning need the per-graph padded layout: ``dense``.
    * GT on a CUDA device: ``plugin``, the fused op (our Triton kernel).
    * GT exported for ONNX Runtime, given a ``profile`` batch (a ``NumpyGraph``, or a function that
      returns one, called only when this rule needs it: loading a dataset for it costs time): the
      cheapest of scatter, padded and dense by :func:`estimate_costs` (measured ONNX Runtime CPU costs).
    * GT in eager torch on CPU, given ``sizes = (graphs, largest graph's nodes, edges)``: ``dense``
      when the padded score matrix is at most :data:`TORCH_DENSE_FACTOR` times the edge count, else
      ``scatter`` (torch has no bucketed neighbour lists of its own).
    * GT traced by ``torch.compile`` on CPU (``compiled``): ``scatter``. The largest graph's size is
      data to a compiled graph, so the size rule would be a branch on data, which
      ``fullgraph=True`` cannot trace; and one compiled graph serves every batch it is called with,
      where only ``scatter`` holds memory to the edge count (``dense`` pads every graph quadratically).
    * Neither: ``dense``.
    """
    if arch != "gt" or token_pruned:
        return Lowering.DENSE
    if device.startswith("cuda"):
        return Lowering.PLUGIN
    if callable(profile):
        profile = profile()
    if profile is not None:
        costs = estimate_costs(profile)
        return min(costs, key=costs.__getitem__)
    if compiled:
        return Lowering.SCATTER
    if sizes is not None:
        graphs, max_nodes, edges = sizes
        return Lowering.DENSE if graphs * max_nodes**2 <= TORCH_DENSE_FACTOR * max(edges, 1) else Lowering.SCATTER
    return Lowering.DENSE
