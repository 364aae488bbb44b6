"""A model as the server serves it, and one request checked against it.

:class:`ServedModel` is a session under a name with what the KServe v2 protocol reports about it;
:func:`request_graph` turns one decoded request into the graph the batcher merges, after every
check a bad request must fail with a 400 naming its input (:func:`is_preprocessed` decides between
a raw graph and a full pre-processed input set). Kept apart from :mod:`runtime.server`, which is
the HTTP application around them.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from gtcompress.preprocess.batching import NumpyGraph, graph_ptr
from gtcompress.preprocess.layouts import node_counts as count_nodes
from gtcompress.preprocess.legacy_range import largest_float, legacy_nan_reason, legacy_range
from gtcompress.preprocess.pe import pe_function
from gtcompress.preprocess.spec import InputSpec
from runtime.batcher import DynamicBatcher
from runtime.call_memory import check_before_teddy, check_call_memory
from runtime.edge_cost import call_bytes
from runtime.errors import (
    BatchVectorError,
    DTypeError,
    GraphTooLargeError,
    NonFiniteOutputError,
    ProtocolError,
    SessionError,
    ShapeError,
)
from runtime.feature_range import check_legacy_range, float_inputs
from runtime.graphs import (
    apply_teddy,
    check_batch_vector,
    finite_output,
    nonfinite_parts,
    prepare_validated,
    validate_graph,
)
from runtime.layout_sizes import check_layout_sizes
from runtime.packing import MIB, BatchConfig
from runtime.protocol import PREPROCESSED_PARAMETER, InferRequest
from runtime.request_cost import attention_cell_bytes, check_work, distance_hops, slot_bytes
from runtime.session import GraphSession, is_version_name
from runtime.spec import NUMPY_TO_KSERVE

RAW_INPUTS = ("x", "edge_index", "edge_attr", "batch", "node_counts")  # what a raw-graph request may carry


def mib_bytes(mib: float) -> int:
    """``mib`` MiB as a byte count; one past what a byte count holds (1e306 MiB) is no limit."""
    return int(min(mib * MIB, sys.maxsize))


@dataclass(frozen=True)
class ServerLimits:
    """Hard per-request maxima: a request above them gets 400 (soft batch limits only split batches).

    ``max_body_bytes`` bounds the request body both as received and once ``Content-Encoding``
    decoded; a body past it gets 413 as soon as that is known (:mod:`runtime.body`)."""

    max_nodes: int = 1_000_000
    max_edges: int = 10_000_000
    max_graphs: int = 100_000
    max_body_bytes: int = 512 * 1024 * 1024
    #: One layer's dense attention scores for one request, for a model that attends densely within
    #: each graph (GPS, Graphormer, GT on the dense lowering): its graphs padded to the largest, so
    #: memory grows with the square of the largest graph (a Graphormer's biases and shortest-path
    #: distances, a GT's softmax and edge biases included: :func:`~runtime.request_cost.attention_cell_bytes`).
    #: Past this a request gets 400 rather than the server's memory (a 40,000-node graph on a 4-head
    #: GPS would need 36 GiB per layer on ONNX Runtime, 72 on torch). A model on the ``padded``
    #: lowering is held to it too: its
    #: neighbour lists' slots (each node's incoming edges padded to its degree bucket's largest in-degree) times
    #: :func:`~runtime.request_cost.slot_bytes`; a heavy-tailed 1M-node graph within the node and edge
    #: limits takes 88M slots, tens of GiB on a 64-wide model. So is what every model holds per edge
    #: and per node (:mod:`runtime.edge_cost`: a GT's attention on an edge lowering, a GPS's local message
    #: passing, every model's node rows): within the edge limit, a request took 26 GiB on a hidden-64 GT
    #: exported ``scatter``. The limit holds their sum, cells or slots and edges and nodes together
    #: (:mod:`runtime.call_memory`).
    max_attention_mib: float = 2048.0
    #: Work of the positional encodings the server computes for one raw request, in ``n^3`` steps of
    #: its graphs (:func:`~gtcompress.preprocess.pe.pe_work`: LapPE ``n^3`` a graph, RWSE ``(k-1) n^3``,
    #: plus a fixed cost per graph; about 30 G a second on one core). Past this a request gets 400
    #: before any is computed: within the node and edge limits, one 8,000-node random graph's LapPE
    #: took 60 s, a 100,000-node path's minutes, a 20,000-node star's RWSE 44 s, 500 graphs of 2,000
    #: nodes 2 minutes of LapPE (40 of RWSE), 100,000 graphs of 10 nodes 15 s of LapPE. 1.5e11 lets
    #: one 2,000-node graph with 16 RWSE steps through (about 5 s), or 3,300 nodes of LapPE. A
    #: request carrying its ``pe_*`` (pre-processed) costs nothing here.
    max_pe_work: float = 1.5e11
    #: Request bytes (bodies as received or decoded, whichever is larger) the server holds at once,
    #: from the first byte read to the answer: past it a request gets 503 instead of being read, so
    #: memory stays bounded however many clients send at once or stall mid-body. Never less than
    #: ``max_body_bytes`` in effect (the largest body allowed is read when it is alone). A JSON
    #: body is charged what parsing it takes until it is parsed (:func:`~runtime.protocol.json_parse_bytes`;
    #: 413 past the whole budget), then its body and arrays; binary tensor data is charged its JSON
    #: head's parsing too, so a budget equal to ``max_body_bytes`` refuses the largest bodies (413).
    #: The positional encodings the server computes for a raw request are charged too while they run
    #: (:func:`~runtime.request_cost.pe_memory`; 503 past what the others leave, 400 past it alone), and
    #: so is the answer, from before the model runs until the client has taken it
    #: (:func:`~runtime.request_cost.answer_bytes`).
    max_inflight_mib: float = 2048.0
    #: Seconds a request body may stop arriving (before its first byte or between two chunks) before
    #: the request gets 408 and its connection is closed. The HTTP server times out neither headers
    #: nor bodies: a client that stalled mid-body held its share of ``max_inflight_mib`` for as long
    #: as it stayed connected, and a few such clients kept every other request at 503.
    body_timeout_s: float = 60.0

    @property
    def inflight_bytes(self) -> int:
        """The budget of :attr:`max_inflight_mib` in bytes, at least one largest body."""
        return max(mib_bytes(self.max_inflight_mib), self.max_body_bytes)


@dataclass
class ServedModel:
    """A session under a name, with its batcher and the metadata the protocol reports."""

    name: str
    session: GraphSession
    batch: BatchConfig = field(default_factory=BatchConfig)
    version: str = "1"
    batcher: DynamicBatcher | None = None

    def __post_init__(self) -> None:
        lim = self.session.limits  # a TensorRT profile bounds what one merged call may hold
        self.edge_cost = call_bytes(self.session)  # bytes a node and an edge: runtime.edge_cost
        self.batch = replace(
            self.batch,
            max_nodes=min(self.batch.max_nodes, lim.max_nodes or self.batch.max_nodes),
            max_edges=min(self.batch.max_edges, lim.max_edges or self.batch.max_edges),
            max_graphs=min(self.batch.max_graphs, lim.max_graphs or self.batch.max_graphs),
            attention_cell_bytes=attention_cell_bytes(self.session),
            packed_rows=self.session.spec.packed,
            slot_bytes=slot_bytes(self.session),
            slot_buckets=self.session.spec.buckets,
            node_bytes=self.edge_cost.node,
            edge_bytes=self.edge_cost.edge,
        )
        # a served session lives long: a call past the batch limits gives its memory back when it ends
        self.session.shrink_arena_above(self.batch.max_nodes, self.batch.max_edges)
        self.inputs = {t.name: t for t in self.session.get_inputs()}
        self.expect = {t.name: (NUMPY_TO_KSERVE[t.dtype], tuple(t.shape)) for t in self.inputs.values()}
        self.output_names = frozenset(t.name for t in self.session.get_outputs())
        self.required = [n for n in ("x", "edge_index", "edge_attr") if n in self.inputs]
        self.raw_inputs = frozenset(n for n in RAW_INPUTS if n in self.inputs)
        self.distance_hops = distance_hops(self.session)
        meta, lowering = self.session.metadata, self.session.spec.lowering
        self.legacy_range = legacy_range(meta, lowering)
        self.legacy_nan = legacy_nan_reason(meta, lowering, tensorrt=self.session.platform == "tensorrt_plan")

    def hold_to(self, limits: ServerLimits) -> None:
        """Cap the batcher's memory limit at the server's per-request ``max_attention_mib``: a merged call
        holds the requests it answers together (:func:`runtime.packing.fits`), and each of them alone is
        held to the server's limit (:mod:`runtime.call_memory`), so the merge must not hold more than one
        request may. Called by every server once its limits are known (``gtc serve``, Triton's python
        backend), not left to the caller that builds the batch configuration."""
        cap = min(self.batch.max_attention_mib, limits.max_attention_mib)
        self.batch = replace(self.batch, max_attention_mib=cap)

    def check_input(self, name: str, datatype: str) -> None:
        """Refuse an input this model does not have, or of another datatype: called by the decoder
        before the input's data is read (:func:`runtime.protocol.parse_infer_request`), so a tensor
        the model could never take (BYTES, an unknown name) costs no memory to refuse."""
        want = self.expect.get(name)
        if want is None:
            raise ProtocolError(
                f"input '{name}' is not an input of model '{self.name}'; its inputs are {', '.join(self.inputs)}"
            )
        if datatype != want[0]:
            raise DTypeError(name, f"datatype {datatype} does not match the model's {want[0]}")

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": self.session.platform,
            "inputs": [_tensor_meta(t.name, t.dtype, t.shape) for t in self.session.get_inputs()],
            "outputs": [_tensor_meta(t.name, t.dtype, t.shape) for t in self.session.get_outputs()],
        }

    def config(self) -> dict[str, Any]:
        """Triton's model configuration JSON for the same model (as ``GET .../config`` returns it)."""

        def tensor(t: Any) -> dict[str, Any]:
            return {"name": t.name, "data_type": f"TYPE_{NUMPY_TO_KSERVE[t.dtype]}", "dims": list(t.shape)}

        spec = self.session.spec.to_json()
        if self.session.model.teddy is not None:  # clients building full input sets must sparsify too
            spec.setdefault("teddy", self.session.model.teddy.to_dict())
        return {
            "name": self.name,
            "platform": self.session.platform,
            "backend": self.session.platform.split("_")[0],  # onnxruntime, tensorrt or pytorch (a checkpoint)
            "max_batch_size": 0,
            "input": [tensor(t) for t in self.session.get_inputs()],
            "output": [tensor(t) for t in self.session.get_outputs()],
            "parameters": {
                "gtcompress_input_spec": {"string_value": json.dumps(spec)},
                "gtcompress_preprocessing": {"string_value": "either"},  # raw graphs or full input sets
            },
            "dynamic_batching": None
            if not self.batch.enabled
            else {"graph_aware": True, "max_queue_delay_microseconds": int(self.batch.max_delay_ms * 1000)},
        }


