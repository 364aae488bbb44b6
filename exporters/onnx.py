"""ONNX export with symbolic graph sizes, one of four attention lowerings, verified before done.

``export_onnx(model, path)`` traces :meth:`GraphModel.compute` with ``torch.onnx.export(dynamo=True)``;
``num_nodes``, ``num_edges``, ``num_graphs`` (and the layout sizes ``max_nodes`` /
``max_in_degree``) stay symbolic. The inputs are what a deployed service computes per request
(:func:`gtcompress.preprocess.inputs.build_inputs`), and their spec is stored in the model's
``metadata_props`` so ``runtime/`` needs nothing else.

Attention lowerings (GT) compute the same function (:mod:`gtcompress.nn.attention`) on different
layouts. GPS and Graphormer export with ``dense`` only: their global attention needs the per-graph
padded layout, for full attention, or, for GPS with ``attention_topk``, to build its sparsified
attention graph (:mod:`gtcompress.nn.attention_edges`), which then runs as a mask on the padded
attention (files exported before this change run it over its pairs, as Gather + ScatterElements).

========  ==========================================  ======================================
scatter   Gather + ScatterElements (add/max)          general; slow on CPU
padded    neighbour lists, per-bucket max in-degree   large sparse graphs, bounded degree
dense     per-graph padded batch + log-count mask     small dense graphs (molecules, SBMs)
plugin    one ``SparseGraphAttention`` node           TensorRT plugin; ORT runs its function
========  ==========================================  ======================================

``auto`` asks :func:`gtcompress.preprocess.spec.choose_lowering`, the one rule (also what a model
given no layout uses): the cheapest of scatter/padded/dense for the profile batch by per-element
costs measured on ONNX Runtime CPU (a 149k-edge SBM batch took 953 ms scattered, 137 ms padded,
36 ms dense). The input spec the exporter writes is a
:class:`~gtcompress.preprocess.spec.InputSpec`, stored as JSON (with its version) in the metadata.

Every export is checked before the file appears: ``onnx.checker`` (full check), ONNX Runtime
parity against PyTorch on each edge case *as a batch of its own* (a batch of edgeless graphs, a lone
edgeless graph, a lone 1-node graph, a 1-node graph with a self-loop, isolated nodes, duplicate edges
and self-loops: :func:`gtcompress.preprocess.random_graphs.edge_case_batches`) and on random batches
mixing them with ordinary graphs. A file that fails one of these is never written; the error names
the lowering, the case and the max |difference| (or ONNX Runtime's error). TensorRT operator support
is checked too, but only reported (``ExportResult.tensorrt_problems``, a warning in ``gtc export``):
the file is right for ONNX Runtime whatever TensorRT can build.
"""

from __future__ import annotations

import copy
import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from exporters.onnx_file import load_model_proto
from exporters.opsupport import tensorrt_problems
from gtcompress import __version__
from gtcompress.errors import ConfigError, GTCompressError
from gtcompress.models.model import GraphModel
from gtcompress.preprocess.batching import NumpyGraph
from gtcompress.preprocess.inputs import build_inputs
from gtcompress.preprocess.layouts import NBR_BUCKETS
from gtcompress.preprocess.legacy_range import HALF_RANGE, MASK_KEY, NORM_KEY, OVERFLOW_KEY, OVERFLOW_NAN, SCALE_SAFE
from gtcompress.preprocess.random_graphs import edge_case_batches, random_batches
from gtcompress.preprocess.spec import FeatureInput, InputSpec, Lowering, OutputSpec, choose_lowering

OPSET = 18  # ScatterElements max/min needs 18 in ONNX Runtime
IR_VERSION = 10  # ONNX Runtime 1.31 rejects newer IR versions


