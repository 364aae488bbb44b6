"""TensorRT registration of the op with ``tensorrt.plugin`` (quickly deployable plugins, TensorRT >= 10.9).

This is the only module that imports ``tensorrt``, and it does so inside :func:`register_plugin`,
so the rest of the package (kernels, AOT compiler, ONNX schema) works on machines without it. All
shape, attribute and launch logic lives in :mod:`trt_plugins.spec` and :mod:`trt_plugins.aot`;
the decorated functions below only translate between TensorRT's descriptors and those.

Two plugins, because an AOT plugin launches exactly one kernel and the op is two
(:mod:`trt_plugins._kernel`), run one after the other:

* ``gtcompress::SparseGraphAttentionPartials`` -- inputs ``q, k, v, rowptr, col, bias``, attributes
  ``heads, head_dim, scale, has_bias``; outputs ``out`` (like ``q``; every row whose edges lie in
  one chunk is final) and ``part`` (float32 :data:`spec.PART_SHAPE_FORMULA`, partial states of the
  rows cut by chunk borders).
* ``gtcompress::SparseGraphAttentionCombine`` -- inputs ``out_in, part, rowptr``, attributes
  ``heads, head_dim``; its output *is* ``out_in`` (``aliased()``): it zeroes rows without incoming
  edge and merges the cut rows in place.

The combine plugin has no ``col`` input, so it derives the edge count its kernel needs from
``part`` (:func:`combine_n_edges`). Only an AOT implementation (``@trtp.aot_impl``) is registered:
the PTX is baked into the engine, which then runs without Python (``trtexec``, the C++ runtime,
Triton Inference Server). Registering a JIT ``@trtp.impl`` as well would force every network to
choose with ``PREFER_AOT_PYTHON_PLUGINS``/``PREFER_JIT_PYTHON_PLUGINS``. The PTX assumes every
tensor address is a multiple of :data:`spec.POINTER_ALIGNMENT` (16) bytes, which TensorRT's 256-byte
aligned buffers satisfy; that is what lets it read rows in 128-bit pieces.

Shape expressions: every ``trtp.max``/``trtp.cdiv``/arithmetic has an input's shape expression as
its *left* operand. TensorRT first calls the register function with placeholder ("fake")
expressions (``get_output_data_types``); an operation whose left operand is fake stays fake without
touching TensorRT's expression builder, whereas ``trtp.max(1, fake)`` would build a constant first
and hand the builder a fake operand.

No ``from __future__ import annotations`` here on purpose: ``tensorrt.plugin`` inspects the
decorated functions' annotations as classes (``issubclass(param.annotation, TensorDesc)``).
"""

import importlib
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from trt_plugins import aot, spec

INSTALL_HINT = (
    "TensorRT is not installed (the Python package 'tensorrt' cannot be imported). Install it with "
    "`pip install 'gtcompress[tensorrt]'` on a Linux machine with an NVIDIA GPU and driver; the TensorRT "
    "wheels fetch their libraries from NVIDIA's package index (pypi.nvidia.com), which must be reachable."
)

#: ``register()`` attributes of the combine plugin, with their Python types (a prefix of
#: :data:`spec.ATTRIBUTES`: the combine kernel depends on neither the scale nor the bias).
COMBINE_ATTRIBUTES: tuple[tuple[str, type], ...] = spec.ATTRIBUTES[:2]

_REGISTERED = False


class TensorRTNotAvailableError(ImportError):
    """TensorRT, or a ``tensorrt.plugin`` with AOT implementations (TensorRT >= 10.9), is not available here."""