def _tensor_meta(name: str, dtype: str, shape: list[int]) -> dict[str, Any]:
    return {"name": name, "datatype": NUMPY_TO_KSERVE.get(dtype, dtype.upper()), "shape": list(shape)}


# ---------------------------------------------------------------------------------- request → graph
def default_model_name(path: str | Path) -> str:
    """The name a model file is served under when none is given: its stem, the model's directory in
    a Triton repository layout (``<name>/<version>/model.onnx``), or a checkpoint's directory (named
    by the directory or one of its files)."""
    from runtime.session import is_checkpoint

    p = Path(path)
    if p.name in ("model.onnx", "model.plan") and is_version_name(p.parent.name):
        return p.parent.parent.name
    if p.is_file() and is_checkpoint(p):  # runs/gt/config.json is the checkpoint runs/gt, not a model "config"
        return directory_name(p.parent)
    # a directory (a checkpoint, a Triton model directory) is its whole name: runs/gt-keep0.5 is not "gt-keep0"
    return directory_name(p) if p.is_dir() else p.stem


def directory_name(p: Path) -> str:
    """A directory's name as the user gave it, with ``.`` and ``..`` read (``gtc serve .`` in the
    checkpoint is its directory's name, not ""). Symbolic links are not followed: ``resolve()`` named
    ``runs/best -> gt-2024`` "gt-2024", so ``gtc serve runs/best`` answered 404 on /v2/models/best."""
    return Path(os.path.abspath(p)).name


