"""What one ``gtc profile`` configuration costs (attention memory, positional encodings), refused past a
limit before anything runs.

A model that attends densely within each graph pads every graph of a call to the largest, and one on
the ``padded`` lowering pads each node's incoming edges to its degree bucket's largest in-degree: a
profile asked for 100,000-node graphs on a dense model needs tens of GiB per layer, which the OOM
killer ends after minutes of positional encodings. ``gtc serve`` refuses such a request with its
``max_attention_mib`` (:mod:`runtime.request_cost`); the profile counts its configurations with the
same per-cell and per-slot costs, on the graphs it will build (:func:`runtime.measure.make_graphs`:
``batch`` graphs of ``nodes`` nodes, the padded lowering's slots read from their in-degrees), and
refuses the first one past the same limit, with the same default, before any model is measured.

The positional encodings the profile computes for each call (every kind the model takes: its random
graphs carry none) and a Graphormer's shortest-path distances are held to the server's other two
limits the same way: their work to ``max_pe_work`` (:func:`~gtcompress.preprocess.pe.pe_work`,
:func:`runtime.request_cost.distance_hops`), the encodings' working memory to ``max_inflight_mib``
(:func:`~gtcompress.preprocess.pe.pe_bytes`), which the server charges a raw request's encodings to.
Unbounded, ``--sizes 100000`` on a GT with LapPE (estimated 186 GiB) or RWSE was accepted and ran for
minutes in its first call's encodings.

A TEDDY model's call holds the edges TEDDY keeps of each random graph (the profile's session sparsifies
them as the server does a raw request): its edges and slots are counted on those, and TEDDY's own work
on the edges it scores (:mod:`runtime.call_memory`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gtcompress.preprocess.layouts import degree_histogram, merge_histograms, padded_rows, padded_slots
from gtcompress.preprocess.pe import pe_bytes, pe_work
from gtcompress.preprocess.spec import InputSpec
from runtime.call_memory import TEDDY_EDGE_BYTES
from runtime.edge_cost import call_bytes
from runtime.errors import SessionError
from runtime.measure import graph_edges, make_graphs
from runtime.packing import MIB
from runtime.request_cost import TORCH_PLATFORM, attention_bytes, attention_cell_bytes, distance_hops, slot_bytes
from runtime.served import ServerLimits
from runtime.spec import teddy_config

#: ``gtc serve``'s defaults, so that a size the profile measures is one the server would answer.
DEFAULT_MAX_ATTENTION_MIB = ServerLimits.max_attention_mib
DEFAULT_MAX_PE_WORK = ServerLimits.max_pe_work
DEFAULT_MAX_INFLIGHT_MIB = ServerLimits.max_inflight_mib


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


def called_edges(model: ModelFile, nodes: int, batch: int, avg_degree: float, seed: int) -> list[np.ndarray]:
    """The ``edge_index`` of each random graph of a configuration (:func:`runtime.measure.make_graphs`) as the
    model's call takes it: TEDDY's kept edges where the model has TEDDY."""
    from gtcompress.preprocess.teddy import teddy_mask

    graphs = make_graphs(model.spec, nodes, batch, avg_degree, seed)
    teddy = teddy_config(model.metadata, model.spec, model.path)
    if teddy is None:
        return [g.edge_index for g in graphs]
    masks = (
        teddy_mask(g.edge_index, g.num_nodes, teddy.ratio, g.batch, teddy.per_graph, teddy.threshold) for g in graphs
    )
    return [g.edge_index[:, keep] for g, keep in zip(graphs, masks, strict=True)]


def attention_need(
    model: ModelFile,
    nodes: int,
    batch: int,
    avg_degree: float,
    seed: int,
    called: Callable[[], list[np.ndarray]] | None = None,
) -> tuple[int, str]:
    """Bytes of one layer's attention in a call of ``batch`` random graphs of ``nodes`` nodes (0 for a
    model on an edge lowering) and what they are, in words for the refusal. ``called``: the configuration's
    :func:`called_edges`, where the caller needs them too (built, and TEDDY run on them, once)."""
    cell = attention_cell_bytes(model)
    if cell:
        need, rows = attention_bytes(cell, np.full(batch, nodes, dtype=np.int64), packed=model.spec.packed)
        return need, f"{rows} padded {nodes}x{nodes} attention score matrices at {cell} B a cell"
    cost = slot_bytes(model)
    if not cost:
        return 0, ""
    edges = called() if called is not None else called_edges(model, nodes, batch, avg_degree, seed)
    hist = functools.reduce(merge_histograms, (degree_histogram(ei[1], nodes) for ei in edges))
    slots = padded_slots(*hist, model.spec.buckets)
    return slots * cost, f"{slots:,} neighbour-list slots at {cost} B a slot"


@dataclass(frozen=True)
class PeNeed:
    """What the positional encodings and a Graphormer's shortest-path distances of one call cost, as the
    server counts a raw request's (:func:`runtime.request_cost.pe_memory`, :func:`runtime.request_cost.check_work`)."""

    bytes: int  # the encodings' working memory
    encodings: str  # which, in words ("" for none)
    work: float  # the encodings' and the distances' work, in n^3 steps
    worked: str  # what the work is, in words


