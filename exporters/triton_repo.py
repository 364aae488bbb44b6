"""NVIDIA Triton Inference Server model repository for an exported model, in one of two variants.

* **python** (the default when the model needs pre-processing: PE, an attention layout, TEDDY):
  ``REPO/<name>/1/model.py`` (Triton's Python backend running :mod:`runtime.triton_python`) next
  to ``1/model.onnx`` or ``1/model.plan``. Clients send raw graphs, optionally with the graphs' own
  positional encodings (``pe_<kind>``); the model validates them, applies TEDDY, computes the PE
  not sent and the layouts (as ``GraphSession.run`` does), and merges every request Triton's dynamic batcher queued into
  one disjoint union (``max_batch_size > 0``, ``allow_ragged_batch`` on every input, so requests
  of different sizes batch together). ``1/vendor/`` holds a copy of the code ``model.py`` runs
  (gtcompress's torch-free runtime and numpy-only pre-processing, :data:`VENDORED`), so the
  server's Python needs no gtcompress, only numpy, scipy, threadpoolctl and onnxruntime.
* **native** (``onnxruntime_onnx`` for ``.onnx``, ``tensorrt_plan`` for ``.plan``): Triton runs
  the model file as it is, so clients send the full pre-processed input set
  (:func:`runtime.client.make_inputs`). Every graph-dependent dimension is ``-1`` and
  ``max_batch_size`` is 0: Triton's own batching stacks along dim 0, which a graph batch is not.

Either way the model file lives in the version directory (the repository loads unchanged when
copied into a Triton container) and the input spec travels as the parameter
``gtcompress_input_spec``, so clients can build inputs from the repository alone;
``gtcompress_preprocessing`` says who pre-processes (``server`` or ``client``). A TensorRT plan's
metadata (the ONNX file's ``metadata_props``, which ``gtc build`` writes beside the engine) travels
beside it as ``model.plan.json`` (:func:`plan_metadata_text`), where the runtime reads it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from gtcompress.errors import ConfigError
from gtcompress.io import (
    copy_file_named,
    dirs_made,
    make_temp_dir,
    recover_dead_dir_swaps,
    remove_path,
    swap_dir_into_place,
    write_text_named,
)
from gtcompress.preprocess.inputs import layout_input_base
from gtcompress.preprocess.spec import InputSpec
from runtime.errors import SessionError
from runtime.spec import engine_metadata, model_spec, plan_metadata_path

BACKENDS = ("auto", "python", "onnxruntime", "tensorrt")
RAW_INPUTS = ("x", "edge_index", "edge_attr", "batch", "node_counts")  # what a raw-graph request carries

PLATFORMS = {
    ".onnx": ("onnxruntime_onnx", "model.onnx", "KIND_CPU"),
    ".plan": ("tensorrt_plan", "model.plan", "KIND_GPU"),
}
_TRITON_TYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "bool": "TYPE_BOOL",
}


def input_dims(spec: InputSpec) -> dict[str, tuple[str, list[int]]]:
    """``{input: (numpy dtype, dims with -1 for graph-dependent sizes)}`` of an input spec."""
    table: dict[str, tuple[str, list[int]]] = {
        "x": (spec.x.dtype, [-1, spec.x.dim]),
        "edge_index": ("int64", [2, -1]),
        "batch": ("int64", [-1]),
        "node_counts": ("int64", [-1]),
        "node_slot": ("int64", [-1]),
        "pad_mask": ("bool", [-1, -1]),
        "nbr_src": ("int64", [-1, -1]),
        "nbr_edge": ("int64", [-1, -1]),
        "nbr_mask": ("bool", [-1, -1]),
        "nbr_node": ("int64", [-1]),
        "nbr_inv": ("int64", [-1]),
        "rowptr": ("int64", [-1]),
        "col": ("int64", [-1]),
        "perm": ("int64", [-1]),
    }
    if spec.edge_attr is not None:
        table["edge_attr"] = (spec.edge_attr.dtype, [-1, spec.edge_attr.dim])
    for kind, k in spec.pe.items():
        table[f"pe_{kind}"] = ("float32", [-1, k])
    return {name: table[layout_input_base(name)] for name in spec.inputs}


def _tensor(name: str, dtype: str, dims: list[int], extra: str = "") -> str:
    shape = ", ".join(map(str, dims))
    return f'  {{\n    name: "{name}"\n    data_type: {_TRITON_TYPES[dtype]}\n    dims: [ {shape} ]\n{extra}  }}'


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _parameters(values: dict[str, str]) -> str:
    return "".join(
        f'parameters {{\n  key: "{k}"\n  value {{\n    string_value: "{_quote(v)}"\n  }}\n}}\n'
        for k, v in values.items()
    )


def _instances(kind: str, count: int) -> str:
    return f"instance_group [\n  {{\n    kind: {kind}\n    count: {count}\n  }}\n]\n"


def config_pbtxt(name: str, spec: InputSpec, platform: str, kind: str, instances: int = 1) -> str:
    """The native variant's ``config.pbtxt`` (protobuf text format of Triton's ``ModelConfig``);
    ``instances``: its ``instance_group`` count, as for the python variant."""
    inputs = ",\n".join(_tensor(n, d, dims) for n, (d, dims) in input_dims(spec).items())
    output = _tensor(spec.output.name, "float32", [-1, spec.output.dim])
    return (
        f'name: "{name}"\nplatform: "{platform}"\nmax_batch_size: 0\n'
        f"input [\n{inputs}\n]\noutput [\n{output}\n]\n"
        + _instances(kind, instances)
        + _parameters({"gtcompress_input_spec": json.dumps(spec.to_json()), "gtcompress_preprocessing": "client"})
    )


@dataclass(frozen=True)
class PythonModelOptions:
    """Serving settings of the python variant (Triton's batcher, instances, our limits); the native
    variant takes ``instances`` only (Triton does not batch it, and runs its ONNX Runtime itself).

    ``max_queue_delay_us=None`` writes no ``dynamic_batching``: Triton then runs each request
    alone (what the benchmark compares against). ``threads``: ONNX Runtime intra-op threads per
    instance (0: its default), so ``instances`` x ``threads`` should not exceed the cores."""

    max_batch_size: int = 64
    max_queue_delay_us: int | None = 2000
    instances: int = 1
    threads: int = 1

    def __post_init__(self) -> None:
        for what, value, low in (
            ("max_batch_size", self.max_batch_size, 1),
            ("instances", self.instances, 1),
            ("threads", self.threads, 0),
            ("max_queue_delay_us", 0 if self.max_queue_delay_us is None else self.max_queue_delay_us, 0),
        ):
            if value < low:
                raise ConfigError(f"Triton {what} is {value}; expected at least {low}")


def raw_input_dims(spec: InputSpec) -> dict[str, tuple[str, list[int]]]:
    """The python variant's inputs, per request, without the batch dimension: a raw graph, then the
    graph's own positional encodings (``pe_<kind>``, named and shaped as the model's inputs), which
    the model uses instead of computing its own, as ``GraphSession.run`` and ``gtc serve`` do."""
    dims = input_dims(spec)
    return {n: dims[n] for n in (*RAW_INPUTS, *pe_inputs(spec)) if n in dims}


def pe_inputs(spec: InputSpec) -> tuple[str, ...]:
    """The model's positional-encoding inputs, which a raw-graph request to the python variant may carry."""
    return tuple(f"pe_{kind}" for kind in spec.pe)