def import_tensorrt() -> tuple[ModuleType, ModuleType]:
    """``(tensorrt, tensorrt.plugin)``, or :class:`TensorRTNotAvailableError` saying how to install them."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError as err:
        raise TensorRTNotAvailableError(INSTALL_HINT) from err
    version = getattr(trt, "__version__", "unknown")
    too_old = (
        f"TensorRT {version} has no 'tensorrt.plugin' with ahead-of-time implementations (aot_impl, added in "
        "TensorRT 10.9); upgrade with `pip install -U 'gtcompress[tensorrt]'`."
    )
    try:
        trtp = importlib.import_module("tensorrt.plugin")
    except ImportError as err:
        raise TensorRTNotAvailableError(too_old) from err
    if not hasattr(trtp, "aot_impl"):
        raise TensorRTNotAvailableError(too_old)
    return trt, trtp


def tensorrt_available() -> bool:
    """Whether ``tensorrt`` and ``tensorrt.plugin`` can be imported."""
    try:
        import_tensorrt()
    except TensorRTNotAvailableError:
        return False
    return True


def is_registered() -> bool:
    """Whether :func:`register_plugin` has registered both plugins in this process."""
    return _REGISTERED


_AUTOTUNE_TYPE = {"float32": "FP32", "float16": "FP16", "bfloat16": "BF16", "int32": "INT32"}


def autotune_io_types(plugin: str = "partials") -> str:
    """TensorRT ``AutoTuneCombination`` type string of a plugin's inputs then outputs: the float
    tensors all fp32, all fp16 or all bf16 (dependent ``|``), indices int32, ``part`` float32."""
    floats = "|".join(_AUTOTUNE_TYPE[d] for d in spec.FLOAT_DTYPES)
    kinds = {"q": floats, "k": floats, "v": floats, "bias": floats, "out": floats, "out_in": floats}
    kinds.update({"rowptr": "INT32", "col": "INT32", "part": "FP32"})
    names = {
        "partials": spec.INPUT_NAMES + spec.PARTIALS_OUTPUTS,
        "combine": spec.COMBINE_INPUTS + spec.COMBINE_OUTPUTS,
    }
    if plugin not in names:
        raise spec.PluginSpecError(f"plugin must be one of {tuple(names)}, got {plugin!r}")
    return ", ".join(kinds[name] for name in names[plugin])


def part_chunk(heads: int, head_dim: int) -> int:
    """Edges per chunk (``CHUNK``) of the kernels for a head shape, whatever the float dtype.

    The ``part`` buffer's shape is declared by the register function, before TensorRT has chosen
    the dtype the plugin runs in (a weakly typed network may pick FP16 for FP32 inputs), so it may
    not depend on the dtype; :func:`spec.select_config` must agree across :data:`spec.FLOAT_DTYPES`.
    """
    chunks = {spec.select_config(heads, head_dim, dtype).chunk for dtype in spec.FLOAT_DTYPES}
    if len(chunks) != 1:
        raise spec.PluginSpecError(
            f"the chunk size for heads={heads}, head_dim={head_dim} depends on the dtype ({sorted(chunks)}): "
            "the TensorRT plugins need one part buffer shape for every dtype"
        )
    return chunks.pop()


def combine_n_edges(part_rows: Any, chunk: int) -> Any:
    """The ``n_edges`` the combine plugin passes to its kernel: ``(part_rows // 2 - 1) * chunk + 1``.

    ``part_rows`` is dim 0 of ``part``, ``2 * n_chunks`` with ``n_chunks = max(1, cdiv(E, chunk))``
    (an int, or a TensorRT shape expression). The combine kernel reads ``n_edges`` only through
    ``cdiv(n_edges, CHUNK)`` (which chunks may start a cut row), and its grid only through the same
    term. For ``E >= 1`` the value is the smallest edge count with ``n_chunks`` chunks, so both are
    exact and it never exceeds ``E`` (no int32 overflow the true ``E`` would not have). For
    ``E = 0`` it is 1: one chunk instead of none, and the kernel merges only in programs
    ``0 < pid < n_chunks``, so none does either way; the grid has ``max(1, ...)`` anyway.
    """
    return (part_rows // 2 - 1) * chunk + 1


def _dtype_name(trt: ModuleType, dtype: Any) -> str:
    for name in ("float32", "float16", "int32", "int64", "bfloat16", "int8", "bool"):
        if hasattr(trt, name) and dtype == getattr(trt, name):
            return name
    return str(dtype)


def _dims(desc: Any) -> tuple[spec.Dim, ...]:
    """Known dimensions of a ``TensorDesc`` as ints, unknown (symbolic or placeholder) ones as ``None``."""
    dims: list[spec.Dim] = []
    for expr in desc.shape_expr:
        try:
            dims.append(int(expr.constant_value()) if not expr.is_fake and expr.is_constant else None)
        except RuntimeError:  # fake expressions refuse is_constant
            dims.append(None)
    return tuple(dims)


def _same(a: spec.Dim, b: spec.Dim) -> bool:
    return a is None or b is None or a == b


def validate_combine_inputs(
    shapes: Sequence[Sequence[spec.Dim]], dtypes: Sequence[str], heads: int, head_dim: int
) -> None:
    """Check the combine plugin's inputs ``(out_in, part, rowptr)`` (:data:`spec.COMBINE_INPUTS`).

    ``out_in [N, heads, head_dim]`` in a float dtype, ``part [2 * n_chunks, heads, head_dim + 2]``
    float32 with ``n_chunks >= 1``, ``rowptr [N + 1]`` int32; unknown dims are ``None`` and not
    checked. Raises :class:`spec.PluginSpecError` naming the offending input.
    """
    names = spec.COMBINE_INPUTS
    if len(shapes) != len(names) or len(dtypes) != len(names):
        raise spec.PluginSpecError(
            f"expected {len(names)} inputs {names}, got {len(shapes)} shapes and {len(dtypes)} dtypes"
        )
    shape = dict(zip(names, (tuple(s) for s in shapes), strict=True))
    dtype = dict(zip(names, dtypes, strict=True))
    for name, rank in (("out_in", 3), ("part", 3), ("rowptr", 1)):
        if len(shape[name]) != rank:
            raise spec.PluginSpecError(f"input '{name}' must have rank {rank}, got shape {shape[name]}")
    if dtype["out_in"] not in spec.FLOAT_DTYPES:
        raise spec.PluginSpecError(f"input 'out_in' must be one of {spec.FLOAT_DTYPES}, got {dtype['out_in']}")
    if dtype["part"] != "float32":
        raise spec.PluginSpecError(f"input 'part' must be float32, got {dtype['part']}")
    if dtype["rowptr"] != spec.INDEX_DTYPE:
        raise spec.PluginSpecError(f"input 'rowptr' must be {spec.INDEX_DTYPE}, got {dtype['rowptr']}")
    n, h, d = shape["out_in"]
    if not (_same(h, heads) and _same(d, head_dim)):
        raise spec.PluginSpecError(
            f"input 'out_in' must have shape [N, heads={heads}, head_dim={head_dim}], got {shape['out_in']}"
        )
    rows, ph, pd = shape["part"]
    if (rows is not None and (rows < 2 or rows % 2)) or not (_same(ph, heads) and _same(pd, head_dim + 2)):
        raise spec.PluginSpecError(
            f"input 'part' must have shape [2 * n_chunks >= 2, heads={heads}, head_dim + 2={head_dim + 2}], "
            f"got {shape['part']}"
        )
    (rp,) = shape["rowptr"]
    if n is not None and not _same(rp, n + 1):
        raise spec.PluginSpecError(f"input 'rowptr' must have n_nodes + 1 = {n + 1} entries, got {rp}")


def _compile(kernel: str, dtype: str, attrs: spec.Attributes, chunk: int) -> aot.CompiledKernel:
    """PTX of ``kernel`` for the GPU in use (``$GTCOMPRESS_CUDA_ARCH`` overrides), checked against the
    chunk size the register function gave ``part``."""
    compiled = aot.compile_kernel(
        kernel, dtype, attrs.heads, attrs.head_dim, aot.current_compute_capability(), attrs.scale, attrs.has_bias
    )
    if compiled.kernel_config.chunk != chunk:
        raise aot.AOTCompileError(
            f"kernel {kernel} was compiled with chunk {compiled.kernel_config.chunk}, but 'part' was shaped "
            f"for chunk {chunk}"
        )
    return compiled


def _register_partials(trt: ModuleType, trtp: ModuleType) -> None:
    def checked(descs: tuple[Any, ...], heads: Any, head_dim: Any, scale: Any, has_bias: Any) -> spec.Attributes:
        """Validate attributes and inputs. Also run in ``aot_impl``, where TensorRT passes the attributes
        positionally: a mix-up there (e.g. heads <-> has_bias) then fails loudly against q's shape."""
        attrs = spec.validate_attributes(int(heads), int(head_dim), float(scale), int(has_bias))
        spec.validate_inputs([_dims(d) for d in descs], [_dtype_name(trt, d.dtype) for d in descs], attrs)
        return attrs

    @trtp.register(spec.PARTIALS_PLUGIN_ID)
    def partials_desc(
        q: trtp.TensorDesc,
        k: trtp.TensorDesc,
        v: trtp.TensorDesc,
        rowptr: trtp.TensorDesc,
        col: trtp.TensorDesc,
        bias: trtp.TensorDesc,
        heads: int,
        head_dim: int,
        scale: float,
        has_bias: int,
    ) -> tuple[trtp.TensorDesc, trtp.TensorDesc]:
        attrs = checked((q, k, v, rowptr, col, bias), heads, head_dim, scale, has_bias)
        chunk = part_chunk(attrs.heads, attrs.head_dim)
        n_chunks = trtp.max(trtp.cdiv(col.shape_expr[0], chunk), 1)  # spec.PART_SHAPE_FORMULA
        part = trtp.from_shape_expr((n_chunks * 2, q.shape_expr[1], q.shape_expr[2] + 2), dtype=trt.float32)
        return q.like(), part

    @trtp.autotune(spec.PARTIALS_PLUGIN_ID)
    def partials_autotune(
        q: trtp.TensorDesc,
        k: trtp.TensorDesc,
        v: trtp.TensorDesc,
        rowptr: trtp.TensorDesc,
        col: trtp.TensorDesc,
        bias: trtp.TensorDesc,
        outputs: tuple[trtp.TensorDesc, trtp.TensorDesc],
    ) -> list[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination(autotune_io_types("partials"), "LINEAR")]

    @trtp.aot_impl(spec.PARTIALS_PLUGIN_ID)
    def partials_aot(
        q: trtp.TensorDesc,
        k: trtp.TensorDesc,
        v: trtp.TensorDesc,
        rowptr: trtp.TensorDesc,
        col: trtp.TensorDesc,
        bias: trtp.TensorDesc,
        heads: int,
        head_dim: int,
        scale: float,
        has_bias: int,
        outputs: tuple[trtp.TensorDesc, trtp.TensorDesc],
        tactic: int,
    ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs]:
        attrs = checked((q, k, v, rowptr, col, bias), heads, head_dim, scale, has_bias)
        chunk = part_chunk(attrs.heads, attrs.head_dim)
        kernel = _compile("partials", spec.output_dtype(_dtype_name(trt, q.dtype)), attrs, chunk)
        n_nodes, n_edges = q.shape_expr[0], col.shape_expr[0]
        grid_x = trtp.max(trtp.cdiv(n_edges, chunk), 1)  # spec.GRID_FORMULAS["partials"]
        grid_y = spec.head_programs(attrs.heads, kernel.kernel_config)
        return _launch(trtp, kernel, grid_x, grid_y, n_nodes, n_edges)


def _register_combine(trt: ModuleType, trtp: ModuleType) -> None:
    def checked(descs: tuple[Any, ...], heads: Any, head_dim: Any) -> spec.Attributes:
        """Validate attributes and inputs (as for the partials plugin; the scale and bias are not the
        combine kernel's business, so neutral values fill them)."""
        attrs = spec.validate_attributes(int(heads), int(head_dim), 1.0, 0)
        validate_combine_inputs(
            [_dims(d) for d in descs], [_dtype_name(trt, d.dtype) for d in descs], attrs.heads, attrs.head_dim
        )
        return attrs

    @trtp.register(spec.COMBINE_PLUGIN_ID)
    def combine_desc(
        out_in: trtp.TensorDesc,
        part: trtp.TensorDesc,
        rowptr: trtp.TensorDesc,
        heads: int,
        head_dim: int,
    ) -> trtp.TensorDesc:
        checked((out_in, part, rowptr), heads, head_dim)
        return out_in.aliased()  # the kernel completes out_in in place

    @trtp.autotune(spec.COMBINE_PLUGIN_ID)
    def combine_autotune(
        out_in: trtp.TensorDesc,
        part: trtp.TensorDesc,
        rowptr: trtp.TensorDesc,
        outputs: tuple[trtp.TensorDesc],
    ) -> list[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination(autotune_io_types("combine"), "LINEAR")]

    @trtp.aot_impl(spec.COMBINE_PLUGIN_ID)
    def combine_aot(
        out_in: trtp.TensorDesc,
        part: trtp.TensorDesc,
        rowptr: trtp.TensorDesc,
        heads: int,
        head_dim: int,
        outputs: tuple[trtp.TensorDesc],
        tactic: int,
    ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs]:
        attrs = checked((out_in, part, rowptr), heads, head_dim)
        chunk = part_chunk(attrs.heads, attrs.head_dim)
        kernel = _compile("combine", spec.output_dtype(_dtype_name(trt, out_in.dtype)), attrs, chunk)
        n_nodes = out_in.shape_expr[0]
        n_edges = combine_n_edges(part.shape_expr[0], chunk)
        # spec.GRID_FORMULAS["combine"]: max(1, cdiv(n_nodes, BLOCK_R), cdiv(n_edges, CHUNK)), heads
        grid_x = trtp.max(trtp.max(trtp.cdiv(n_nodes, kernel.kernel_config.block_r), 1), trtp.cdiv(n_edges, chunk))
        return _launch(trtp, kernel, grid_x, attrs.heads, n_nodes, n_edges)


def _launch(
    trtp: ModuleType, kernel: Any, grid_x: Any, grid_y: Any, n_nodes: Any, n_edges: Any
) -> tuple[str | bytes, str | bytes, Any, Any]:
    """What ``aot_impl`` returns for one compiled kernel: name, PTX, launch parameters (a 1-D block
    of the kernel's threads) and the kernel's scalar arguments in :data:`spec.KERNEL_SCALAR_ARGS` order."""
    launch = trtp.KernelLaunchParams()
    launch.grid_x = grid_x
    launch.grid_y = grid_y
    launch.grid_z = 1
    launch.block_x = kernel.threads_per_block
    launch.shared_mem = kernel.shared_mem
    scalars = {"n_nodes": n_nodes, "n_edges": n_edges}
    extra_args = trtp.SymIntExprs(len(spec.KERNEL_SCALAR_ARGS))
    for i, name in enumerate(spec.KERNEL_SCALAR_ARGS):
        extra_args[i] = trtp.SymInt32(scalars[name])
    return kernel.kernel_name, kernel.ptx, launch, extra_args


def register_plugin() -> None:
    """Register ``gtcompress::SparseGraphAttentionPartials`` and ``gtcompress::SparseGraphAttentionCombine``
    with TensorRT's plugin registry (idempotent).

    A plugin already defined in ``tensorrt.plugin.op`` (e.g. by an earlier import of this module,
    before a reload) is left alone: ``tensorrt.plugin`` refuses a second definition. Raises
    :class:`TensorRTNotAvailableError`, with install instructions, when TensorRT is missing.
    """
    global _REGISTERED
    if _REGISTERED:
        return
    trt, trtp = import_tensorrt()
    namespace = getattr(trtp.op, spec.PLUGIN_NAMESPACE, None)
    for name, register in (
        (spec.PARTIALS_PLUGIN_NAME, _register_partials),
        (spec.COMBINE_PLUGIN_NAME, _register_combine),
    ):
        if namespace is None or not hasattr(namespace, name):
            register(trt, trtp)
    _REGISTERED = True
