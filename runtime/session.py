"""``GraphSession``: run an exported graph model on raw graphs, without torch.

Feels like ONNX Runtime's ``InferenceSession`` (a path and an ordered provider list) but takes
graphs, not tensors::

    sess = GraphSession("gt.onnx")                      # TensorRT EP > CUDA EP > CPU
    outs = sess.run([g1, g2, g3])                       # one output array per graph
    sess = GraphSession("gt.plan")                      # a TensorRT engine (needs TensorRT + GPU)
    sess = GraphSession("gt.plan", device="cuda:1")     # ... on the second GPU
    sess = GraphSession("runs/gt", device="cuda")       # a checkpoint on a GPU with torch (+ our kernel)

Per call: each graph is validated against the input spec in the model's metadata (dtype, shape,
edge ids in range, finite features, categorical values in range — :mod:`runtime.errors`),
sparsified with TEDDY if the model was fine-tuned that way, merged into one disjoint union
(offset edge ids, ``batch`` vector), turned into the model's inputs (PE, attention layout) by
:func:`gtcompress.preprocess.inputs.build_inputs`, run once, and the output split back per graph:
node-level ``[n_i, out]``, graph-level ``[out]`` (``[g_i, out]`` for an item that is itself a
union with a ``batch`` vector); a graph whose output holds NaN or inf is run again alone, so a graph the
model overflows on cannot spread NaN to the graphs merged with it. :meth:`GraphSession.prepare` and
:meth:`GraphSession.run_inputs` expose the two halves (the profiler times them separately).

``threads``/``inter_op_threads`` set ONNX Runtime's thread pools; ``spinning=False`` stops idle
intra-op threads from busy-waiting, which a server (whose event loop needs the same cores) wants.

A gtcompress *checkpoint* (the directory ``gtc train``/``gtc prune`` write), or any path but a
TensorRT plan given with ``device=``, runs on :class:`runtime.torch_backend.TorchBackend` — torch and our kernel on a
GPU without TensorRT (``cuda_graphs=True`` replays captured CUDA graphs per padded size bucket).
That module, and with it torch, is imported only then: this module never imports torch.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gtcompress.errors import json_limit
from gtcompress.preprocess.batching import NumpyGraph
from gtcompress.preprocess.spec import InputSpec, Lowering
from runtime.backends import Backend, OrtBackend, ProviderArg, TensorInfo, TensorRTBackend
from runtime.errors import SessionError, ShapeError
from runtime.graphs import Limits, Prepared, as_numpy_graph, nonfinite_parts, prepare, split_output
from runtime.spec import ModelSpec, model_spec, plan_metadata

PLAN_SUFFIXES = (".plan", ".engine", ".trt")
# gtcompress.checkpoint's file names and format tag, repeated here because that module imports torch
CHECKPOINT_FILES = ("config.json", "model.safetensors")
CHECKPOINT_FORMAT = "gtcompress-checkpoint"


def is_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a gtcompress checkpoint: a directory (or one of its two files) whose
    ``config.json`` says ``"format": "gtcompress-checkpoint"``. Reads only that JSON file."""
    p = Path(path)
    if p.is_file() and p.name in CHECKPOINT_FILES:
        p = p.parent
    cfg = p / CHECKPOINT_FILES[0]
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("format") == CHECKPOINT_FORMAT
    except (OSError, ValueError, AttributeError, RecursionError):  # RecursionError: JSON nested too deeply
        return False


def _not_checkpoint(cfg: Path) -> str:
    """Why ``cfg``, a directory's ``config.json``, does not make it a checkpoint (:func:`is_checkpoint`
    said so): a checkpoint whose config.json was cut short or hand-edited into invalid JSON was served
    as "directory holds no <version>/model.onnx", which sent the user looking for an ONNX file."""
    try:
        doc = json.loads(cfg.read_bytes().decode("utf-8"))
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    except UnicodeDecodeError:
        return "not valid JSON (not UTF-8 text)"
    except json.JSONDecodeError as e:
        return f"not valid JSON ({e})"
    except (RecursionError, ValueError) as e:
        return f"not valid JSON ({json_limit(e)})"
    if not isinstance(doc, dict):
        return "not a JSON object"
    return f"its format is {doc.get('format')!r}, not {CHECKPOINT_FORMAT!r}"


def is_version_name(name: str) -> bool:
    """A Triton version folder's name: ASCII digits (``str.isdigit`` alone also takes '²', which ``int``
    then refuses with a traceback)."""
    return name.isascii() and name.isdigit()


