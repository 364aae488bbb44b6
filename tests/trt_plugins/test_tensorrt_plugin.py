"""TensorRT wiring, checked against a stand-in for ``tensorrt.plugin`` (TensorRT cannot be installed here).

The stand-in enforces the rules of the real module that our code depends on, as read from
NVIDIA/TensorRT ``python/packaging/bindings_wheel/tensorrt/plugin`` (``_validate.py``, ``_lib.py``,
``_plugin_class.py``, ``_tensor.py``): annotations are classes, tensors come first, no defaults,
``aot_impl`` takes ``(inputs..., attributes..., outputs, tactic)`` and must annotate its 4-tuple
return, extra kernel arguments must be ``SymInt32``, a plugin id is registered once. It then calls
our functions the way TensorRT's ``_TemplateAOTPlugin`` does. The real thing is exercised by
``test_tensorrt_real.py`` wherever TensorRT is installed.
"""

from __future__ import annotations

import inspect
import sys
import types
import typing
from pathlib import Path
from typing import Any

import pytest

from trt_plugins import spec, tensorrt_plugin
from trt_plugins.spec import PluginSpecError
from trt_plugins.tensorrt_plugin import TensorRTNotAvailableError, register_plugin, tensorrt_available


class FakeDataType:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"DataType.{self.name}"