def pe_need(model: ModelFile, nodes: int, batch: int, avg_degree: float) -> PeNeed:
    """The :class:`PeNeed` of a call of ``batch`` random graphs of ``nodes`` nodes
    (:func:`runtime.measure.make_graphs`)."""
    counts = np.full(batch, nodes, dtype=np.int64)
    edges = np.full(batch, graph_edges(nodes, avg_degree), dtype=np.int64)
    teddy = teddy_config(model.metadata, model.spec, model.path) is not None  # its edges drop before the PE
    kinds = dict(model.spec.pe)
    need = sum(pe_bytes(kind, counts, edges, k, fewer_edges=teddy) for kind, k in kinds.items())
    work = sum(pe_work(kind, counts, k) for kind, k in kinds.items())
    encodings = f"positional encodings {', '.join(f'pe_{kind}' for kind in kinds)}" if kinds else ""
    worked = [encodings] if kinds else []
    hops = distance_hops(model)
    if hops:
        rows = padded_rows(counts, pack=True) if model.spec.packed else batch
        work += float(hops) * rows * float(nodes) ** 3
        worked.append(f"shortest-path distances ({hops} products of {rows} padded {nodes}x{nodes} matrices)")
    return PeNeed(int(need), encodings, work, " and ".join(worked))


def check_costs(
    paths: Sequence[str],
    configs: Sequence[tuple[int, int]],
    avg_degree: float,
    seed: int,
    max_attention_mib: float,
    max_pe_work: float = DEFAULT_MAX_PE_WORK,
    max_inflight_mib: float = DEFAULT_MAX_INFLIGHT_MIB,
) -> None:
    """Refuse (:class:`SessionError`) the first configuration ``(nodes, batch)`` of any model whose
    attention would take more than ``max_attention_mib`` a layer, or that and what its call holds per
    edge and per node (:mod:`runtime.edge_cost`) together, as the server sums them
    (:mod:`runtime.call_memory`), whose positional encodings would take more than ``max_inflight_mib``
    while computed, or whose encodings and shortest-path distances more than ``max_pe_work`` steps,
    smallest sizes first, so that the error names the smallest size refused."""
    for name, value in (
        ("max_attention_mib", max_attention_mib),
        ("max_pe_work", max_pe_work),
        ("max_inflight_mib", max_inflight_mib),
    ):
        if not value > 0:
            raise SessionError(f"profile: {name} must be positive, got {value!r}")
    limit = max_attention_mib * MIB
    for path in paths:
        model = model_file(path)
        held = call_bytes(model)  # held with the attention's, as the server sums them (runtime.call_memory)
        teddy = teddy_config(model.metadata, model.spec, model.path) is not None
        for nodes, batch in sorted(configs):
            at = f"profile: {path} at graph size {nodes} and batch size {batch} needs an estimated"
            advice = "choose smaller --sizes or --batch-sizes, or raise"
            # the random graphs as the call takes them (TEDDY's kept edges): the slots and the edges count them
            called = functools.cache(functools.partial(called_edges, model, nodes, batch, avg_degree, seed))
            need, what = attention_need(model, nodes, batch, avg_degree, seed, called)
            if need > limit:
                raise SessionError(
                    f"{at} {need / MIB:,.1f} MiB of attention memory per layer ({what}), above the limit of "
                    f"{max_attention_mib:,g} MiB; {advice} --max-attention-mib"
                )
            sent = batch * graph_edges(nodes, avg_degree)
            if teddy and sent * TEDDY_EDGE_BYTES > limit:
                raise SessionError(
                    f"{at} {sent * TEDDY_EDGE_BYTES / MIB:,.1f} MiB of memory for TEDDY to score its {sent:,} edges "
                    f"({TEDDY_EDGE_BYTES} B per edge), above the limit of {max_attention_mib:,g} MiB; {advice} "
                    "--max-attention-mib"
                )
            edges = sum(ei.shape[1] for ei in called()) if teddy else sent
            if (own := held.need(batch * nodes, edges)) + need > limit:
                per, size = held.words(batch * nodes, edges, sent)
                also = f" and {need / MIB:,.1f} MiB of attention memory per layer ({what}), "
                also += f"{(own + need) / MIB:,.1f} MiB in all"
                raise SessionError(
                    f"{at} {own / MIB:,.1f} MiB of memory for its {size} ({per}: {held.what})"
                    f"{also if need and own <= limit else ''}, "
                    f"above the limit of {max_attention_mib:,g} MiB; {advice} --max-attention-mib"
                )
            pe = pe_need(model, nodes, batch, avg_degree)
            if pe.bytes > max_inflight_mib * MIB:
                raise SessionError(
                    f"{at} {pe.bytes / MIB:,.1f} MiB of memory to compute its {pe.encodings}, above the limit of "
                    f"{max_inflight_mib:,g} MiB (gtc serve's --max-inflight-mib); {advice} --max-inflight-mib"
                )
            if pe.work > max_pe_work:
                raise SessionError(
                    f"{at} {pe.work:.4g} steps of work for its {pe.worked}, above the limit of {max_pe_work:.4g} "
                    f"(gtc serve's --max-pe-work); {advice} --max-pe-work"
                )