def resolve_model_path(path: str | Path) -> Path:
    """A model file, or the newest ``model.onnx``/``model.plan`` of a Triton repository model directory."""
    p = Path(path)
    if is_checkpoint(p):
        return p if p.is_dir() else p.parent
    if p.is_dir():
        versions = sorted((d for d in p.iterdir() if d.is_dir() and is_version_name(d.name)), key=lambda d: int(d.name))
        for d in reversed(versions):
            for name in ("model.onnx", "model.plan"):
                if (d / name).is_file():
                    return d / name
        cfg = p / CHECKPOINT_FILES[0]
        if cfg.is_file():  # a checkpoint whose config.json cannot be read: say why, not "no model.onnx"
            raise SessionError(
                f"{cfg}: {_not_checkpoint(cfg)}, so {p} is no gtcompress checkpoint (and it holds no "
                "<version>/model.onnx or <version>/model.plan)"
            )
        raise SessionError(f"{p}: directory holds no <version>/model.onnx or <version>/model.plan")
    if not p.is_file():
        raise SessionError(f"model file does not exist: {p}")
    return p


def _gpu_index(device: str | None, path: Path) -> int:
    """The GPU a TensorRT plan runs on: ``None``/``"cuda"`` is GPU 0, ``"cuda:N"`` is GPU N."""
    if device is None or device == "cuda":
        return 0
    kind, _, index = device.partition(":")
    if kind != "cuda" or not (index.isascii() and index.isdigit()):  # '²' passes isdigit, not int
        raise SessionError(f"{path}: a TensorRT plan runs on a GPU; device must be 'cuda' or 'cuda:N', got {device!r}")
    return int(index)


#: ONNX Runtime's own severity of its default logger (WARNING), which it offers no way to read back.
ORT_DEFAULT_LOGGER_SEVERITY = 2

# Sessions made at once on several threads share that one logger: the last to finish sets it back.
_quiet_lock = threading.Lock()
_quiet_depth = 0


@contextlib.contextmanager
def _ort_default_logger_quiet(asked: bool) -> Iterator[None]:
    """Silence ONNX Runtime's process-wide default logger while a session is made with providers
    ``asked`` for by name. A provider that cannot load there (``--providers cuda`` without CUDA's
    libraries) is logged by ONNX Runtime itself, in colour on stderr, above the one error line that
    :class:`runtime.backends.OrtBackend` raises for it (the session options' ``log_severity_level``
    does not reach that logger). Set back to ONNX Runtime's default once no session is being made:
    it has no getter, so a severity a caller chose itself is not known here."""
    global _quiet_depth
    if not asked:
        yield
        return
    import onnxruntime as ort

    with _quiet_lock:
        _quiet_depth += 1
        if _quiet_depth == 1:
            ort.set_default_logger_severity(4)  # fatal only
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                ort.set_default_logger_severity(ORT_DEFAULT_LOGGER_SEVERITY)