def request_graph(
    req: InferRequest, model: ServedModel, limits: ServerLimits, *, raw_only: bool = False, teddy: bool = True
) -> tuple[NumpyGraph, int, bool]:
    """The request's graphs as one validated union, its graph count, and whether it came pre-processed.

    ``raw_only``: the request is a raw graph whatever it carries (a Triton Python-backend model
    declares only the raw inputs and the graphs' own ``pe_*``), so TEDDY always runs. ``teddy``
    False: TEDDY (which may compute encodings of the unsparsified graph) and the model's size check
    after it are left to the caller (:func:`finish_graph`), which charges their memory first
    (:func:`runtime.request_cost.pe_memory`)."""
    inputs = req.inputs
    expect = model.expect
    for name, arr in inputs.items():
        model.check_input(name, req.datatypes[name])  # again: a request may come from elsewhere than HTTP
        shape = expect[name][1]
        if arr.ndim != len(shape) or any(d >= 0 and d != a for d, a in zip(shape, arr.shape, strict=True)):
            raise ShapeError(name, f"shape {list(arr.shape)} does not match the model's {list(shape)} (-1: any)")
    for name in model.required:
        if name not in inputs:
            needs = ", ".join(model.required)
            raise ShapeError(name, f"required input is missing (model '{model.name}' needs {needs})")
    if req.outputs is not None:
        outs = model.output_names
        for o in req.outputs:
            if o.name not in outs:
                have = ", ".join(sorted(outs))
                raise ProtocolError(
                    f"output '{o.name}' is not an output of model '{model.name}'; its outputs are {have}"
                )
    full = False if raw_only else is_preprocessed(inputs, model, declared_preprocessed(req))
    x = inputs["x"]
    n = int(x.shape[0])
    e = int(inputs["edge_index"].shape[1])
    counts = inputs.get("node_counts")
    b_hint = 1 if counts is None else int(counts.shape[0])
    for what, value, limit in (("nodes", n, limits.max_nodes), ("edges", e, limits.max_edges)):
        if value > limit:
            raise GraphTooLargeError(
                "x" if what == "nodes" else "edge_index", f"request has {value} {what}, above this server's {limit}"
            )
    if b_hint > limits.max_graphs:
        raise GraphTooLargeError("node_counts", f"request has {b_hint} graphs, above this server's {limits.max_graphs}")
    batch = inputs.get("batch")
    if batch is not None:
        batch = check_batch_vector(batch, n)
    if counts is not None:
        counts = np.asarray(counts, dtype=np.int64)
        if b_hint == 1:  # one graph (the common request): a scalar check each
            if counts[0] <= 0:
                raise BatchVectorError("node_counts", "every graph needs at least one node (a count is <= 0)")
            if counts[0] != n:
                raise BatchVectorError("node_counts", f"counts sum to {int(counts[0])} but x has {n} nodes")
            if batch is None:
                batch = np.zeros(n, dtype=np.int64)
            elif n and batch[n - 1] != 0:
                raise BatchVectorError("node_counts", "does not match the graph sizes given by 'batch'")
        else:
            if (counts <= 0).any():
                raise BatchVectorError("node_counts", "every graph needs at least one node (a count is <= 0)")
            if (counts > n).any():  # bounded first, so the sum below cannot wrap around int64
                i = int(np.flatnonzero(counts > n)[0])
                raise BatchVectorError("node_counts", f"graph {i} has {int(counts[i])} nodes but x has only {n}")
            if int(counts.sum()) != n:
                raise BatchVectorError("node_counts", f"counts sum to {int(counts.sum())} but x has {n} nodes")
            if batch is None:
                batch = np.repeat(np.arange(counts.shape[0], dtype=np.int64), counts)
            elif not np.array_equal(count_nodes(batch, n, counts.shape[0]), counts):
                raise BatchVectorError("node_counts", "does not match the graph sizes given by 'batch'")
    num_graphs = 1 if batch is None else (int(batch[-1]) + 1 if batch.size else 1)
    if num_graphs > limits.max_graphs:  # 'batch' alone (no node_counts) names as many graphs as nodes
        raise GraphTooLargeError("batch", f"request has {num_graphs} graphs, above this server's {limits.max_graphs}")
    counts = count_nodes(batch, n, num_graphs)  # graph sizes, for the layout, attention and work bounds
    check_layout_sizes(inputs, n, e, num_graphs, max(int(counts.max()), 1) if counts.size else 1)
    if teddy_runs(model, full):  # the call holds the edges TEDDY keeps
        check_before_teddy(model, limits, counts, inputs["edge_index"], n)  # the sum again in finish_graph
    else:
        check_call_memory(model, limits, counts, inputs["edge_index"], n, e)  # cells or slots, edges and nodes
    spec = model.session.spec
    check_work(model, limits, inputs, counts, raw_only=raw_only, full=full)
    g = NumpyGraph(
        x=x,
        edge_index=inputs["edge_index"],
        edge_attr=inputs.get("edge_attr"),
        batch=batch,
        pe={k[3:]: v for k, v in inputs.items() if k.startswith("pe_")},
    )
    g = validate_graph(g, spec, batch_checked=True)
    if model.legacy_range is not None:
        check_legacy_range(g, model.name, model.legacy_range)
    if teddy:
        g = finish_graph(g, model, limits, num_graphs, full)
    return g, num_graphs, full


