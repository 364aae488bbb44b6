"""TensorRT registration of the plugin with ``tensorrt.plugin`` (quickly deployable plugins, TensorRT >= 10.9).

This is the only module that imports ``tensorrt``, and it does so inside :func:`register_plugin`,
so the rest of the package (kernels, AOT compiler, ONNX schema) works on machines without it. All
shape, attribute and launch logic lives in :mod:`trt_plugins.spec` and :mod:`trt_plugins.aot`;
the decorated functions below only translate between TensorRT's descriptors and those.

Only an AOT implementation (``@trtp.aot_impl``) is registered: the PTX is baked into the engine,
which then runs without Python (``trtexec``, the C++ runtime, Triton Inference Server). Registering
a JIT ``@trtp.impl`` as well would force every network to choose with
``PREFER_AOT_PYTHON_PLUGINS``/``PREFER_JIT_PYTHON_PLUGINS``.

No ``from __future__ import annotations`` here on purpose: ``tensorrt.plugin`` inspects the
decorated functions' annotations as classes (``issubclass(param.annotation, TensorDesc)``).
"""

import importlib
from types import ModuleType
from typing import Any

from trt_plugins import aot, spec

INSTALL_HINT = (
    "TensorRT is not installed (the Python package 'tensorrt' cannot be imported). Install it with "
    "`pip install 'gtcompress[tensorrt]'` on a Linux machine with an NVIDIA GPU and driver; the TensorRT "
    "wheels fetch their libraries from NVIDIA's package index (pypi.nvidia.com), which must be reachable."
)

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


_import_tensorrt = import_tensorrt  # older name, used by trt_plugins.engine and runtime.backends


def tensorrt_available() -> bool:
    """Whether ``tensorrt`` and ``tensorrt.plugin`` can be imported."""
    try:
        import_tensorrt()
    except TensorRTNotAvailableError:
        return False
    return True


def is_registered() -> bool:
    """Whether :func:`register_plugin` has registered the plugin in this process."""
    return _REGISTERED


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


def register_plugin() -> None:
    """Register ``gtcompress::SparseGraphAttention`` with TensorRT's plugin registry (idempotent).

    Raises :class:`TensorRTNotAvailableError`, with install instructions, when TensorRT is missing.
    """
    global _REGISTERED
    if _REGISTERED:
        return
    trt, trtp = import_tensorrt()
    namespace = getattr(trtp.op, spec.PLUGIN_NAMESPACE, None)
    if namespace is not None and hasattr(namespace, spec.PLUGIN_NAME):
        _REGISTERED = True  # registered by an earlier import of this module (e.g. after a reload)
        return

    def checked(descs: tuple[Any, ...], heads: Any, head_dim: Any, scale: Any, has_bias: Any) -> spec.Attributes:
        """Validate attributes and inputs. Also run in ``aot_impl``, where TensorRT passes the attributes
        positionally: a mix-up there (e.g. heads <-> has_bias) then fails loudly against q's shape."""
        attrs = spec.validate_attributes(int(heads), int(head_dim), float(scale), int(has_bias))
        spec.validate_inputs([_dims(d) for d in descs], [_dtype_name(trt, d.dtype) for d in descs], attrs)
        return attrs

    @trtp.register(spec.PLUGIN_ID)
    def sparse_graph_attention_desc(
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
    ) -> trtp.TensorDesc:
        checked((q, k, v, rowptr, col, bias), heads, head_dim, scale, has_bias)
        return q.like()

    @trtp.autotune(spec.PLUGIN_ID)
    def sparse_graph_attention_autotune(
        q: trtp.TensorDesc,
        k: trtp.TensorDesc,
        v: trtp.TensorDesc,
        rowptr: trtp.TensorDesc,
        col: trtp.TensorDesc,
        bias: trtp.TensorDesc,
        outputs: tuple[trtp.TensorDesc],
    ) -> list[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination(spec.autotune_io_types(), "LINEAR")]

    @trtp.aot_impl(spec.PLUGIN_ID)
    def sparse_graph_attention_aot(
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
        outputs: tuple[trtp.TensorDesc],
        tactic: int,
    ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs]:
        attrs = checked((q, k, v, rowptr, col, bias), heads, head_dim, scale, has_bias)
        dtype = spec.output_dtype(_dtype_name(trt, q.dtype))
        cc = aot.current_compute_capability()
        kernel = aot.compile_kernel(dtype, attrs.head_dim, cc, attrs.scale, attrs.has_bias)
        n_nodes, n_heads = q.shape_expr[0], q.shape_expr[1]
        launch = trtp.KernelLaunchParams()
        launch.grid_x = trtp.max(trtp.cdiv(n_nodes, kernel.block_m), 1)  # spec.GRID_FORMULA
        launch.grid_y = n_heads
        launch.grid_z = 1
        launch.block_x = kernel.threads_per_block
        launch.shared_mem = kernel.shared_mem
        scalars = {"n_nodes": n_nodes, "n_heads": n_heads}
        extra_args = trtp.SymIntExprs(len(spec.KERNEL_SCALAR_ARGS))
        for i, name in enumerate(spec.KERNEL_SCALAR_ARGS):
            extra_args[i] = trtp.SymInt32(scalars[name])
        return kernel.kernel_name, kernel.ptx, launch, extra_args

    _REGISTERED = True