def python_config_pbtxt(
    name: str, spec: InputSpec, model_filename: str, options: PythonModelOptions | None = None
) -> str:
    """The python variant's ``config.pbtxt``: raw-graph inputs, ragged dynamic batching. ``batch``,
    ``node_counts`` and the ``pe_<kind>`` inputs are ``optional``: the Python backend's
    ``get_input_tensor_by_name`` gives ``None`` for one a request leaves out."""
    o = options or PythonModelOptions()
    inputs = []
    for n, (dtype, dims) in raw_input_dims(spec).items():
        optional = n in ("batch", "node_counts") or n.startswith("pe_")
        extra = "    allow_ragged_batch: true\n" + ("    optional: true\n" if optional else "")
        inputs.append(_tensor(n, dtype, dims, extra))
    output = _tensor(spec.output.name, "float32", [-1, spec.output.dim])
    batching = (
        ""
        if o.max_queue_delay_us is None
        else f"dynamic_batching {{\n  max_queue_delay_microseconds: {o.max_queue_delay_us}\n}}\n"
    )
    kind = PLATFORMS[Path(model_filename).suffix][2]
    joined = ",\n".join(inputs)
    return (
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: {o.max_batch_size}\n{batching}'
        f"input [\n{joined}\n]\noutput [\n{output}\n]\n"
        + _instances(kind, o.instances)
        + _parameters(
            {
                "gtcompress_input_spec": json.dumps(spec.to_json()),
                "gtcompress_preprocessing": "server",
                "gtcompress_model_file": model_filename,
                "gtcompress_threads": str(o.threads),
            }
        )
    )