def make_fake_tensorrt() -> tuple[types.ModuleType, types.ModuleType]:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.9.0-fake"  # type: ignore[attr-defined]
    for name, trt_name in [("float32", "FLOAT"), ("float16", "HALF"), ("int32", "INT32"), ("int64", "INT64")]:
        setattr(trt, name, FakeDataType(trt_name))
    trtp = types.ModuleType("tensorrt.plugin")

    class ShapeExpr:
        def __init__(self, value: int | None = None, text: str | None = None, fake: bool = False) -> None:
            self.value, self.text, self._fake = value, text if text is not None else str(value), fake

        @property
        def is_fake(self) -> bool:
            return self._fake

        @property
        def is_constant(self) -> bool:
            if self._fake:
                raise RuntimeError("Not accessible for fake 'ShapeExpr's")
            return self.value is not None

        def constant_value(self) -> int:
            if not self.is_constant:
                raise RuntimeError("not constant")
            assert self.value is not None
            return self.value

        def _op(self, sym: str, fn: Any, other: Any) -> ShapeExpr:
            other = other if isinstance(other, ShapeExpr) else ShapeExpr(other)
            both = self.value is not None and other.value is not None
            return ShapeExpr(fn(self.value, other.value) if both else None, f"{sym}({self.text}, {other.text})")

    class TensorDesc:
        def __init__(self, shape: list[ShapeExpr], dtype: FakeDataType) -> None:
            self.shape_expr, self.dtype = shape, dtype

        def like(self) -> TensorDesc:
            return TensorDesc(list(self.shape_expr), self.dtype)

    class SymExprs:
        pass

    class SymInt32:
        def __init__(self, value: Any) -> None:
            self.expr = value if isinstance(value, ShapeExpr) else ShapeExpr(value)

    class SymIntExprs(SymExprs):
        def __init__(self, length: int) -> None:
            self._items: list[Any] = [None] * length

        def __setitem__(self, i: int, value: Any) -> None:
            if i >= len(self._items):
                raise IndexError("Index out of range")
            self._items[i] = value

        def __len__(self) -> int:
            return len(self._items)

        def __iter__(self) -> typing.Iterator[Any]:
            return iter(self._items)

    class KernelLaunchParams:
        def __init__(self) -> None:
            self.grid_x: Any = 1
            self.grid_y: Any = 1
            self.grid_z: Any = 1
            self.block_x: Any = 1
            self.block_y: Any = 1
            self.block_z: Any = 1
            self.shared_mem: Any = 0

    class AutoTuneCombination:
        def __init__(self, io_types: str | None = None, layouts: str | None = None, tactics: Any = None) -> None:
            self.io_types = [t.strip() for t in (io_types or "").split(",") if t.strip()]
            self.layouts, self.tactics = layouts, tactics

    def cdiv(a: Any, b: Any) -> ShapeExpr:
        return a._op("cdiv", lambda x, y: -(-x // y), b)

    def max_(a: Any, b: Any) -> ShapeExpr:
        return a._op("max", max, b)

    registry: dict[str, dict[str, Any]] = {}
    op = types.ModuleType("tensorrt.plugin.op")

    def _check_annotation(fn: Any) -> inspect.Signature:
        sig = inspect.signature(fn)
        for name, p in sig.parameters.items():
            if isinstance(p.annotation, str):
                raise ValueError(f"{fn.__name__}: annotation of {name} is a string; tensorrt.plugin needs classes")
            if p.default is not inspect.Parameter.empty:
                raise ValueError(f"Argument {name} has a default value")
        return sig

    def register(plugin_id: str) -> Any:
        def deco(fn: Any) -> Any:
            ns, name = plugin_id.split("::")
            if hasattr(op, ns) and hasattr(getattr(op, ns), name):
                raise ValueError(f"already has a definition for '{name}'")
            sig = _check_annotation(fn)
            tensors, attrs, seen_attr = [], {}, False
            for pname, p in sig.parameters.items():
                if inspect.isclass(p.annotation) and issubclass(p.annotation, TensorDesc):
                    if seen_attr:
                        raise ValueError("TensorDescs args and attribute args cannot be interspersed")
                    tensors.append(pname)
                else:
                    if p.annotation not in (int, float, bytes, bool, str):
                        raise ValueError(f"Attribute '{pname}' of type {p.annotation} is not supported")
                    attrs[pname] = p.annotation
                    seen_attr = True
            if sig.return_annotation is not TensorDesc:
                raise ValueError("Return types can only be TensorDesc or Tuple[TensorDesc]")
            registry[plugin_id] = {"register": fn, "tensors": tensors, "attrs": attrs}
            if not hasattr(op, ns):
                setattr(op, ns, types.ModuleType(f"tensorrt.plugin.op.{ns}"))
            setattr(getattr(op, ns), name, registry[plugin_id])
            return fn

        return deco

    def aot_impl(plugin_id: str) -> Any:
        def deco(fn: Any) -> Any:
            d = registry[plugin_id]
            sig = _check_annotation(fn)
            expected = [*d["tensors"], *d["attrs"], "outputs", "tactic"]  # TRT passes every attribute
            if list(sig.parameters) != expected:
                raise ValueError(f"aot_impl signature {list(sig.parameters)} != {expected}")
            for name, kind in d["attrs"].items():
                if sig.parameters[name].annotation is not kind:
                    raise ValueError(f"Attribute '{name}' has a type annotation different from the one registered")
            ret = sig.return_annotation
            args = typing.get_args(ret)
            if typing.get_origin(ret) is not tuple or len(args) != 4:
                raise ValueError("aot_impl must annotate its return as a 4-tuple")
            if not (issubclass(args[2], KernelLaunchParams) and issubclass(args[3], SymExprs)):
                raise ValueError("aot_impl return annotation must end with KernelLaunchParams, SymExprs")
            d["aot_impl"] = fn
            return fn

        return deco

    def autotune(plugin_id: str) -> Any:
        def deco(fn: Any) -> Any:
            d = registry[plugin_id]
            names = list(_check_annotation(fn).parameters)
            if names[: len(d["tensors"])] != d["tensors"] or names[-1] != "outputs":
                raise ValueError(f"autotune signature {names} inconsistent with {d['tensors']}")
            d["autotune"] = fn
            return fn

        return deco

    for obj in (ShapeExpr, TensorDesc, SymExprs, SymInt32, SymIntExprs, KernelLaunchParams, AutoTuneCombination):
        setattr(trtp, obj.__name__, obj)
    trtp.cdiv, trtp.max = cdiv, max_  # type: ignore[attr-defined]
    trtp.register, trtp.aot_impl, trtp.autotune, trtp.op = register, aot_impl, autotune, op  # type: ignore[attr-defined]
    trtp.REGISTRY = registry  # type: ignore[attr-defined]
    trt.plugin = trtp  # type: ignore[attr-defined]
    return trt, trtp


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> types.ModuleType:
    trt, trtp = make_fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", trtp)
    monkeypatch.setattr(tensorrt_plugin, "_REGISTERED", False)
    monkeypatch.setenv("GTCOMPRESS_CUDA_ARCH", "80")
    monkeypatch.setenv("GTCOMPRESS_CACHE", str(tmp_path))
    return trtp


def _descs(trtp: Any, n: int | None, e: int | None, h: int, d: int, dtype: str = "float32") -> list[Any]:
    trt = sys.modules["tensorrt"]
    f, i = getattr(trt, dtype), trt.int32

    def dim(v: int | None, name: str) -> Any:
        return trtp.ShapeExpr(v, name if v is None else str(v))

    nn, ee = dim(n, "N"), dim(e, "E")
    rp = nn._op("add", lambda a, b: a + b, 1)
    return [
        trtp.TensorDesc([nn, dim(h, ""), dim(d, "")], f),
        trtp.TensorDesc([nn, dim(h, ""), dim(d, "")], f),
        trtp.TensorDesc([nn, dim(h, ""), dim(d, "")], f),
        trtp.TensorDesc([rp], i),
        trtp.TensorDesc([ee], i),
        trtp.TensorDesc([ee, dim(h, "")], f),
    ]


def test_registers_once_with_the_documented_schema(fake_trt: Any) -> None:
    register_plugin()
    register_plugin()  # idempotent: the fake registry would raise on a second definition
    d = fake_trt.REGISTRY[spec.PLUGIN_ID]
    assert d["tensors"] == list(spec.INPUT_NAMES)
    assert list(d["attrs"].items()) == list(spec.ATTRIBUTES)
    assert {"register", "aot_impl", "autotune"} <= set(d)
    assert tensorrt_plugin.is_registered() and tensorrt_available()


def test_reregistration_after_module_state_loss_is_skipped(fake_trt: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    register_plugin()
    monkeypatch.setattr(tensorrt_plugin, "_REGISTERED", False)
    register_plugin()  # finds gtcompress.SparseGraphAttention in trtp.op and does not redefine it
    assert tensorrt_plugin.is_registered()


def test_output_desc_and_validation(fake_trt: Any) -> None:
    register_plugin()
    reg = fake_trt.REGISTRY[spec.PLUGIN_ID]["register"]
    attrs = {"heads": 4, "head_dim": 16, "scale": 0.25, "has_bias": 1}
    # build time: placeholder shapes (like get_output_data_types) and symbolic ones
    fake_descs = [
        fake_trt.TensorDesc([fake_trt.ShapeExpr(fake=True)] * len(x.shape_expr), x.dtype)
        for x in _descs(fake_trt, 5, 9, 4, 16)
    ]
    assert reg(*fake_descs, **attrs).dtype.name == "FLOAT"
    out = reg(*_descs(fake_trt, None, None, 4, 16, "float16"), **attrs)
    assert out.dtype.name == "HALF" and [e.text for e in out.shape_expr] == ["N", "4", "16"]
    with pytest.raises(PluginSpecError, match="heads=3"):
        reg(*_descs(fake_trt, None, None, 4, 16), **{**attrs, "heads": 3})
    bad = _descs(fake_trt, 10, 30, 4, 16)
    bad[5] = fake_trt.TensorDesc([fake_trt.ShapeExpr(29), fake_trt.ShapeExpr(4)], bad[5].dtype)
    with pytest.raises(PluginSpecError, match="'bias'"):
        reg(*bad, **attrs)
    bad = _descs(fake_trt, 10, 30, 4, 16)
    bad[3] = fake_trt.TensorDesc(bad[3].shape_expr, sys.modules["tensorrt"].int64)
    with pytest.raises(PluginSpecError, match="'rowptr' must be int32"):
        reg(*bad, **attrs)


def test_autotune_lists_fp32_and_fp16(fake_trt: Any) -> None:
    register_plugin()
    tune = fake_trt.REGISTRY[spec.PLUGIN_ID]["autotune"]
    (combo,) = tune(*_descs(fake_trt, 5, 9, 4, 16), outputs=(None,))
    assert combo.io_types == ["FP32|FP16"] * 3 + ["INT32"] * 2 + ["FP32|FP16"] * 2 and combo.layouts == "LINEAR"


@pytest.mark.parametrize(("n", "grid_x"), [(37, 3), (0, 1), (None, None)])
def test_aot_impl_returns_ptx_launch_params_and_int32_args(fake_trt: Any, n: int | None, grid_x: int | None) -> None:
    register_plugin()
    aot_fn = fake_trt.REGISTRY[spec.PLUGIN_ID]["aot_impl"]
    descs = _descs(fake_trt, n, 9, 4, 32, "float16")
    name, ptx, launch, extra = aot_fn(*descs, 4, 32, 0.5, 1, (descs[0].like(),), 0)  # as _TemplateAOTPlugin calls
    assert name == "sparse_graph_attention_fwd" and isinstance(ptx, str)
    assert ".target sm_80" in ptx and ".version 7.0" in ptx and f".entry {name}(" in ptx
    assert launch.block_x == 128 and launch.grid_z == 1 and 0 < launch.shared_mem <= 48 * 1024
    assert launch.grid_x.value == grid_x and launch.grid_y.value == 4
    if n is None:
        assert launch.grid_x.text == "max(cdiv(N, 16), 1)"
    assert len(extra) == len(spec.KERNEL_SCALAR_ARGS)
    assert all(isinstance(a, fake_trt.SymInt32) for a in extra)
    assert [a.expr.value for a in extra] == [n, 4]  # n_nodes, n_heads: kernel scalar order
    with pytest.raises(PluginSpecError, match="'q' must be one of"):
        aot_fn(*_descs(fake_trt, n, 9, 4, 32, "int64"), 4, 32, 0.5, 1, (None,), 0)
    with pytest.raises(PluginSpecError, match="heads=32"):  # attributes arriving out of order
        aot_fn(*descs, 32, 4, 0.5, 1, (None,), 0)


def test_missing_tensorrt_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tensorrt_plugin, "_REGISTERED", False)
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    with pytest.raises(TensorRTNotAvailableError, match=r"pip install 'gtcompress\[tensorrt\]'"):
        register_plugin()
    assert not tensorrt_available()


def test_tensorrt_without_plugin_module_names_the_version(monkeypatch: pytest.MonkeyPatch) -> None:
    trt, _ = make_fake_tensorrt()
    del trt.plugin  # type: ignore[attr-defined]
    monkeypatch.setattr(tensorrt_plugin, "_REGISTERED", False)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", None)
    with pytest.raises(TensorRTNotAvailableError, match=r"TensorRT 10\.9\.0-fake .*TensorRT 10\.9"):
        register_plugin()


def test_tensorrt_without_aot_impl_is_too_old(monkeypatch: pytest.MonkeyPatch) -> None:
    trt, trtp = make_fake_tensorrt()
    trt.__version__ = "10.7.0"  # type: ignore[attr-defined]
    del trtp.aot_impl  # type: ignore[attr-defined]
    monkeypatch.setattr(tensorrt_plugin, "_REGISTERED", False)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", trtp)
    with pytest.raises(
        TensorRTNotAvailableError, match=r"TensorRT 10\.7\.0 has no 'tensorrt.plugin' with ahead-of-time"
    ):
        register_plugin()
