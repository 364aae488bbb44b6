"""``TorchBackend``: a gtcompress checkpoint run with torch on a device — the GPU path without TensorRT.

On a CUDA device a GT model's attention is ``torch.ops.gtcompress.sparse_graph_attention``, whose
CUDA kernel is the same Triton kernel TensorRT runs as a plugin (:mod:`gtcompress.nn.fused`); on
CPU the op runs the torch reference, which is what CI tests. It plugs into
:class:`runtime.session.GraphSession` like the ONNX Runtime and TensorRT backends, so validation,
TEDDY, batching, PE and the server stay the numpy code every deployment runs.

**Input spec.** The spec the ONNX exporter would write for the checkpoint
(:func:`exporters.onnx.input_spec`): the CSR (``plugin``) lowering for GT, so ``prepare`` builds
``rowptr``/``col``/``perm`` in numpy and the model receives them as its layout; ``dense`` for the
models the exporter only lowers that way (GPS, Graphormer, token-pruned GT). A TEDDY-fine-tuned
checkpoint's ``teddy`` entry goes into the spec as the exporter puts it, so incoming graphs are
sparsified the same way.

**Transfers.** Inputs are staged in pinned host memory and copied with ``non_blocking=True``; the
output comes back with a blocking copy, so :meth:`TorchBackend.run` returns only when the result
is on the host (a timer around it measures real latency).

**CUDA graphs** (``cuda_graphs=True``, CUDA only). A model call is a few dozen small kernels, so
for small batches launch overhead dominates; replaying a captured graph removes it. A graph
fixes every shape, and requests vary, so inputs are padded up to a *bucket*: nodes ``N``, edges
``E`` and graphs ``B`` rounded up to powers of two (at least :data:`MIN_BUCKET`). Padding is exact
for the CSR GT model because every layer is per node (encoders, BatchNorm in eval mode, FFN) or
over edges (attention), and the readout is per graph:

* padded nodes are isolated dummies (zero features and PE) in one extra dummy graph with id ``B``,
  so they never share a readout with a real graph;
* padded edges are self-loops on the *first* dummy node (the bucket always leaves one when edges
  are padded), sorted after every real edge in CSR order, so no real node gains an incoming edge;
  their ``perm`` entries point at the padded (zero) rows of ``edge_attr``;
* ``node_counts`` gets the dummy graph's count and zeros for further empty graphs (its length is
  all the model reads), and the output is sliced back to the real ``N`` nodes / ``B`` graphs.

Calls past :data:`CAPTURE_MAX_NODES` nodes or :data:`CAPTURE_MAX_EDGES` edges run eagerly (replay is
for small, launch-bound batches). Captured graphs are kept in a small LRU (:data:`MAX_GRAPHS` buckets);
each is captured on first use after warm-up calls on a side stream, as ``torch.cuda.graph``'s
documentation prescribes (this also JIT-compiles the Triton kernels before capture). Any other
model — dense lowering (GPS, Graphormer, their TEDDY-on-attention ``attention_topk``) or token
pruning (per-graph top-k that padding would change) — is **refused** with a :class:`SessionError`
saying why, rather than silently falling back to eager: a caller who asked for graph replay gets it
or knows they did not.
The padding functions (:func:`bucket_for`, :func:`pad_inputs`, :func:`unpad_output`) are plain numpy
and are tested on CPU.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from gtcompress.preprocess.inputs import is_layout_input
from gtcompress.preprocess.legacy_range import HALF_RANGE, MASK_KEY, NORM_KEY, OVERFLOW_KEY, OVERFLOW_NAN, SCALE_SAFE
from gtcompress.preprocess.spec import InputSpec, Lowering, choose_lowering
from runtime.backends import TensorInfo
from runtime.errors import SessionError
from runtime.graphs import Limits

MIN_BUCKET = 16
MAX_GRAPHS = 8  # captured CUDA graphs kept (LRU), one per (nodes, edges, graphs) bucket
#: Calls larger than this (the batcher's default soft limits: every merged call fits) run eagerly, not
#: captured. Their time is not launches, and a captured bucket holds its memory pool and pinned staging
#: while it stays in the LRU: a request at the server's hard limits (1M nodes, 10M edges) would capture
#: a 2^20-node, 2^24-edge bucket (edges padded 1.7x), about 670 MiB of pinned host memory alone, and up
#: to :data:`MAX_GRAPHS` such buckets would be held at once.
CAPTURE_MAX_NODES = 8192
CAPTURE_MAX_EDGES = 65536
WARMUP_CALLS = 2  # eager calls on a side stream before a capture
METADATA_KEYS = ("dataset", "metrics", "compression", "teddy")  # what `gtc export` keeps


# ---------------------------------------------------------------------------------- devices
def resolve_device(device: str | None) -> torch.device:
    """``None`` → ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` → the current CUDA device.

    Raises :class:`SessionError` with one sentence for a device that is not there."""
    text = str(device).strip().lower() if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise SessionError(f"device {text!r}: expected cpu, cuda or cuda:N")
    if dev.type == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = (
            f"this torch {torch.__version__} is built without CUDA"
            if torch.version.cuda is None
            else "no GPU or driver found; check CUDA_VISIBLE_DEVICES"
        )
        raise SessionError(f"device {text!r}: no CUDA device is visible to torch ({why})")
    count = torch.cuda.device_count()
    index = torch.cuda.current_device() if dev.index is None else dev.index
    if index >= count:
        raise SessionError(
            f"device {text!r}: torch sees {count} CUDA device{'s' if count > 1 else ''} (cuda:0..{count - 1})"
        )
    return torch.device("cuda", index)


# ---------------------------------------------------------------------------------- checkpoints
def load_for_serving(path: str | Path) -> tuple[Any, InputSpec, dict[str, str]]:
    """``(model in eval mode, input spec, ONNX-like metadata)`` of a checkpoint directory."""
    from exporters.onnx import has_token_pruning, input_spec  # lazy: exporters imports onnx
    from gtcompress.checkpoint import load_checkpoint
    from gtcompress.errors import CheckpointError

    try:
        model, meta = load_checkpoint(path)
    except (CheckpointError, OSError) as e:
        raise SessionError(f"cannot load checkpoint: {e}") from None  # CheckpointError names the file
    # GT runs on the CSR layout on every device (our kernel on CUDA, the same op's reference on CPU),
    # so CPU runs test what GPUs run and CUDA-graph padding applies: the rule's CUDA branch.
    lowering = choose_lowering(model.config.arch, token_pruned=has_token_pruning(model), device="cuda")
    spec = input_spec(model, lowering)
    if meta.get("teddy"):
        spec = spec.with_teddy(meta["teddy"])  # as export_onnx does: incoming graphs are sparsified the same way
    metadata = {
        "gtcompress_version": str(meta.get("gtcompress_version", "")),
        "model_config": json.dumps(model.config.to_dict()),
        "input_spec": json.dumps(spec.to_json()),
        NORM_KEY: SCALE_SAFE,  # the checkpoint runs on this gtcompress's model code
        MASK_KEY: HALF_RANGE,
        OVERFLOW_KEY: OVERFLOW_NAN,
        **{k: json.dumps(meta[k], default=str) for k in METADATA_KEYS if k in meta},
    }
    return model, spec, metadata


def cuda_graphs_refusal(spec: InputSpec) -> str | None:
    """Why padding to a bucket would not be exact for this model (``None``: CUDA graphs apply)."""
    if spec.lowering is not Lowering.PLUGIN:
        what = spec.arch if spec.arch != "gt" else "a token-pruned GT"
        return (
            f"{what} runs on the per-graph dense layout, whose shapes (largest graph) and per-graph "
            "attention (top-k tokens, attention_topk) change with padding; only GT on the CSR layout is padded exactly"
        )
    return None


# ---------------------------------------------------------------------------------- padding
@dataclass(frozen=True)
class Bucket:
    """Padded sizes of one captured graph."""

    nodes: int
    edges: int
    graphs: int


def bucket_size(value: int, minimum: int = MIN_BUCKET) -> int:
    """The power of two ≥ ``value`` (and ≥ ``minimum``)."""
    return max(int(minimum), 1 << max(int(value) - 1, 0).bit_length())


def bucket_for(nodes: int, edges: int, graphs: int, minimum: int = MIN_BUCKET) -> Bucket:
    """Bucket of a batch: each size rounded up to a power of two; padded edges need a dummy node to
    point at, so a batch with no spare node slot moves to the next node bucket; dummy nodes need the
    dummy graph ``B``, so a batch with dummy nodes gets at least ``B + 1`` graph slots."""
    n, e = bucket_size(nodes, minimum), bucket_size(edges, minimum)
    if e > edges and n == nodes:
        n = bucket_size(nodes + 1, minimum)
    b = bucket_size(graphs + 1 if n > nodes else graphs, minimum)
    return Bucket(n, e, b)


def _pad_rows(a: np.ndarray, rows: int, value: int | float = 0) -> np.ndarray:
    if rows == 0:
        return a
    return np.concatenate([a, np.full((rows, *a.shape[1:]), value, dtype=a.dtype)])


def pad_inputs(inputs: dict[str, np.ndarray], bucket: Bucket) -> dict[str, np.ndarray]:
    """The inputs of a CSR GT model padded to ``bucket`` (see the module docstring); same dtypes."""
    n, e, b = inputs["x"].shape[0], inputs["edge_index"].shape[1], inputs["node_counts"].shape[0]
    dn, de, db = bucket.nodes - n, bucket.edges - e, bucket.graphs - b
    if dn < 0 or de < 0 or db < 0 or (de and not dn) or (dn and not db):
        raise ValueError(f"batch of {n} nodes, {e} edges, {b} graphs does not fit {bucket}")
    out: dict[str, np.ndarray] = {}
    for name, a in inputs.items():
        if name in ("x", "edge_attr") or name.startswith("pe_"):
            out[name] = _pad_rows(a, de if name == "edge_attr" else dn)  # zeros (category 0 for int features)
        elif name == "edge_index":
            out[name] = np.concatenate([a, np.full((2, de), n, dtype=a.dtype)], axis=1)  # loops on dummy n
        elif name == "batch":
            out[name] = _pad_rows(a, dn, b)  # every dummy node in the dummy graph b
        elif name == "node_counts":
            extra = np.zeros(db, dtype=a.dtype)
            if dn:
                extra[0] = dn
            out[name] = np.concatenate([a, extra])
        elif name == "rowptr":
            out[name] = _pad_rows(a, dn, bucket.edges)  # dummy n has the de loops; later dummies none
        elif name == "col":
            out[name] = _pad_rows(a, de, n)
        elif name == "perm":
            out[name] = np.concatenate([a, np.arange(e, bucket.edges, dtype=a.dtype)])
        else:
            raise ValueError(f"input {name!r} cannot be padded to a bucket (CSR GT models only)")
    return out


T = TypeVar("T", np.ndarray, torch.Tensor)


def unpad_output(output: T, nodes: int, graphs: int, node_level: bool) -> T:
    """The real rows of a padded run's output (numpy or torch)."""
    return output[: nodes if node_level else graphs]


# ---------------------------------------------------------------------------------- running
def forward(model: Any, tensors: dict[str, torch.Tensor], lowering: Lowering) -> torch.Tensor:
    """:meth:`GraphModel.compute` on a full input set of an input spec with ``lowering`` (names as in
    the spec), like the exporter's wrapper."""
    layout = {k: v for k, v in tensors.items() if is_layout_input(k)}
    pe = {k[3:]: v for k, v in tensors.items() if k.startswith("pe_")}
    num_graphs = tensors["node_counts"].shape[0]
    return model.compute(
        tensors["x"],
        tensors["edge_index"],
        tensors.get("edge_attr"),
        tensors["batch"],
        pe,
        num_graphs,
        layout,
        lowering,
    )


@dataclass
class _Captured:
    graph: Any  # torch.cuda.CUDAGraph
    inputs: dict[str, torch.Tensor]  # static device inputs the graph reads
    host: dict[str, torch.Tensor]  # pinned staging buffers of the same shapes
    output: torch.Tensor  # static device output the graph writes


def _numpy_dtype(name: str, spec: InputSpec) -> str:
    if name == "x":
        return spec.x.dtype
    if name == "edge_attr" and spec.edge_attr is not None:
        return spec.edge_attr.dtype
    if name.startswith("pe_"):
        return "float32"
    return "bool" if name in ("pad_mask", "nbr_mask") else "int64"


def _shape(name: str, spec: InputSpec) -> list[int]:
    if name == "x":
        return [-1, spec.x.dim]
    if name == "edge_attr" and spec.edge_attr is not None:
        return [-1, spec.edge_attr.dim]
    if name.startswith("pe_"):
        return [-1, spec.pe[name[3:]]]
    if name == "edge_index":
        return [2, -1]
    return [-1, -1] if name == "pad_mask" else [-1]


class TorchBackend:
    """A checkpoint on a torch device behind the :class:`runtime.backends.Backend` protocol.

    ``device``: ``cpu``, ``cuda``, ``cuda:N`` or ``None`` (a GPU when torch sees one);
    ``cuda_graphs``: replay captured graphs per padded bucket (CUDA, CSR GT only);
    ``threads``: torch's intra-op threads on CPU (process-wide, as ``torch.set_num_threads``)."""

    platform = "pytorch_libtorch"  # Triton's platform name for torch models

    def __init__(
        self,
        path: str | Path,
        device: str | None = None,
        *,
        cuda_graphs: bool = False,
        threads: int | None = None,
        max_graphs: int = MAX_GRAPHS,
    ) -> None:
        self.device = resolve_device(device)
        if cuda_graphs and self.device.type != "cuda":
            raise SessionError(f"cuda_graphs: CUDA graphs replay on a GPU only; device is {self.device}")
        self.path = Path(path)
        model, self.spec, self.metadata = load_for_serving(self.path)
        if cuda_graphs and (why := cuda_graphs_refusal(self.spec)):
            raise SessionError(f"{self.path}: cuda_graphs refused: {why}")
        if threads and self.device.type == "cpu":
            torch.set_num_threads(int(threads))
        self.model = model.to(self.device).eval()
        self.cuda_graphs = bool(cuda_graphs)
        self.max_graphs = max(1, int(max_graphs))
        self.capture_max_nodes, self.capture_max_edges = CAPTURE_MAX_NODES, CAPTURE_MAX_EDGES
        self.node_level = self.spec.node_level
        kind = f"torch:{self.device}" + (" (cuda graphs)" if self.cuda_graphs else "")
        self.providers = [kind]
        self.inputs = [TensorInfo(n, _numpy_dtype(n, self.spec), _shape(n, self.spec)) for n in self.spec.inputs]
        self.outputs = [TensorInfo(self.spec.output.name, "float32", [-1, self.spec.output.dim])]
        self.limits = Limits()
        self._graphs: OrderedDict[Bucket, _Captured] = OrderedDict()
        self.captures = 0  # CUDA graphs captured so far, evicted ones included
        self._lock = threading.Lock()  # the server's model thread and a profiler may share a session

    def check_shapes(self, inputs: dict[str, np.ndarray]) -> None:
        return None

    def end_profiling(self) -> str | None:
        return None

    @property
    def captured(self) -> list[Bucket]:
        """Buckets with a captured CUDA graph, least recently used first."""
        return list(self._graphs)

    def replays(self, nodes: int, edges: int) -> bool:
        """Whether a call of ``nodes`` nodes and ``edges`` edges (its prepared inputs') replays a CUDA graph:
        with ``cuda_graphs``, up to ``capture_max_nodes`` and ``capture_max_edges`` (:data:`CAPTURE_MAX_NODES`,
        :data:`CAPTURE_MAX_EDGES`); a larger one runs eagerly (``gtc profile`` names such rows, whose
        ``cuda_graphs_captured`` 0 alone read as a capture missed). Counts, not the inputs: the profile knows
        its call's from the timing loop, which prepared it."""
        return self.cuda_graphs and nodes <= self.capture_max_nodes and edges <= self.capture_max_edges

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        name = self.outputs[0].name
        # The device context matters for cuda:N: Triton launches on the current device, not the tensors'.
        on_device = torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()
        with self._lock, torch.inference_mode(), on_device:
            if self.replays(inputs["x"].shape[0], inputs["edge_index"].shape[1]):
                return {name: self._replay(inputs)}
            out = forward(self.model, {k: self._to_device(v) for k, v in inputs.items()}, self.spec.lowering)
            return {name: out.to("cpu").numpy()}  # blocking copy: the result is on the host

    def _to_device(self, a: np.ndarray) -> torch.Tensor:
        a = np.ascontiguousarray(a)
        if self.device.type == "cpu":
            return torch.from_numpy(a if a.flags.writeable else a.copy())
        host = torch.empty(a.shape, dtype=_TORCH_DTYPES[a.dtype.name], pin_memory=True)
        host.numpy()[...] = a
        return host.to(self.device, non_blocking=True)  # the caching host allocator keeps `host` until done

    def _replay(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        n, e, b = inputs["x"].shape[0], inputs["edge_index"].shape[1], inputs["node_counts"].shape[0]
        key = bucket_for(n, e, b)
        padded = pad_inputs(inputs, key)
        cap = self._graphs.get(key)
        if cap is None:
            cap = self._capture(padded)
            self.captures += 1
            self._graphs[key] = cap
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)  # frees that graph's private memory pool
        else:
            self._graphs.move_to_end(key)
            for k, a in padded.items():
                cap.host[k].numpy()[...] = a  # the previous replay's copies finished (blocking output copy)
                cap.inputs[k].copy_(cap.host[k], non_blocking=True)
        cap.graph.replay()
        return unpad_output(cap.output, n, b, self.node_level).to("cpu").numpy()

    def _capture(self, padded: dict[str, np.ndarray]) -> _Captured:
        host = {k: torch.from_numpy(np.ascontiguousarray(a)).pin_memory() for k, a in padded.items()}
        static = {k: h.to(self.device, non_blocking=True) for k, h in host.items()}
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):  # warm-up: lazy init, Triton JIT, cuBLAS handles
            for _ in range(WARMUP_CALLS):
                forward(self.model, static, self.spec.lowering)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            output = forward(self.model, static, self.spec.lowering)
        return _Captured(graph, static, host, output)

    def __repr__(self) -> str:
        return f"TorchBackend({str(self.path)!r}, device={str(self.device)!r}, cuda_graphs={self.cuda_graphs})"


_TORCH_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "float64": torch.float64,
    "int64": torch.int64,
    "int32": torch.int32,
    "bool": torch.bool,
}