MODEL_PY = '''"""gtcompress graph model for NVIDIA Triton Inference Server's Python backend.

Runs the model file beside it with gtcompress's torch-free runtime: requests carry raw graphs
(x, edge_index, optional edge_attr, batch, node_counts, and the graphs' own pe_<kind>, each with
a leading batch dimension of 1); pre-processing and graph-aware batching happen here. The runtime
is the copy in vendor/, made when this repository was exported, so it matches the model file
whatever else is installed; the Python that Triton's stub runs needs numpy, scipy, threadpoolctl
and onnxruntime (a TensorRT plan: tensorrt and cuda-python). See runtime/triton_python.py in
gtcompress.
"""

import sys
from pathlib import Path

_VENDOR = str(Path(__file__).resolve().parent / "vendor")
if _VENDOR not in sys.path:
    sys.path.insert(0, _VENDOR)

from runtime.triton_python import TritonPythonModel  # noqa: E402

__all__ = ["TritonPythonModel"]
'''

#: What the python variant's ``model.py`` imports, as paths below the source root, copied into the
#: version directory's ``vendor/``: the torch-free runtime and the numpy-only pre-processing. A
#: TensorRT plan also takes ``trt_plugins`` (the plugins it was built with). tests/exporters checks
#: that ``model.py`` runs from this copy alone, so a new import of the runtime cannot be missed here.
VENDORED = ("runtime", "gtcompress/__init__.py", "gtcompress/errors.py", "gtcompress/preprocess")
VENDOR_DIR = "vendor"


def _source_root() -> Path:
    """The directory holding our packages (the checkout, or site-packages), found without importing."""
    spec = importlib.util.find_spec("runtime")
    if spec is None or spec.origin is None:
        raise ConfigError("cannot locate gtcompress's runtime package to copy into the Triton repository")
    return Path(spec.origin).parent.parent


def write_vendor(vdir: Path, plan: bool = False, shown: Path | None = None) -> Path:
    """``vdir/vendor/``: :data:`VENDORED` (and ``trt_plugins`` for a plan), ``.py`` files only.
    ``vdir`` is a new version directory (:func:`write_model_repository` swaps it in whole), which a
    full disk's error names as ``shown``, the version directory the user will look for."""
    src = _source_root()
    final = vdir / VENDOR_DIR
    for rel in (*VENDORED, *(("trt_plugins",) if plan else ())):
        path = src / rel
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            if "__pycache__" in f.parts:
                continue
            dest = final / f.relative_to(src)
            dest.parent.mkdir(parents=True, exist_ok=True)
            copy_file_named(f, dest, (shown or vdir) / VENDOR_DIR / f.relative_to(src))
    return final


#: The engine's metadata beside a TensorRT plan in a version directory, read before config.pbtxt
#: (:func:`runtime.spec.plan_metadata` looks for ``<engine>.json`` first).
PLAN_METADATA = plan_metadata_path(Path(PLATFORMS[".plan"][1])).name


