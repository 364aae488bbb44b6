"""Execution backends of :class:`runtime.session.GraphSession`: ONNX Runtime and TensorRT engines.

ONNX Runtime takes an ordered provider list, as its ``InferenceSession`` does; by default
TensorRT EP > CUDA EP > CPU, keeping only providers this ONNX Runtime build has and dropping the
GPU ones on a machine without an NVIDIA device (``onnxruntime-gpu`` lists them everywhere and
would log a load failure for each on every session).

The TensorRT backend (``.plan``) uses the TensorRT 10 Python runtime (``deserialize_cuda_engine``,
``set_input_shape``, ``execute_async_v3``) with device buffers from ``cuda-python``; ``tensorrt``
is imported only through :mod:`trt_plugins` (the one package allowed to), and only when an engine
is opened.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from runtime.errors import GraphTooLargeError, SessionError
from runtime.graphs import Limits
from runtime.spec import ORT_TO_NUMPY

DEFAULT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
ProviderArg = str | tuple[str, dict[str, Any]]


class TensorInfo:
    """Name, numpy dtype and shape (``-1`` for a symbolic dimension) of a model input or output."""

    __slots__ = ("dtype", "name", "shape")

    def __init__(self, name: str, dtype: str, shape: list[int]) -> None:
        self.name, self.dtype, self.shape = name, dtype, shape

    def __repr__(self) -> str:
        return f"TensorInfo({self.name!r}, {self.dtype}, {self.shape})"


class Backend(Protocol):
    platform: str
    providers: list[str]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    limits: Limits

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def check_shapes(self, inputs: dict[str, np.ndarray]) -> None: ...

    def end_profiling(self) -> str | None: ...


def nvidia_gpu_present() -> bool:
    """Whether this machine exposes an NVIDIA device (driver loaded)."""
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidia0")


def resolve_providers(requested: list[ProviderArg] | None) -> list[ProviderArg]:
    """The provider list to give ONNX Runtime: validated ``requested`` or the default order."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if requested is None:
        gpu = nvidia_gpu_present()
        return [p for p in DEFAULT_PROVIDERS if p in available and (gpu or p == "CPUExecutionProvider")]
    out: list[ProviderArg] = []
    for p in requested:
        name, opts = (p, None) if isinstance(p, str) else p
        name = PROVIDER_ALIASES.get(name.lower(), name)
        if name not in available:
            raise SessionError(f"execution provider {name!r} is not available here; available: {', '.join(available)}")
        out.append(name if opts is None else (name, opts))
    if not out:
        raise SessionError("empty provider list")
    return out


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(e).__name__


def _symbolic(shape: list[Any]) -> list[int]:
    return [d if isinstance(d, int) and d >= 0 else -1 for d in shape]