def teddy_runs(model: ServedModel, full: bool) -> bool:
    """Whether the server sparsifies a request with TEDDY: a raw one (not ``full``: pre-processed, TEDDY
    applied by the client) to a model fine-tuned on sparsified graphs."""
    return not full and model.session.model.teddy is not None


def finish_graph(
    g: NumpyGraph, model: ServedModel, limits: ServerLimits, num_graphs: int, full: bool, *, pe: bool = False
) -> NumpyGraph:
    """A validated request's graph TEDDY-sparsified (a raw graph to a TEDDY model) and then held to what its
    call may hold (``limits``, on the edges kept: :mod:`runtime.call_memory`), checked against the model's
    size limits, and with ``pe`` its missing encodings computed (:func:`ensure_pe`)."""
    spec = model.session.spec
    if teddy_runs(model, full):
        sent = g.num_edges
        g = apply_teddy(g, model.session.model.teddy, spec)
        counts = count_nodes(g.batch, g.num_nodes, num_graphs)
        check_call_memory(model, limits, counts, g.edge_index, g.num_nodes, g.num_edges, sent_edges=sent)
    model.session.limits.check(g.num_nodes, g.num_edges, num_graphs, what="request")
    return ensure_pe(g, spec, num_graphs) if pe else g


def declared_preprocessed(req: InferRequest) -> bool | None:
    """The request's own word on whether it is pre-processed (request parameter
    :data:`PREPROCESSED_PARAMETER`, a boolean), or None when it does not say."""
    value = req.parameters.get(PREPROCESSED_PARAMETER)
    if value is None or isinstance(value, bool):
        return value
    raise ProtocolError(f"request parameter '{PREPROCESSED_PARAMETER}' must be true or false, got {json.dumps(value)}")