def plan_metadata_text(model_file: Path, spec: InputSpec) -> str | None:
    """The metadata of the TensorRT plan ``model_file``, as the JSON its version directory holds beside
    it (:data:`PLAN_METADATA`); None for an engine that has none beside it.

    A plan carries no metadata of its own: ``gtc build`` writes the ONNX file's next to it as
    ``<engine>.json``, else the ONNX file beside it is read, both by the reader ``gtc serve`` and the
    python variant use (:func:`runtime.spec.engine_metadata`), so the copy is written as they read it.
    Without it the python variant would know config.pbtxt's input spec only, and so could not hold an
    engine built from an export older than the float32 fixes of :mod:`gtcompress.preprocess.legacy_range`
    to the feature range ``gtc serve`` holds it to. ``spec`` must be the engine's own: config.pbtxt
    would declare one and the model run the other."""
    try:
        found = engine_metadata(model_file)
        if found is None:
            return None
        source, meta = found
        own = model_spec(meta, str(source)).spec
    except SessionError as e:  # nothing is written: refused as the repository's input, like every other
        raise ConfigError(str(e)) from None
    if own != spec:
        raise ConfigError(
            f"{model_file}: the input spec given is not the engine's own (metadata input_spec of {source}); "
            "pass that one, as runtime.session.GraphSession(engine).spec reads it"
        )
    return json.dumps(meta, indent=2) + "\n"


def needs_preprocessing(spec: InputSpec) -> bool:
    """Whether a client of the native variant would have to compute more than the raw graph."""
    return spec.teddy is not None or any(n not in RAW_INPUTS for n in spec.inputs)