class OrtBackend:
    """An ``onnxruntime.InferenceSession`` with quiet logging and sensible CPU threading."""

    platform = "onnxruntime_onnx"

    def __init__(
        self,
        path: Path,
        providers: list[ProviderArg] | None = None,
        *,
        threads: int | None = None,
        inter_op_threads: int | None = None,
        options: Any = None,
        profile_prefix: str | None = None,
        spinning: bool | None = None,
    ) -> None:
        import onnxruntime as ort

        so = options or ort.SessionOptions()
        so.log_severity_level = 3
        if spinning is not None:  # idle intra-op threads spin by default: fast alone, costly next to a server
            so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        if threads:
            so.intra_op_num_threads = int(threads)
        if inter_op_threads:
            so.inter_op_num_threads = int(inter_op_threads)
        if profile_prefix:
            so.enable_profiling = True
            so.profile_file_prefix = profile_prefix
        resolved = resolve_providers(providers)
        asked = [p if isinstance(p, str) else p[0] for p in resolved] if providers is not None else []
        try:  # providers asked for by name do not fall back to CPU: the user would get CPU numbers unknowingly
            self.session = ort.InferenceSession(str(path), so, providers=resolved, enable_fallback=0 if asked else 1)
        except SessionError:
            raise
        except Exception as e:  # ORT's own exception types (InvalidProtobuf, Fail, NoSuchFile…)
            gpu = [p for p in asked if p != "CPUExecutionProvider"]
            if gpu and ("EP" in str(e) or "provider" in str(e).lower() or ".so" in str(e)):
                raise SessionError(
                    f"{path}: execution provider {' / '.join(gpu)} cannot run here ({_first_line(e)}); ONNX Runtime "
                    "lists it, but its libraries or device are missing: use --providers cpu, or install CUDA/TensorRT"
                ) from None
            raise SessionError(f"{path}: ONNX Runtime cannot load it: {e}") from None
        self.providers = list(self.session.get_providers())
        dropped = [p for p in asked if p not in self.providers]
        if dropped:
            raise SessionError(
                f"{path}: execution provider {' / '.join(dropped)} could not be used here (ONNX Runtime runs it on "
                f"{', '.join(self.providers)}): use --providers cpu, or install what it needs"
            )
        self.inputs = [
            TensorInfo(i.name, ORT_TO_NUMPY.get(i.type, i.type), _symbolic(i.shape)) for i in self.session.get_inputs()
        ]
        self.outputs = [
            TensorInfo(o.name, ORT_TO_NUMPY.get(o.type, o.type), _symbolic(o.shape)) for o in self.session.get_outputs()
        ]
        unknown = [f"{i.name} ({i.dtype})" for i in self.inputs if i.dtype not in ORT_TO_NUMPY.values()]
        if unknown:  # bfloat16 and the float8 types have no numpy dtype to build these inputs in
            raise SessionError(
                f"{path}: inputs {', '.join(unknown)} have no numpy dtype; export float32 inputs "
                "(a model converted to a lower precision keeps float32 inputs with keep_io_types=True)"
            )
        # Float inputs the model declares in another float dtype (a model converted to float16 with
        # float16 inputs): pre-processing builds float32, which ONNX Runtime refused on every call
        # ("Unexpected input data type") and `gtc profile` died with its traceback. Cast, as the
        # TensorRT backend casts to its engine's dtypes.
        self._float_casts = {i.name: np.dtype(i.dtype) for i in self.inputs if i.dtype in ("float16", "float64")}
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.limits = Limits()
        self._names = [o.name for o in self.outputs]
        self._arena_on = bool(so.enable_cpu_mem_arena)
        self._shrink_above: tuple[int, int] | None = None
        self._shrink = ort.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def shrink_arena_above(self, nodes: int, edges: int) -> None:
        """Give the CPU memory arena's unused chunks back at the end of a call with more than ``nodes``
        nodes or ``edges`` edges. The arena grows to the largest call it has run and keeps that memory:
        in a server, one 100,000-node request left 465 MiB held through every small request after it.
        Not after every call: the next call then allocates its memory afresh, which made merged batches
        of 8,000 nodes 30-40 % slower; the memory of calls within a server's batch limits is what it
        needs anyway. Only where the arena is on (ONNX Runtime refuses the run option otherwise)."""
        self._shrink_above = (nodes, edges) if self._arena_on else None

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._float_casts:
            inputs = {
                k: a.astype(self._float_casts[k], copy=False) if k in self._float_casts and a.dtype.kind == "f" else a
                for k, a in inputs.items()
            }
        options = None
        if self._shrink_above is not None:
            x, ei = inputs.get("x"), inputs.get("edge_index")
            nodes, edges = (x.shape[0] if x is not None else 0), (ei.shape[-1] if ei is not None else 0)
            options = self._shrink if nodes > self._shrink_above[0] or edges > self._shrink_above[1] else None
        return dict(zip(self._names, self.session.run(self._names, inputs, options), strict=True))

    def check_shapes(self, inputs: dict[str, np.ndarray]) -> None:
        return None

    def end_profiling(self) -> str | None:
        return self.session.end_profiling() or None


def _load_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]  # older cuda-python
        except ImportError as e:
            raise SessionError(
                "running a TensorRT engine needs cuda-python for device memory (`pip install cuda-python`)"
            ) from e
    return cudart