class ExportError(GTCompressError):
    """The exported graph failed a check (the ONNX checker or parity); nothing was written."""


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote and how it was checked: ``batches_checked`` random batches plus
    every case of ``edge_cases`` (names from :data:`~gtcompress.preprocess.random_graphs.EDGE_CASES`)."""

    path: Path
    lowering: Lowering
    spec: InputSpec
    max_abs_err: float
    batches_checked: int
    tensorrt_problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    edge_cases: list[str] = field(default_factory=list)


def input_spec(model: GraphModel, lowering: str | Lowering) -> InputSpec:
    """What an export of ``model`` with ``lowering`` takes and returns."""
    c = model.config
    nf, ef = c.node_features, c.edge_features
    low = Lowering(lowering)
    return InputSpec(
        arch=c.arch,
        task_level=c.task_level,
        lowering=low,
        x=FeatureInput(nf.kind, nf.dim, tuple(nf.cardinalities)),
        edge_attr=None if ef is None else FeatureInput(ef.kind, ef.dim, tuple(ef.cardinalities)),
        output=OutputSpec("output", c.out_dim, "graph" if c.task_level == "graph" else "node"),
        pe=dict(c.pe),
        global_attention=c.arch in ("gps", "graphormer"),
        buckets=NBR_BUCKETS if low is Lowering.PADDED else 0,  # degree buckets of the neighbour lists
        # small graphs share padded rows (attention over input edges only)
        packed=low is Lowering.DENSE and c.arch == "gt" and not has_token_pruning(model),
    )


def attention_description(model: GraphModel) -> str:
    """What a GPS or Graphormer model's attention really attends over, for refusals that explain why only
    the ``dense`` lowering applies (a GPS sparsified by ``gtc sparsify --attention-topk`` no longer uses
    full attention, and saying so would send its user the wrong way)."""
    c = model.config
    if not any(s.heads > 0 for s in c.layers):
        return f"{c.arch} has no attention sublayer left, and its layers still need the per-graph padded layout"
    if c.arch == "gps" and c.attention_topk > 0:
        return (
            f"gps with attention_topk={c.attention_topk} attends over a sparsified attention graph (input edges, "
            f"self-loops and each graph's top-{c.attention_topk} nodes by {c.attention_score} score) that it builds "
            "inside the model on the per-graph padded layout"
        )
    if c.arch == "graphormer":
        return "graphormer uses full attention per graph with shortest-path biases, on the per-graph padded layout"
    return f"{c.arch} uses full attention per graph, on the per-graph padded layout"


def has_token_pruning(model: GraphModel) -> bool:
    return model.token_pruned


class _Traced(nn.Module):
    """Positional-input wrapper that maps the spec's inputs onto :meth:`GraphModel.compute`."""

    def __init__(self, model: GraphModel, spec: InputSpec) -> None:
        super().__init__()
        self.model, self.names, self.lowering = model, spec.inputs, spec.lowering
        self.layout_names = set(spec.layout_inputs)

    def forward(self, *args: Tensor) -> Tensor:
        a = dict(zip(self.names, args, strict=True))
        layout = {k: v for k, v in a.items() if k in self.layout_names}
        pe = {k[3:]: v for k, v in a.items() if k.startswith("pe_")}
        num_graphs = a["node_counts"].shape[0]
        return self.model.compute(
            a["x"], a["edge_index"], a.get("edge_attr"), a["batch"], pe, num_graphs, layout, self.lowering
        )


def _dynamic_shapes(names: list[str], packed: bool = False) -> tuple[dict[str, Any], ...]:
    dim = torch.export.Dim
    n, e, b = dim("num_nodes"), dim("num_edges"), dim("num_graphs")
    lmax, kmax = dim("max_nodes"), dim("max_in_degree")
    rows = dim("pad_rows") if packed else b  # packed: fewer padded rows than graphs
    table: dict[str, dict[int, Any]] = {
        "x": {0: n},
        "edge_index": {1: e},
        "edge_attr": {0: e},
        "batch": {0: n},
        "node_counts": {0: b},
        "node_slot": {0: n},
        "pad_mask": {0: rows, 1: lmax},
        "nbr_src": {0: n, 1: kmax},
        "nbr_edge": {0: n, 1: kmax},
        "nbr_mask": {0: n, 1: kmax},
        "rowptr": {0: n + 1},
        "col": {0: e},
        "perm": {0: e},
    }
    for name in names:  # degree buckets: rows and width of each are their own sizes
        head, _, b = name.rpartition("_")
        if head in ("nbr_src", "nbr_edge", "nbr_mask", "nbr_node") and b.isascii() and b.isdigit():
            rows = table.setdefault(f"nbr_node_{b}", {0: dim(f"bucket{b}_rows")})[0]
            table.setdefault(name, {0: rows, 1: dim(f"bucket{b}_degree")})
    return tuple(table.get(name, {0: n}) for name in names)  # pe_* and nbr_inv are [N, ...]