class GraphSession:
    """A model exported by gtcompress (or a checkpoint, with torch), run on graphs. See the module docstring."""

    def __init__(
        self,
        path: str | Path,
        providers: list[ProviderArg] | None = None,
        *,
        spec: InputSpec | dict[str, Any] | None = None,
        threads: int | None = None,
        inter_op_threads: int | None = None,
        session_options: Any = None,
        limits: Limits | None = None,
        validate: bool = True,
        profile_prefix: str | None = None,
        spinning: bool | None = None,
        device: str | None = None,
        cuda_graphs: bool = False,
    ) -> None:
        self.validate = validate
        self.backend: Backend
        self.model: ModelSpec
        is_plan = Path(path).suffix in PLAN_SUFFIXES
        on_torch = (device is not None and not is_plan) or cuda_graphs or is_checkpoint(path)
        self.path = Path(path) if on_torch else resolve_model_path(path)
        if on_torch:
            if providers is not None:
                raise SessionError(
                    f"{self.path}: providers apply to ONNX Runtime; a checkpoint runs with torch (device=)"
                )
            self.model = self._torch_backend(device, cuda_graphs, threads, spec)
        elif self.path.suffix in PLAN_SUFFIXES:
            meta = {"input_spec": _spec_json(spec)} if spec is not None else plan_metadata(self.path)
            self.model = model_spec(meta, str(self.path))
            self.backend = TensorRTBackend(
                self.path, plugin=self.model.spec.lowering is Lowering.PLUGIN, device=_gpu_index(device, self.path)
            )
        else:
            with _ort_default_logger_quiet(providers is not None):
                ort_backend = OrtBackend(
                    self.path,
                    providers,
                    threads=threads,
                    inter_op_threads=inter_op_threads,
                    options=session_options,
                    profile_prefix=profile_prefix,
                    spinning=spinning,
                )
            meta = dict(ort_backend.metadata)
            if spec is not None:
                meta["input_spec"] = _spec_json(spec)
            self.model = model_spec(meta, str(self.path))
            self.backend = ort_backend
        got = [i.name for i in self.backend.inputs]
        if sorted(got) != sorted(self.model.inputs):
            raise SessionError(f"{self.path}: model inputs {got} do not match its input spec {self.model.inputs}")
        self.limits = _tighter(limits, self.backend.limits)

    def _torch_backend(
        self, device: str | None, cuda_graphs: bool, threads: int | None, spec: InputSpec | dict[str, Any] | None
    ) -> ModelSpec:
        """Open the checkpoint at ``self.path`` with torch; refuse an exported model (ONNX Runtime's job)."""
        if self.path.is_file() and self.path.name not in CHECKPOINT_FILES:
            # what sent this file to torch: device=, or cuda_graphs=True alone (which said "device=None")
            asked = f"device={device!r}" if device is not None else "cuda_graphs=True"
            raise SessionError(
                f"{self.path}: {asked} runs gtcompress checkpoints with torch, and this file is not one "
                "(an exported model runs on ONNX Runtime or TensorRT: choose its providers instead)"
            )
        from runtime.torch_backend import TorchBackend  # imports torch: only when a checkpoint is opened

        backend = TorchBackend(self.path, device, cuda_graphs=cuda_graphs, threads=threads)
        self.path = backend.path if backend.path.is_dir() else backend.path.parent
        self.backend = backend
        meta = dict(backend.metadata)
        if spec is not None:
            meta["input_spec"] = _spec_json(spec)
        return model_spec(meta, str(self.path))

    # ------------------------------------------------------------------ description
    @property
    def spec(self) -> InputSpec:
        return self.model.spec

    @property
    def metadata(self) -> dict[str, str]:
        return self.model.metadata

    @property
    def input_names(self) -> list[str]:
        return self.model.inputs

    @property
    def output_name(self) -> str:
        return self.model.output_name

    @property
    def node_level(self) -> bool:
        return self.model.node_level

    @property
    def providers(self) -> list[str]:
        return list(self.backend.providers)

    @property
    def platform(self) -> str:
        return self.backend.platform

    def get_inputs(self) -> list[TensorInfo]:
        order = {n: i for i, n in enumerate(self.model.inputs)}
        return sorted(self.backend.inputs, key=lambda t: order[t.name])

    def get_outputs(self) -> list[TensorInfo]:
        return list(self.backend.outputs)

    # ------------------------------------------------------------------ running
    def prepare(self, graphs: Any | Sequence[Any], *, teddy: bool = True) -> Prepared:
        """Validate, sparsify (TEDDY), merge and build every model input; no model call."""
        return prepare(_as_list(graphs), self.model, validate=self.validate, teddy=teddy, limits=self.limits)

    def shrink_arena_above(self, nodes: int, edges: int) -> None:
        """Calls past ``nodes`` nodes or ``edges`` edges give ONNX Runtime's CPU arena back at their end
        (:meth:`runtime.backends.OrtBackend.shrink_arena_above`): what a long-lived server wants, with its
        batch limits. Nothing for another backend."""
        shrink = getattr(self.backend, "shrink_arena_above", None)
        if shrink is not None:
            shrink(nodes, edges)

    def run_inputs(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on its full input set (as built by :meth:`prepare` or ``runtime.client.make_inputs``)."""
        missing = [n for n in self.model.inputs if n not in inputs]
        if missing:
            raise ShapeError(missing[0], "missing from the model inputs")
        self.backend.check_shapes(inputs)
        return self.backend.run({n: inputs[n] for n in self.model.inputs})

    def run_prepared(self, prepared: Prepared) -> list[np.ndarray]:
        out = self.run_inputs(prepared.inputs)[self.output_name]
        return split_output(out, prepared, self.node_level)

    def run(self, graphs: Any | Sequence[Any]) -> list[np.ndarray]:
        """One output array per graph given (a single graph gives a list of one)."""
        items = _as_list(graphs)
        prepared = self.prepare(items)
        outs = self.run_prepared(prepared)
        for k in nonfinite_parts(outs) if len(items) > 1 else []:  # NaN spreads to graphs merged with it
            outs[k] = self.run_prepared(self.prepare([items[k]]))[0]
        if not self.node_level:  # graph-level: [out] for a plain graph, [g, out] for a union item
            outs = [o[0] if as_numpy_graph(g).batch is None else o for o, g in zip(outs, items, strict=True)]
        return outs

    def end_profiling(self) -> str | None:
        """Path of ONNX Runtime's profile JSON (sessions made with ``profile_prefix``)."""
        return self.backend.end_profiling()

    def __repr__(self) -> str:
        return f"GraphSession({str(self.path)!r}, providers={self.providers}, lowering={str(self.spec.lowering)!r})"


def _spec_json(spec: InputSpec | dict[str, Any]) -> str:
    """A spec passed by the caller (typed or its JSON form), as the metadata string it overrides."""
    return json.dumps(spec.to_json() if isinstance(spec, InputSpec) else spec)


def _as_list(graphs: Any) -> list[Any]:
    if isinstance(graphs, (list, tuple)):
        return list(graphs)
    if isinstance(graphs, NumpyGraph) or hasattr(graphs, "edge_index") or isinstance(graphs, dict):
        return [graphs]
    return list(graphs)


def _tighter(a: Limits | None, b: Limits) -> Limits:
    if a is None:
        return b

    def lo(u: int | None, v: int | None) -> int | None:
        return v if u is None else (u if v is None else min(u, v))

    return Limits(lo(a.max_nodes, b.max_nodes), lo(a.max_edges, b.max_edges), lo(a.max_graphs, b.max_graphs))