def is_preprocessed(inputs: dict[str, np.ndarray], model: ServedModel, declared: bool | None = None) -> bool:
    """Whether a request (whose names are all inputs of ``model``) is pre-processed or a raw graph.

    ``pe_*`` and the attention layout tensors are made only by pre-processing (what
    :func:`runtime.client.make_inputs` and Triton clients compute), so they mark a pre-processed set:

    * **raw graph** — only ``x``, ``edge_index``, ``edge_attr`` (when the model has edge features)
      and, for several graphs, ``batch`` and/or ``node_counts``: the server runs the pre-processing
      (TEDDY, PE, layout);
    * **pre-processed** — every input of the model: taken as is (TEDDY already applied), as Triton
      takes it;
    * anything in between — some pre-processing output but not every model input — is refused
      with a :class:`ProtocolError` (HTTP 400) naming the missing inputs: it is a pre-processed set
      with a tensor dropped, and running TEDDY on it would sparsify the graph a second time.

    A model whose inputs are all raw ones (scatter lowering, no PE) cannot tell the two apart when
    both ``batch`` and ``node_counts`` are sent. Without TEDDY both readings give the same answer;
    with TEDDY they do not (TEDDY runs or not), so such a request must say which with the request
    parameter ``gtcompress_preprocessed`` (``declared``; :func:`runtime.client.infer_graphs` sends
    it when it pre-processes) or send only one of the two; otherwise it gets a 400 rather than a
    guess. Taking it as pre-processed, the Python-backend Triton model (which always runs TEDDY)
    and ``gtc serve`` answered the same raw request differently."""
    if declared is not None:
        if declared and len(inputs) != len(model.expect):
            missing = [n for n in model.inputs if n not in inputs]
            raise ProtocolError(
                f"model '{model.name}': the request says '{PREPROCESSED_PARAMETER}': true but lacks "
                f"{', '.join(missing)}; a pre-processed request carries every model input"
            )
        if not declared and any(n not in model.raw_inputs for n in inputs):
            made = [n for n in inputs if n not in model.raw_inputs]
            raise ProtocolError(
                f"model '{model.name}': the request says '{PREPROCESSED_PARAMETER}': false but carries "
                f"{', '.join(made)}, which only pre-processing makes; send the raw graph only"
            )
        return declared
    if len(inputs) == len(model.expect):
        if model.session.model.teddy is not None and all(n in model.raw_inputs for n in inputs):
            raise ProtocolError(
                f"model '{model.name}' runs TEDDY on raw graphs, and a request with both batch and node_counts "
                "could be a raw graph or a TEDDY-sparsified input set: send batch or node_counts alone for a raw "
                f"graph, or say which with the request parameter '{PREPROCESSED_PARAMETER}' (true or false)"
            )
        return True
    carried = [n for n in model.inputs if n in inputs and n not in model.raw_inputs]
    if not carried:
        return False
    missing = [n for n in model.inputs if n not in inputs]
    raise ProtocolError(
        f"model '{model.name}': incomplete pre-processed request: it carries {', '.join(carried)} but lacks "
        f"{', '.join(missing)}; send every model input (as runtime.client.make_inputs builds them) or only the raw "
        f"graph: {', '.join(model.required)}, optionally batch and/or node_counts"
    )


