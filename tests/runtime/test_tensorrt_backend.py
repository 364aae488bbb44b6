"""``TensorRTBackend``'s own logic, with TensorRT and cuda-python replaced by fakes.

TensorRT cannot be installed on our machines, so this is not TensorRT running: the fake engine runs
the same model's ONNX file with ONNX Runtime on what was copied into fake device memory, and fake
CUDA keeps one current device per thread and refuses memory of another device. What it checks is
ours: inputs copied with the right sizes and dtypes, output shapes read from the context, buffers
reused and grown, profile limits enforced before running, and every CUDA call made on the engine's
GPU, from any thread. The calls themselves follow TensorRT's and cuda-python's documented API.
"""

from __future__ import annotations

import ctypes
import shutil
import threading
import types
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

import trt_plugins.tensorrt_plugin as trt_plugin
from runtime import backends
from runtime.errors import GraphTooLargeError, SessionError
from runtime.session import GraphSession

MAX_NODES = 40


class FakeCuda:
    """cuda-python's runtime API as the backend calls it: ``(err, value)`` tuples, memory owned by a
    device, a current device per thread (as CUDA has)."""

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self, gpus: int) -> None:
        self.gpus = gpus
        self.local = threading.local()
        self.memory: dict[int, tuple[int, bytearray]] = {}  # pointer -> (device, bytes)
        self.next = 0x1000
        self.mallocs: list[int] = []

    @property
    def current(self) -> int:
        return getattr(self.local, "device", 0)

    def cudaSetDevice(self, device: int) -> tuple[int]:
        if not 0 <= device < self.gpus:
            return (101,)  # cudaErrorInvalidDevice
        self.local.device = device
        return (0,)

    def cudaStreamCreate(self) -> tuple[int, int]:
        return 0, 7

    def cudaStreamSynchronize(self, stream: int) -> tuple[int]:
        return (0,)

    def cudaMalloc(self, size: int) -> tuple[int, int]:
        ptr, self.next = self.next, self.next + size + 256
        self.memory[ptr] = (self.current, bytearray(size))
        self.mallocs.append(size)
        return 0, ptr

    def cudaFree(self, ptr: int) -> tuple[int]:
        self.memory.pop(ptr)
        return (0,)

    def buffer(self, ptr: int) -> bytearray:
        device, buf = self.memory[ptr]
        assert device == self.current, f"memory of GPU {device} used while GPU {self.current} is current"
        return buf

    def cudaMemcpyAsync(self, dst: int, src: int, n: int, kind: int, stream: int) -> tuple[int]:
        if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice:
            self.buffer(dst)[:n] = ctypes.string_at(src, n)
        else:
            ctypes.memmove(dst, bytes(self.buffer(src)[:n]), n)
        return (0,)


def fake_tensorrt(onnx_path: Path, cuda: FakeCuda) -> types.ModuleType:
    """A ``tensorrt`` whose engines run ``onnx_path`` with ONNX Runtime on fake device memory; an
    engine is made on the device current at deserialisation and runs only there."""
    trt = types.ModuleType("tensorrt")
    ref = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    io = [(i.name, i.type, i.shape, "in") for i in ref.get_inputs()] + [
        (o.name, o.type, o.shape, "out") for o in ref.get_outputs()
    ]
    ort_dtype = {
        "tensor(float)": np.float32,
        "tensor(int64)": np.int64,
        "tensor(int32)": np.int32,
        "tensor(bool)": np.bool_,
    }

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            self.level = level

    class TensorIOMode:
        INPUT, OUTPUT = "in", "out"

    class Context:
        def __init__(self, device: int) -> None:
            self.device = device
            self.shapes: dict[str, tuple[int, ...]] = {}
            self.addresses: dict[str, int] = {}
            self.outputs: dict[str, np.ndarray] | None = None

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            self.shapes[name] = tuple(shape)
            self.outputs = None
            return True

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            self.addresses[name] = ptr
            return True

        def _run(self) -> dict[str, np.ndarray]:
            assert cuda.current == self.device, f"engine of GPU {self.device} run while GPU {cuda.current} is current"
            feeds = {}
            for name, typ, _, mode in io:
                if mode == "in":
                    dt = np.dtype(ort_dtype[typ])
                    n = int(np.prod(self.shapes[name])) * dt.itemsize
                    feeds[name] = np.frombuffer(bytes(cuda.buffer(self.addresses[name])[:n]), dt).reshape(
                        self.shapes[name]
                    )
            return dict(zip([o.name for o in ref.get_outputs()], ref.run(None, feeds), strict=True))

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            # TensorRT infers output shapes from the input shapes; running the model on the inputs
            # already copied is the fake's way to know them.
            self.outputs = self._run()
            return self.outputs[name].shape

        def execute_async_v3(self, stream: int) -> bool:
            for name, res in self._run().items():
                cuda.buffer(self.addresses[name])[: res.nbytes] = res.tobytes()
            return True

    class Engine:
        num_io_tensors = len(io)

        def __init__(self) -> None:
            self.device = cuda.current

        def get_tensor_name(self, i: int) -> str:
            return io[i][0]

        def _io(self, name: str) -> tuple[Any, ...]:
            return next(t for t in io if t[0] == name)

        def get_tensor_dtype(self, name: str) -> Any:
            return ort_dtype[self._io(name)[1]]

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return tuple(d if isinstance(d, int) else -1 for d in self._io(name)[2])

        def get_tensor_mode(self, name: str) -> str:
            return self._io(name)[3]

        def get_tensor_profile_shape(self, name: str, profile: int) -> tuple[tuple[int, ...], ...]:
            shape = self.get_tensor_shape(name)
            top = MAX_NODES if name == "x" else 1000 * MAX_NODES  # nodes bound the engine here
            hi = tuple(d if d >= 0 else (top if axis == 0 else 1000 * MAX_NODES) for axis, d in enumerate(shape))
            lo = tuple(d if d >= 0 else 0 for d in shape)
            return lo, hi, hi

        def create_execution_context(self) -> Context:
            return Context(self.device)

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            return Engine() if data == b"engine" else None

    trt.Logger, trt.TensorIOMode, trt.Runtime = Logger, TensorIOMode, Runtime
    trt.init_libnvinfer_plugins = lambda logger, namespace: True
    trt.nptype = lambda dtype: dtype
    return trt