def _example(spec: InputSpec) -> NumpyGraph:
    """A batch whose every symbolic dimension is >= 2 (size-1 dims get specialised by export)."""
    from gtcompress.preprocess.batching import union_graphs
    from gtcompress.preprocess.random_graphs import random_graph

    rng = np.random.default_rng(0)
    if spec.buckets:
        return _bucket_example(rng, spec.buckets, spec)
    # four graphs; packed into rows of 9 slots they take three (9 | 7+2 | 5), all sizes distinct
    sizes = (7, 5, 9, 2)
    graphs = [random_graph(rng, n, 3 * n, spec.x, spec.edge_attr, self_loops=1, duplicates=2) for n in sizes]
    return union_graphs(graphs)


def _bucket_example(rng: np.random.Generator, buckets: int, spec: InputSpec) -> NumpyGraph:
    """Two graphs whose in-degrees take exactly ``buckets`` values, so that every degree bucket gets its
    own rows and width, all >= 2 and pairwise different (rows 5, 9, 13, …; widths 3, 7, 11, …; two
    graphs): equal example sizes could be traced as one symbol, size 1 would be specialised."""
    from dataclasses import replace

    from gtcompress.preprocess.batching import union_graphs
    from gtcompress.preprocess.random_graphs import random_graph

    deg = np.concatenate([np.full(4 * b + 5, 4 * b + 3) for b in range(buckets)])
    deg = rng.permutation(deg)
    half = deg.size // 2
    graphs = []
    for part in (deg[:half], deg[half:]):
        n = part.size
        dst = np.repeat(np.arange(n), part)
        g = random_graph(rng, n, dst.size, spec.x, spec.edge_attr)
        graphs.append(replace(g, edge_index=np.stack([rng.integers(0, n, dst.size), dst])))
    return union_graphs(graphs)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block, and afterwards every submodule back in its own former mode
    (``train(mode)`` would also flip submodules a training loop keeps in eval, e.g. frozen BatchNorms).
    Export and parity checks need eval mode; the model is the caller's, who may go on training it."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


def to_torch(inputs: dict[str, np.ndarray]) -> list[Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values()]


def check_output_path(path: str | Path) -> Path:
    """Refuse, before any tracing, a ``path`` that no file can be written to: an existing directory (an
    export writes one file and does not choose its name; ``gtc build`` refuses a directory the same way),
    a path below a file, or one in a directory we may not write to (found only by the final write, after
    the whole export, and reported under the temp file's name). A full disk fails at the write."""
    from gtcompress.io import unwritable_reason

    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"{target}: is a directory; give the ONNX file to write, e.g. {target / 'model.onnx'}")
    reason = unwritable_reason(target)
    if reason is not None:
        raise ConfigError(f"{target}: {reason}")
    return target


def check_float32(model: nn.Module) -> None:
    """Refuse, before tracing, a model with floating-point weights other than float32. The exported file
    takes float32 features and PE (its input spec says so), so a float64 model (``from_pyg`` keeps a PyG
    model's dtype) or a half-precision one failed deep inside ONNX shape inference, naming a Gemm node."""
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.is_floating_point() and t.dtype != torch.float32:
            raise ConfigError(
                f"{name} is {str(t.dtype).removeprefix('torch.')}: ONNX export writes float32 models "
                "(inputs, weights and output); convert the model first with model.float()"
            )


def on_cpu(model: nn.Module) -> nn.Module:
    """``model``, or a CPU copy of it when any weight is elsewhere: the export traces and verifies with
    CPU inputs (ONNX Runtime's), so a model on a GPU (``from_pyg`` keeps a PyG model's device) failed
    with a device mismatch. The caller's model stays where it is."""
    if all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()]):
        return model
    return copy.deepcopy(model).cpu()