def ensure_pe(g: NumpyGraph, spec: InputSpec, num_graphs: int) -> NumpyGraph:
    """Compute the model's PE kinds the graph does not carry (per request, so merging just concatenates)."""
    missing = [k for k in spec.pe if k not in g.pe]
    if not missing:
        return g
    ptr = graph_ptr(g.batch, g.num_nodes, num_graphs)
    pe = dict(g.pe)
    for kind in missing:
        fn = pe_function(kind)
        pe[kind] = fn(g.edge_index, ptr, spec.pe[kind])
    return NumpyGraph(g.x, g.edge_index, g.edge_attr, g.batch, pe)


# ---------------------------------------------------------------------------------- the model call
class GraphItem(Protocol):
    """A request's validated graphs: a :class:`runtime.batcher.BatchItem`, or a Triton request's."""

    graph: NumpyGraph
    num_graphs: int


def run_items(model: ServedModel, items: Sequence[GraphItem]) -> list[np.ndarray | NonFiniteOutputError]:
    """One model call over the union of ``items``; one output slice per item (worker thread), or the
    :class:`NonFiniteOutputError` of an item whose answer, computed alone, holds NaN or infinity.

    PE no item carries is computed here for the whole union at once (small raw requests come without
    it: per request, its fixed costs outweigh the encoding itself); a kind only some items carry, for
    the others alone (:func:`runtime.graphs.fill_partial_pe`), so none is computed twice or replaced.

    A request the model overflows on (finite features of 1e30) turns NaN, and in a merged call can take
    the requests packed beside it along (GT's dense rows: 0 * NaN): those are run again alone, and what
    is still not finite is refused rather than answered, since a client reads NaN as an answer."""
    outs = _run_merged(model, items)
    answers: list[np.ndarray | NonFiniteOutputError] = list(outs)
    for k in nonfinite_parts(outs):
        alone = _run_merged(model, [items[k]])[0] if len(items) > 1 else outs[k]
        answers[k] = alone if finite_output(alone) else _refusal(model, items[k], alone)
    return answers


def _run_merged(model: ServedModel, items: Sequence[GraphItem]) -> list[np.ndarray]:
    graphs = [it.graph for it in items]
    prepared = prepare_validated(graphs, model.session.model)
    prepared.graphs = [it.num_graphs for it in items]
    out = model.session.run_inputs(prepared.inputs)[model.session.output_name]
    if len(items) == 1:
        return [out]
    sizes = prepared.nodes if model.session.node_level else prepared.graphs
    return np.split(out, np.cumsum(np.asarray(sizes, dtype=np.int64))[:-1])


def _refusal(model: ServedModel, item: GraphItem, out: np.ndarray) -> NonFiniteOutputError:
    """The 400 for an item whose answer alone holds NaN or infinity, naming its largest float input."""
    bad = int(out.size - np.isfinite(out).sum())
    top = largest_float(float_inputs(item.graph))
    if top is None:  # no float input to blame: the model itself does not compute
        raise SessionError(
            f"model '{model.name}' answered with {bad} NaN or infinite values of {out.size} for a request "
            "without float features; the model file is broken"
        )
    name, peak = top
    return NonFiniteOutputError(
        name,
        f"model '{model.name}' answers this request with {bad} NaN or infinite values of {out.size}: its "
        f"inputs are finite, but their largest magnitude, {peak:.3g} (here), is beyond what the model computes "
        f"in float32{f' ({model.legacy_nan})' if model.legacy_nan else ''}; send features on the scale the model "
        "was trained on",
    )


# ---------------------------------------------------------------------------------- metrics