def _cuda(result: Any) -> Any:
    """Unpack a cuda-python ``(err, value…)`` tuple, raising on an error code."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return rest[0] if len(rest) == 1 else (tuple(rest) if rest else None)


class TensorRTBackend:
    """A deserialized TensorRT engine run with ``execute_async_v3`` on one CUDA stream.

    The engine's optimisation profile 0 bounds every input dimension; :meth:`check_shapes` turns
    a graph too large for it into :class:`GraphTooLargeError` instead of a TensorRT failure."""

    platform = "tensorrt_plan"

    def __init__(self, path: Path, plugin: bool, device: int = 0) -> None:
        """``device``: the GPU the engine lives on. CUDA's current device is per thread and an engine
        and its buffers belong to the device current when they were made, so it is made current
        here and again in every :meth:`run` (Triton calls ``execute`` from its own threads)."""
        from trt_plugins.tensorrt_plugin import TensorRTNotAvailableError, import_tensorrt, register_plugin

        try:
            trt, _ = import_tensorrt()
            if plugin:
                register_plugin()
        except TensorRTNotAvailableError as e:
            raise SessionError(str(e)) from None
        self.trt, self.cudart = trt, _load_cudart()
        self.device = device
        _cuda(self.cudart.cudaSetDevice(device))
        self.logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(self.logger, "")  # ScatterElements with a reduction is a built-in plugin
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise SessionError(f"{path}: TensorRT cannot deserialize this engine (other TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        self.stream = _cuda(self.cudart.cudaStreamCreate())
        self.providers = ["TensorRT"]
        self.inputs, self.outputs = [], []
        self.profile: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))).name
            shape = [int(d) for d in self.engine.get_tensor_shape(name)]
            info = TensorInfo(name, dtype, shape)
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.inputs.append(info)
                lo, _, hi = self.engine.get_tensor_profile_shape(name, 0)
                self.profile[name] = (tuple(int(d) for d in lo), tuple(int(d) for d in hi))
            else:
                self.outputs.append(info)
        dims = {n: hi for n, (_, hi) in self.profile.items()}
        self.limits = Limits(
            max_nodes=dims["x"][0] if "x" in dims else None,
            max_edges=dims["edge_index"][1] if "edge_index" in dims else None,
            max_graphs=dims["node_counts"][0] if "node_counts" in dims else None,
        )
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self._lock = threading.Lock()

    def check_shapes(self, inputs: dict[str, np.ndarray]) -> None:
        for name, a in inputs.items():
            if name not in self.profile:
                continue
            lo, hi = self.profile[name]
            for axis, (d, a_lo, a_hi) in enumerate(zip(a.shape, lo, hi, strict=True)):
                if d > a_hi:
                    raise GraphTooLargeError(
                        name, f"dimension {axis} is {d}, above the TensorRT profile maximum {a_hi} of this engine"
                    )
                if d < a_lo:
                    raise GraphTooLargeError(
                        name, f"dimension {axis} is {d}, below the TensorRT profile minimum {a_lo} of this engine"
                    )

    def _device(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _cuda(self.cudart.cudaFree(ptr))
            size = max(nbytes, 2 * size, 256)
            ptr = int(_cuda(self.cudart.cudaMalloc(size)))
            self._buffers[name] = (ptr, size)
        return ptr

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.check_shapes(inputs)
        h2d = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        with self._lock:
            _cuda(self.cudart.cudaSetDevice(self.device))
            host = {}
            for info in self.inputs:
                a = np.ascontiguousarray(inputs[info.name], dtype=info.dtype)
                host[info.name] = a
                ptr = self._device(info.name, a.nbytes)
                self.context.set_input_shape(info.name, a.shape)
                if a.nbytes:
                    _cuda(self.cudart.cudaMemcpyAsync(ptr, a.ctypes.data, a.nbytes, h2d, self.stream))
                self.context.set_tensor_address(info.name, ptr)
            out = {}
            for info in self.outputs:
                shape = tuple(int(d) for d in self.context.get_tensor_shape(info.name))
                res = np.empty(shape, dtype=info.dtype)
                self.context.set_tensor_address(info.name, self._device(info.name, res.nbytes))
                out[info.name] = res
            if not self.context.execute_async_v3(int(self.stream)):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            for name, res in out.items():
                if res.nbytes:
                    ptr = self._buffers[name][0]
                    _cuda(self.cudart.cudaMemcpyAsync(res.ctypes.data, ptr, res.nbytes, d2h, self.stream))
            _cuda(self.cudart.cudaStreamSynchronize(self.stream))
            del host  # kept alive until the copies finished
        return out

    def end_profiling(self) -> str | None:
        return None

    def __del__(self) -> None:
        cudart = getattr(self, "cudart", None)
        if cudart is not None and getattr(self, "_buffers", None):
            cudart.cudaSetDevice(self.device)
        for ptr, _ in getattr(self, "_buffers", {}).values():
            if cudart is not None and ptr:
                cudart.cudaFree(ptr)