def resolve_backend(backend: str, model_file: Path, spec: InputSpec) -> str:
    """``python``, ``onnxruntime`` or ``tensorrt`` for ``backend`` (``auto``: python when the model
    needs pre-processing, else the native one of the file)."""
    if backend not in BACKENDS:
        raise ConfigError(f"Triton backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    native = "onnxruntime" if model_file.suffix == ".onnx" else "tensorrt"
    if backend == "auto":
        return "python" if needs_preprocessing(spec) else native
    if backend != "python" and backend != native:
        raise ConfigError(f"Triton backend {backend!r} cannot run {model_file.name}; its backend is {native!r}")
    return backend


def check_model_name(name: str) -> None:
    """Refuse a Triton model name that is not a plain folder name."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not name.strip("."):
        # "." and ".." are path steps: the model would land in the repository root or above it
        raise ConfigError(f"model name {name!r}: use letters, digits, '_', '-' and '.' only, not only dots")


def check_model_dir(root: Path) -> None:
    """Refuse a model directory ``root`` (``REPO/NAME``) that exists but is not a directory: the write
    replaces ``root`` whole, so a file of the user's (or a link to one, or a broken link) there would
    be deleted without a word.

    So too a directory that holds something but is no Triton model (no ``config.pbtxt``, no numeric
    version folder): a checkpoint ``runs/gt`` exported with ``--triton-repo runs`` under its default
    name became a model directory with the checkpoint's files kept inside it, which Triton then read
    as the model's own."""
    if (root.exists() or root.is_symlink()) and not root.is_dir():
        kind = "a broken symbolic link" if not root.exists() else "a file"
        raise ConfigError(f"{root}: exists and is {kind}, not a Triton model directory; refusing to replace it")
    if not root.is_dir():
        return
    entries = sorted(e.name for e in root.iterdir() if not e.name.startswith("."))  # ours: .NAME.tmp-...
    if (
        entries
        and "config.pbtxt" not in entries
        # Triton's versions are ASCII integers: str.isdigit() alone also took a folder named '²'
        and not any(e.isascii() and e.isdigit() and (root / e).is_dir() for e in entries)
    ):
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise ConfigError(
            f"{root}: exists and is not a Triton model directory (no config.pbtxt or version folder; it holds "
            f"{shown}); refusing to write a model into it: choose another model name or repository"
        )


def write_model_repository(
    repo: str | Path,
    name: str,
    model_file: str | Path,
    spec: InputSpec,
    version: int = 1,
    *,
    backend: str = "auto",
    options: PythonModelOptions | None = None,
) -> Path:
    """Copy ``model_file`` (.onnx or .plan, with the engine's metadata: :func:`plan_metadata_text`) into
    ``repo/name/version/`` and write ``config.pbtxt`` (and, for the python variant, ``model.py`` and
    ``vendor/``); returns ``repo/name``.

    ``repo/name`` is replaced as a whole: built beside it (its other versions and files of its own
    hard-linked in), then swapped in, so a write that fails part-way (a full disk) leaves the old
    model as it was, never a new model file under the old ``config.pbtxt``. The new version holds
    only the chosen variant's files (a stale ``model.py`` would make Triton load the wrong backend).
    A file at ``repo/name`` is the user's and a :class:`ConfigError`, never replaced."""
    model_file = Path(model_file)
    check_model_name(name)
    if model_file.suffix not in PLATFORMS:
        raise ConfigError(f"{model_file}: expected a .onnx or .plan file")
    chosen = resolve_backend(backend, model_file, spec)
    platform, filename, kind = PLATFORMS[model_file.suffix]
    plan_meta = plan_metadata_text(model_file, spec) if model_file.suffix == ".plan" else None
    root = Path(repo) / name
    check_model_dir(root)
    with dirs_made(root.parent):  # a write that fails leaves no folder it made
        recover_dead_dir_swaps(root)
        tmp = make_temp_dir(root)
        try:
            _keep_unmanaged(root, tmp, str(version))
            vdir = tmp / str(version)
            vdir.mkdir(exist_ok=True)
            shown = root / str(version)  # in errors: the folder the user will look for, not the temp one
            copy_file_named(model_file, vdir / filename, shown / filename)
            if plan_meta is not None:  # both variants: gtc serve reads it from a native repository too
                write_text_named(vdir / PLAN_METADATA, plan_meta, shown / PLAN_METADATA)
            if chosen == "python":
                write_vendor(vdir, plan=model_file.suffix == ".plan", shown=shown)
                write_text_named(vdir / "model.py", MODEL_PY, root / str(version) / "model.py")
                text = python_config_pbtxt(name, spec, filename, options)
            else:
                text = config_pbtxt(name, spec, platform, kind, (options or PythonModelOptions()).instances)
            write_text_named(tmp / "config.pbtxt", text, root / "config.pbtxt")  # a full disk: one error line
            swap_dir_into_place(tmp, root)
        except BaseException:
            remove_path(tmp)
            raise
    return root


#: What :func:`write_model_repository` writes in a version directory; everything else there is kept.
MANAGED = frozenset({*(p[1] for p in PLATFORMS.values()), PLAN_METADATA, "model.py", VENDOR_DIR})


def _keep_unmanaged(root: Path, tmp: Path, version: str) -> None:
    """Hard-link (copy across file systems) into ``tmp`` what ``root`` holds that this write does not
    replace: other versions and the model's own files (labels), and in ``version`` all but :data:`MANAGED`.

    ``version`` becomes a real directory even where it was a symbolic link to one: kept as a link,
    the new model file was written through it, in place into the link's target, so a write that
    failed part-way left a half-copied model under the old ``config.pbtxt``."""
    if not root.is_dir():
        return
    for entry in root.iterdir():
        if entry.name == "config.pbtxt":
            continue
        if entry.name == version and entry.is_dir():  # a link to a directory too: never written through
            (tmp / version).mkdir()
            for inner in entry.iterdir():
                if inner.name not in MANAGED and not inner.name.startswith(f".{VENDOR_DIR}."):  # old half-writes
                    _link_copy(inner, tmp / version / inner.name)
        else:
            _link_copy(entry, tmp / entry.name)


def _link_copy(src: Path, dst: Path) -> None:
    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)
    else:
        _link_or_copy(src, dst)


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    if Path(src).is_symlink():
        os.symlink(os.readlink(src), dst)
        return
    try:
        os.link(src, dst)
    except OSError:  # another file system, or no hard links there
        shutil.copy2(src, dst)