def export_onnx(
    model: GraphModel,
    path: str | Path,
    lowering: str | Lowering = "auto",
    *,
    profile: NumpyGraph | Callable[[], NumpyGraph | None] | None = None,
    metadata: dict[str, Any] | None = None,
    verify: bool = True,
    verify_batches: int = 10,
    atol: float = 1e-4,
) -> ExportResult:
    """Export ``model`` to the file ``path`` (atomically, only after every check passes; a directory is
    refused, see :func:`check_output_path`). ``model`` is traced and checked in eval mode and left in
    the mode it was in (a model exported between training epochs keeps training as before)."""
    start = time.perf_counter()
    check_output_path(path)
    if lowering == "auto":
        lowering = choose_lowering(model.config.arch, token_pruned=has_token_pruning(model), profile=profile)
    if lowering not in set(Lowering):
        raise ConfigError(f"unknown attention lowering {lowering!r}; expected auto, {', '.join(Lowering)}")
    lowering = Lowering(lowering)
    if model.config.arch != "gt" and lowering is not Lowering.DENSE:
        raise ConfigError(f"{attention_description(model)}: only the 'dense' lowering applies; got {str(lowering)!r}")
    if has_token_pruning(model) and lowering is not Lowering.DENSE:
        raise ConfigError(
            "a token-pruned model exports with the 'dense' lowering only (its per-graph top-k ranks "
            f"nodes on the padded per-graph layout); got {str(lowering)!r}"
        )
    check_float32(model)
    model = on_cpu(model)
    # torch.onnx logs a warning per missing torchvision op on every export; irrelevant here.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with eval_mode(model):  # the caller's model comes back in the mode it was in
        return _export_eval(model, Path(path), lowering, metadata, verify, verify_batches, atol, start)


def _export_eval(
    model: GraphModel,
    path: Path,
    lowering: Lowering,
    metadata: dict[str, Any] | None,
    verify: bool,
    verify_batches: int,
    atol: float,
    start: float,
) -> ExportResult:
    """:func:`export_onnx` after its checks of the arguments, with ``model`` in eval mode."""
    from gtcompress.io import atomic_path

    spec = input_spec(model, lowering)
    if metadata and metadata.get("teddy"):
        spec = spec.with_teddy(metadata["teddy"])  # deployments must sparsify incoming graphs the same way
    names = spec.inputs
    traced = _Traced(model, spec)
    example = build_inputs(_example(spec), spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            traced,
            tuple(to_torch(example)),
            dynamic_shapes=(_dynamic_shapes(names, spec.packed),),
            input_names=names,
            output_names=["output"],
            dynamo=True,
            opset_version=OPSET,
            custom_translation_table=_plugin_translations() if lowering == "plugin" else None,
            verbose=False,
        )
    proto = program.model_proto
    if lowering == "plugin":
        from exporters.plugin_op import add_plugin_function

        add_plugin_function(proto)
    proto.ir_version = min(proto.ir_version, IR_VERSION)
    meta = {
        "gtcompress_version": __version__,
        "model_config": json.dumps(model.config.to_dict()),
        "input_spec": json.dumps(spec.to_json()),
        NORM_KEY: SCALE_SAFE,  # without these, gtcompress.preprocess.legacy_range holds the file to a range
        MASK_KEY: HALF_RANGE,
        OVERFLOW_KEY: OVERFLOW_NAN,
        **{k: v if isinstance(v, str) else json.dumps(v, default=str) for k, v in (metadata or {}).items()},
    }
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
        err, checked, edge_cases = 0.0, 0, []
        if verify:
            edge = edge_case_batches(spec.x, spec.edge_attr)
            batches = random_batches(spec.x, spec.edge_attr, verify_batches)
            cases = [*edge, *((f"random batch {i + 1} of {len(batches)}", g) for i, g in enumerate(batches))]
            try:
                err = check_parity(tmp, model, spec, cases, atol, label=path)
            except ExportError as e:
                raise ExportError(f"{e} — not written") from None
            checked, edge_cases = len(batches), [case for case, _ in edge]
        problems = tensorrt_problems(proto, _plugin_ops() if lowering == "plugin" else frozenset())
    return ExportResult(
        Path(path), lowering, spec, err, checked, problems, time.perf_counter() - start, edge_cases=edge_cases
    )


def check_parity(
    path: str | Path,
    model: GraphModel,
    spec: InputSpec,
    cases: list[tuple[str, NumpyGraph]],
    atol: float = 1e-4,
    *,
    label: str | Path | None = None,
) -> float:
    """Run every named case on ONNX Runtime (CPU) and PyTorch; return the largest max |difference|.

    Raises :class:`ExportError` at the first case that fails, naming the file (``label``, default
    ``path``: export checks a temp file but reports its target), the lowering, the case and either the
    max |difference| or the exception: a case on which ONNX Runtime *raises* is as much a failed check
    as a wrong number (a server would answer 500 there). The tolerance is ``atol`` times max(1, the
    case's largest |PyTorch output|), since float32 rounding grows with the output's magnitude; a NaN
    or infinite difference always fails."""
    model = on_cpu(model)
    with eval_mode(model):
        return _check_parity_eval(path, model, spec, cases, atol, label)