@pytest.fixture
def plan(exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, FakeCuda]:
    """An engine file beside the ONNX file it was built from (where its metadata is read), on a
    machine with two fake GPUs."""
    src = exported["node"].path
    shutil.copyfile(src, tmp_path / "model.onnx")
    (tmp_path / "model.plan").write_bytes(b"engine")
    cuda = FakeCuda(gpus=2)
    trt = fake_tensorrt(src, cuda)
    monkeypatch.setattr(trt_plugin, "import_tensorrt", lambda: (trt, None))
    monkeypatch.setattr(backends, "_load_cudart", lambda: cuda)
    return tmp_path / "model.plan", cuda


@pytest.mark.parametrize("device", [None, "cuda", "cuda:1"])
def test_a_plan_runs_its_graphs_on_its_gpu(plan, exported, device: str | None) -> None:
    path, _ = plan
    sess = GraphSession(path, device=device)
    assert sess.backend.device == (1 if device == "cuda:1" else 0)
    graphs = exported["node"].graphs(5, seed=1)
    ref = GraphSession(exported["node"].path)
    for got, want in zip(sess.run(graphs), ref.run(graphs), strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_plan_on_gpu_1_runs_from_any_thread(plan, exported) -> None:
    """CUDA's current device is per thread: a server thread calling run() starts on GPU 0, where the
    engine of GPU 1 and its buffers are not."""
    path, _ = plan
    sess = GraphSession(path, device="cuda:1")
    graphs = exported["node"].graphs(3, seed=2)
    want = GraphSession(exported["node"].path).run(graphs)
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(sess.run(graphs)))
    t.start()
    t.join()
    for a, b in zip(got[0], want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_buffers_are_reused_and_grown_not_reallocated_per_call(plan, exported) -> None:
    path, cuda = plan
    sess = GraphSession(path)
    small, big = exported["node"].graphs(1, seed=3, lo=4, hi=5), exported["node"].graphs(1, seed=4, lo=30, hi=31)
    sess.run(small)
    first = len(cuda.mallocs)
    sess.run(small)
    assert len(cuda.mallocs) == first  # same sizes: the same buffers
    np.testing.assert_array_equal(sess.run(big)[0], GraphSession(exported["node"].path).run(big)[0])
    assert len(cuda.mallocs) > first


def test_a_graph_past_the_engine_profile_is_refused_before_running(plan, exported) -> None:
    """The engine's optimisation profile becomes the session's limits: checked before any copy."""
    path, cuda = plan
    sess = GraphSession(path)
    assert sess.limits.max_nodes == MAX_NODES
    big = exported["node"].graphs(1, seed=5, lo=MAX_NODES + 1, hi=MAX_NODES + 2)
    with pytest.raises(GraphTooLargeError) as e:
        sess.run(big)
    assert not cuda.mallocs
    assert str(e.value) == f"input 'x': batch has {MAX_NODES + 1} nodes, more than the maximum {MAX_NODES}"


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("cpu", "a TensorRT plan runs on a GPU; device must be 'cuda' or 'cuda:N', got 'cpu'"),
        ("cuda:x", "a TensorRT plan runs on a GPU; device must be 'cuda' or 'cuda:N', got 'cuda:x'"),
        (
            "cuda:²",
            "a TensorRT plan runs on a GPU; device must be 'cuda' or 'cuda:N', got 'cuda:²'",
        ),  # isdigit, not int
    ],
)
def test_a_plan_refuses_a_device_that_is_not_a_gpu(plan, device: str, message: str) -> None:
    path, _ = plan
    with pytest.raises(SessionError) as e:
        GraphSession(path, device=device)
    assert str(e.value) == f"{path}: {message}"


def test_an_engine_tensorrt_cannot_read_is_named(plan) -> None:
    path, _ = plan
    path.write_bytes(b"not an engine")
    with pytest.raises(SessionError) as e:
        GraphSession(path)
    assert str(e.value) == f"{path}: TensorRT cannot deserialize this engine (other TensorRT version or GPU?)"
