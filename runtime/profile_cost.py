"""The attention memory of one ``gtc profile`` configuration, refused past a limit before anything runs.

A model that attends densely within each graph pads every graph of a call to the largest, and one on
the ``padded`` lowering pads each node's incoming edges to its degree bucket's largest in-degree: a
profile asked for 100,000-node graphs on a dense model needs tens of GiB per layer, which the OOM
killer ends after minutes of positional encodings. ``gtc serve`` refuses such a request with its
``max_attention_mib`` (:mod:`runtime.request_cost`); the profile counts its configurations with the
same per-cell and per-slot costs, on the graphs it will build (:func:`runtime.measure.make_graphs`:
``batch`` graphs of ``nodes`` nodes, the padded lowering's slots read from their in-degrees), and
refuses the first one past the same limit, with the same default, before any model is measured.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gtcompress.preprocess.layouts import degree_histogram, merge_histograms, padded_slots
from gtcompress.preprocess.spec import InputSpec
from runtime.errors import SessionError
from runtime.measure import make_graphs
from runtime.packing import MIB
from runtime.request_cost import TORCH_PLATFORM, attention_bytes, attention_cell_bytes, slot_bytes
from runtime.served import ServerLimits

#: ``gtc serve``'s default, so that a size the profile measures is one the server would answer.
DEFAULT_MAX_ATTENTION_MIB = ServerLimits.max_attention_mib


@dataclass(frozen=True)
class ModelFile:
    """A model's metadata as the costs read it (:class:`runtime.request_cost.CostedModel`), without a
    session: the profile measures each model in a child process, so the parent only reads metadata."""

    path: str
    spec: InputSpec
    metadata: dict[str, str]
    platform: str


def model_file(path: str) -> ModelFile:
    """The :class:`ModelFile` of an exported model (a resolved ``.onnx``/``.plan`` path) or a checkpoint
    directory (loaded with torch, which profiling it needs anyway, as the torch backend serves it)."""
    from runtime.session import PLAN_SUFFIXES, is_checkpoint
    from runtime.spec import model_spec, onnx_metadata, plan_metadata

    if is_checkpoint(path):
        from runtime.torch_backend import load_for_serving

        _, spec, meta = load_for_serving(path)
        return ModelFile(path, spec, meta, TORCH_PLATFORM)
    p = Path(path)
    plan = p.suffix in PLAN_SUFFIXES
    meta = plan_metadata(p) if plan else onnx_metadata(p)
    return ModelFile(path, model_spec(meta, path).spec, meta, "tensorrt_plan" if plan else "onnxruntime_onnx")


def attention_need(model: ModelFile, nodes: int, batch: int, avg_degree: float, seed: int) -> tuple[int, str]:
    """Bytes of one layer's attention in a call of ``batch`` random graphs of ``nodes`` nodes (0 for a
    model on an edge lowering) and what they are, in words for the refusal."""
    cell = attention_cell_bytes(model)
    if cell:
        need, rows = attention_bytes(cell, np.full(batch, nodes, dtype=np.int64), packed=model.spec.packed)
        return need, f"{rows} padded {nodes}x{nodes} attention score matrices at {cell} B a cell"
    cost = slot_bytes(model)
    if not cost:
        return 0, ""
    graphs = make_graphs(model.spec, nodes, batch, avg_degree, seed)
    hist = functools.reduce(merge_histograms, (degree_histogram(g.edge_index[1], g.num_nodes) for g in graphs))
    slots = padded_slots(*hist, model.spec.buckets)
    return slots * cost, f"{slots:,} neighbour-list slots at {cost} B a slot"


def check_attention_memory(
    paths: Sequence[str],
    configs: Sequence[tuple[int, int]],
    avg_degree: float,
    seed: int,
    max_attention_mib: float,
) -> None:
    """Refuse (:class:`SessionError`) the first configuration ``(nodes, batch)`` of any model whose
    attention would take more than ``max_attention_mib`` a layer, smallest sizes first, so that the
    error names the smallest size refused."""
    if not max_attention_mib > 0:
        raise SessionError(f"profile: max_attention_mib must be positive, got {max_attention_mib!r}")
    limit = max_attention_mib * MIB
    for path in paths:
        model = model_file(path)
        for nodes, batch in sorted(configs):
            need, what = attention_need(model, nodes, batch, avg_degree, seed)
            if need > limit:
                raise SessionError(
                    f"profile: {path} at graph size {nodes} and batch size {batch} needs an estimated "
                    f"{need / MIB:,.1f} MiB of attention memory per layer ({what}), above the limit of "
                    f"{max_attention_mib:,g} MiB; choose smaller --sizes or --batch-sizes, or raise "
                    "--max-attention-mib"
                )