def _check_parity_eval(
    path: str | Path,
    model: GraphModel,
    spec: InputSpec,
    cases: list[tuple[str, NumpyGraph]],
    atol: float,
    label: str | Path | None,
) -> float:
    """:func:`check_parity` with ``model`` in eval mode."""
    sess, traced = _ort_session(path), _Traced(model, spec)
    worst = 0.0
    for case, g in cases:
        head = f"{label or path}: the {str(spec.lowering)!r} lowering fails its check on {case}"
        inputs = build_inputs(g, spec)
        try:
            with torch.no_grad():
                ref = traced(*to_torch(inputs)).numpy()
        except Exception as e:  # the reference itself failed: still a refusal, with the reason in one line
            raise ExportError(f"{head}: PyTorch raised {type(e).__name__}: {_first_line(e)}") from e
        try:
            out = sess.run(None, inputs)[0]
        except Exception as e:  # onnxruntime's pybind errors share no public base class
            raise ExportError(f"{head}: ONNX Runtime raised {_first_line(e)}") from e
        if out.shape != ref.shape:
            raise ExportError(f"{head}: output shape {out.shape} != PyTorch {ref.shape}")
        err = float(np.max(np.abs(out.astype(np.float64) - ref), initial=0.0))
        scale = float(np.max(np.abs(ref), initial=0.0))
        if not np.isfinite(err) or err > atol * max(1.0, scale):
            raise ExportError(
                f"{head}: max |ONNX Runtime - PyTorch| = {err:.3g} > {atol:g} x max(1, max |PyTorch output| = "
                f"{scale:.3g})"
            )
        worst = max(worst, err)
    return worst


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _ort_session(path: str | Path) -> Any:
    """A CPU ``InferenceSession`` (parity is defined on the CPU provider) that logs only fatal errors: a
    failing case is reported once, in the :class:`ExportError`, not also as ONNX Runtime's log lines."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def verify_parity(
    path: str | Path, model: GraphModel, spec: InputSpec, batches: list[NumpyGraph]
) -> tuple[float, float, int]:
    """Max absolute difference between ONNX Runtime (CPU) and PyTorch over ``batches``, and the
    largest |output|: float32 rounding grows with the output's magnitude, so export checks the
    error against ``atol`` times that scale (at least 1). :func:`export_onnx` checks with
    :func:`check_parity` instead, which stops at the first failing case and names it. A NaN output
    on either side makes the difference NaN."""
    sess = _ort_session(path)
    model = on_cpu(model)
    traced = _Traced(model, spec)
    worst, scale = 0.0, 0.0
    for g in batches:
        inputs = build_inputs(g, spec)
        with torch.no_grad(), eval_mode(model):
            ref = traced(*to_torch(inputs)).numpy()
        out = sess.run(None, inputs)[0]
        if out.shape != ref.shape:
            raise ExportError(f"{path}: output shape {out.shape} != PyTorch {ref.shape}")
        if out.size:  # np.maximum keeps a NaN (max(0.0, nan) is 0.0: a NaN output read as a perfect match)
            worst = float(np.maximum(worst, np.abs(out.astype(np.float64) - ref).max()))
            scale = float(np.maximum(scale, np.abs(ref).max()))
    return worst, scale, len(batches)


def read_metadata(path: str | Path) -> dict[str, str]:
    """``metadata_props`` of an ONNX file, without loading its external weights; a file that is not
    a whole ONNX model is a :class:`ModelFileError` naming it (:func:`load_model_proto`)."""
    return {prop.key: prop.value for prop in load_model_proto(path).metadata_props}


def read_spec(path: str | Path) -> InputSpec:
    """The input spec an exported ONNX file carries in its metadata."""
    return InputSpec.from_json(json.loads(read_metadata(path)["input_spec"]))


def _plugin_translations() -> dict[Any, Any]:
    from exporters.plugin_op import translation_table

    return translation_table()


def _plugin_ops() -> frozenset[tuple[str, str]]:
    from exporters.plugin_op import plugin_op_ids

    return plugin_op_ids()
