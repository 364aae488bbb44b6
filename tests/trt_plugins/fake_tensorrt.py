"""A stand-in for ``tensorrt.plugin`` (TensorRT cannot be installed here), and helpers that call our
plugin functions as TensorRT does; ``test_tensorrt_plugin.py`` checks our TensorRT wiring with them.

The stand-in enforces the rules of the real module that our code depends on, as read from
NVIDIA/TensorRT ``python/packaging/bindings_wheel/tensorrt/plugin`` (``_validate.py``, ``_lib.py``,
``_plugin_class.py``, ``_tensor.py``, ``_top_level.py``): annotations are classes, tensors come
first, no defaults, ``register`` returns a ``TensorDesc`` or a tuple of them as annotated,
``aot_impl`` takes ``(inputs..., attributes..., outputs, tactic)`` and must annotate its 4-tuple
return, ``KernelLaunchParams`` fields and extra kernel arguments are ``SymInt32``, a plugin id is
registered once, ``trtp.cdiv``/``trtp.max`` refuse two ints, an aliased output is found by the
identity of the input descriptor it was made from, and shape expressions support ``+ - * //`` with
the expression on the left only. The helpers at the end call our functions the way
``_TemplatePluginBase``/``_TemplateAOTPlugin`` do: ``register`` first with placeholder ("fake")
shapes for the output dtypes and aliases, then with real (constant or symbolic) shapes, then
``aot_impl`` with the attributes positionally in ``register()`` order.

One rule is stricter than TensorRT on purpose: while the fake shapes are out, building a shape
expression from an int raises. TensorRT would then call a stale expression builder (or make another
fake), and an operation mixing a real and a fake expression hands ``None`` to the builder; so our
code keeps an input's expression as the left operand everywhere. The real module is exercised by
``test_tensorrt_real.py`` wherever TensorRT is installed.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any


class FakeDataType:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"DataType.{self.name}"


def make_fake_tensorrt() -> tuple[types.ModuleType, types.ModuleType]:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.9.0-fake"  # type: ignore[attr-defined]
    for name, trt_name in [
        ("float32", "FLOAT"),
        ("float16", "HALF"),
        ("bfloat16", "BF16"),
        ("int32", "INT32"),
        ("int64", "INT64"),
    ]:
        setattr(trt, name, FakeDataType(trt_name))
    trtp = types.ModuleType("tensorrt.plugin")
    phase = {"fake_shapes": False}  # True while register() runs for get_output_data_types

    class ShapeExpr:
        """A dimension: fake (no value, no formula), constant, or symbolic (a formula of named sizes)."""

        def __init__(self, value: int | None = None) -> None:
            self._fake = value is None
            if isinstance(value, int) and phase["fake_shapes"]:
                raise RuntimeError(f"ShapeExpr({value}) built while TensorRT only has fake shape expressions")
            self.value = value
            self._fn: Callable[[Mapping[str, int]], int] | None = None if value is None else (lambda env: value)
            self.text = "?" if value is None else str(value)

        @classmethod
        def symbol(cls, name: str) -> ShapeExpr:
            expr = cls(0)
            expr.value, expr._fn, expr.text = None, (lambda env: env[name]), name
            return expr

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
                raise RuntimeError("Not accessible for non-constant shape expressions")
            assert self.value is not None
            return self.value

        def evaluate(self, **env: int) -> int:
            """The value of a symbolic expression for concrete sizes (a stand-in helper, not TensorRT's)."""
            assert self._fn is not None, "fake expressions have no value"
            return self._fn(env)

        def _op(self, sym: str, fn: Callable[[int, int], int], other: Any) -> ShapeExpr:
            if self._fake:
                return ShapeExpr()  # TensorRT: an operation on a fake expression is fake
            other = other if isinstance(other, ShapeExpr) else ShapeExpr(other)
            if other._fake:
                raise TypeError(f"{sym}: a fake operand reaches IExprBuilder.operation")
            out = ShapeExpr(0)
            a, b = self._fn, other._fn
            assert a is not None and b is not None
            both = self.value is not None and other.value is not None
            out.value = fn(self.value, other.value) if both else None  # type: ignore[arg-type]
            out._fn, out.text = (lambda env: fn(a(env), b(env))), f"{sym}({self.text}, {other.text})"
            return out

        def __add__(self, other: Any) -> ShapeExpr:
            return self._op("add", lambda x, y: x + y, other)

        def __sub__(self, other: Any) -> ShapeExpr:
            return self._op("sub", lambda x, y: x - y, other)

        def __mul__(self, other: Any) -> ShapeExpr:
            return self._op("mul", lambda x, y: x * y, other)

        def __floordiv__(self, other: Any) -> ShapeExpr:
            return self._op("floordiv", lambda x, y: x // y, other)

    class TensorDesc:
        def __init__(self, shape_expr: list[ShapeExpr] | None = None, dtype: FakeDataType | None = None) -> None:
            self.shape_expr = None if shape_expr is None else list(shape_expr)
            self.dtype = dtype
            self._aliased_to: TensorDesc | None = None
            self._immutable = False

        def __setattr__(self, name: str, value: Any) -> None:
            if getattr(self, "_immutable", False) and name != "_immutable":
                raise ValueError("Cannot modify immutable TensorDesc properties")
            super().__setattr__(name, value)

        def _clone(self) -> TensorDesc:
            return TensorDesc(self.shape_expr, self.dtype)

        def like(self) -> TensorDesc:
            return self._clone()

        def aliased(self) -> TensorDesc:
            cloned = self._clone()
            cloned._aliased_to = self
            cloned._immutable = True
            return cloned

        def get_aliased(self) -> TensorDesc | None:
            return self._aliased_to

        @property
        def is_aliased(self) -> bool:
            return self._aliased_to is not None

    class SymExprs:
        pass

    class SymInt32:
        def __init__(self, value: Any = None) -> None:
            if isinstance(value, SymInt32):
                value = value.expr
            if not isinstance(value, ShapeExpr | int):
                raise TypeError(f"SymInt32 takes an int or a symbolic expression, got {type(value).__name__}")
            self.expr = value if isinstance(value, ShapeExpr) else ShapeExpr(value)

    class SymIntExprs(SymExprs):
        def __init__(self, length: int) -> None:
            self._items: list[Any] = [None] * length

        def __setitem__(self, i: int, value: Any) -> None:
            if i >= len(self._items):
                raise IndexError("Index out of range")
            if not isinstance(value, SymInt32 | int):
                raise ValueError(f"Value should be int or SymIntExpr. Got '{type(value)}'")
            self._items[i] = value

        def __len__(self) -> int:
            return len(self._items)

        def __iter__(self) -> typing.Iterator[Any]:
            return iter(self._items)

    launch_fields = ("grid_x", "grid_y", "grid_z", "block_x", "block_y", "block_z", "shared_mem")

    class KernelLaunchParams:
        def __init__(self) -> None:
            for name in launch_fields:
                setattr(self, name, 0 if name == "shared_mem" else 1)

        def __setattr__(self, name: str, value: Any) -> None:
            if name not in launch_fields:
                raise AttributeError(f"KernelLaunchParams object has no attribute '{name}'")
            self.__dict__[name] = SymInt32(value)

    class AutoTuneCombination:
        def __init__(self, io_types: str | None = None, layouts: str | None = None, tactics: Any = None) -> None:
            self.io_types = [t.strip() for t in (io_types or "").split(",") if t.strip()]
            self.layouts, self.tactics = layouts, tactics

    def _binary(sym: str, fn: Callable[[int, int], int]) -> Callable[[Any, Any], ShapeExpr]:
        def top_level(first: Any, second: Any) -> ShapeExpr:
            if isinstance(first, int):
                if isinstance(second, int):
                    raise ValueError("Both arguments cannot be 'int's")
                first = ShapeExpr(first)
            return first._op(sym, fn, second)

        return top_level

    def from_shape_expr(shape_expr: Any, dtype: FakeDataType) -> TensorDesc:
        return TensorDesc([e if isinstance(e, ShapeExpr) else ShapeExpr(e) for e in shape_expr], dtype)

    registry: dict[str, dict[str, Any]] = {}
    op = types.ModuleType("tensorrt.plugin.op")

    def _signature(fn: Any) -> inspect.Signature:
        sig = inspect.signature(fn)
        for name, p in sig.parameters.items():
            if isinstance(p.annotation, str):
                raise ValueError(f"{fn.__name__}: annotation of {name} is a string; tensorrt.plugin needs classes")
            if p.default is not inspect.Parameter.empty:
                raise ValueError(f"Argument {name} has a default value")
        return sig

    def _check_outputs_annotation(sig: inspect.Signature) -> None:
        ann = sig.parameters["outputs"].annotation
        if ann is not inspect.Parameter.empty and (
            typing.get_origin(ann) is not tuple or not all(issubclass(a, TensorDesc) for a in typing.get_args(ann))
        ):
            raise ValueError(f"'outputs' should be of type Tuple[TensorDesc]. Received {ann}.")

    def register(plugin_id: str) -> Any:
        def deco(fn: Any) -> Any:
            ns, name = plugin_id.split("::")
            if hasattr(op, ns) and hasattr(getattr(op, ns), name):
                raise ValueError(f"already has a definition for '{name}'")
            sig = _signature(fn)
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
            ret = sig.return_annotation
            if typing.get_origin(ret) is tuple:
                if not all(inspect.isclass(a) and issubclass(a, TensorDesc) for a in typing.get_args(ret)):
                    raise ValueError("Return types can only be TensorDesc or Tuple[TensorDesc]")
                num_outputs = len(typing.get_args(ret))
            elif ret is TensorDesc:
                num_outputs = 1
            else:
                raise ValueError("Return types can only be TensorDesc or Tuple[TensorDesc]")
            registry[plugin_id] = {"register": fn, "tensors": tensors, "attrs": attrs, "num_outputs": num_outputs}
            if not hasattr(op, ns):
                setattr(op, ns, types.ModuleType(f"tensorrt.plugin.op.{ns}"))
            setattr(getattr(op, ns), name, registry[plugin_id])
            return fn

        return deco

    def aot_impl(plugin_id: str) -> Any:
        def deco(fn: Any) -> Any:
            d = registry[plugin_id]
            sig = _signature(fn)
            expected = [*d["tensors"], *d["attrs"], "outputs", "tactic"]  # TRT passes every attribute
            if list(sig.parameters) != expected:
                raise ValueError(f"aot_impl signature {list(sig.parameters)} != {expected}")
            for name, kind in d["attrs"].items():
                if sig.parameters[name].annotation is not kind:
                    raise ValueError(f"Attribute '{name}' has a type annotation different from the one registered")
            _check_outputs_annotation(sig)
            ret = sig.return_annotation
            args = typing.get_args(ret)
            if typing.get_origin(ret) is not tuple or len(args) != 4:
                raise ValueError("aot_impl must annotate its return as a 4-tuple")
            for i in (0, 1):
                if not set(typing.get_args(args[i]) or (args[i],)) <= {str, bytes}:
                    raise ValueError(
                        f"Return annotation for argument at {i} is '{args[i]}'. Expected 'str' or 'bytes'."
                    )
            if not (issubclass(args[2], KernelLaunchParams) and issubclass(args[3], SymExprs)):
                raise ValueError("aot_impl return annotation must end with KernelLaunchParams, SymExprs")
            d["aot_impl"] = fn
            return fn

        return deco

    def autotune(plugin_id: str) -> Any:
        def deco(fn: Any) -> Any:
            d = registry[plugin_id]
            sig = _signature(fn)
            names = list(sig.parameters)
            middle = names[len(d["tensors"]) : -1]
            if (
                names[: len(d["tensors"])] != d["tensors"]
                or names[-1:] != ["outputs"]
                or middle != [a for a in d["attrs"] if a in middle]
            ):
                raise ValueError(f"autotune signature {names} inconsistent with {d['tensors']}, {list(d['attrs'])}")
            _check_outputs_annotation(sig)
            d["autotune"] = fn
            return fn

        return deco

    for obj in (ShapeExpr, TensorDesc, SymExprs, SymInt32, SymIntExprs, KernelLaunchParams, AutoTuneCombination):
        setattr(trtp, obj.__name__, obj)
    trtp.cdiv = _binary("cdiv", lambda x, y: -(-x // y))  # type: ignore[attr-defined]
    trtp.max = _binary("max", max)  # type: ignore[attr-defined]
    trtp.from_shape_expr = from_shape_expr  # type: ignore[attr-defined]
    trtp.register, trtp.aot_impl, trtp.autotune, trtp.op = register, aot_impl, autotune, op  # type: ignore[attr-defined]
    trtp.REGISTRY, trtp.PHASE = registry, phase  # type: ignore[attr-defined]
    trt.plugin = trtp  # type: ignore[attr-defined]
    return trt, trtp


# --- how TensorRT's _TemplatePluginBase / _TemplateAOTPlugin call the decorated functions ---------


def output_dtypes_and_aliases(
    trtp: Any, plugin_id: str, dtypes: list[Any], ranks: list[int], attrs: Mapping[str, Any]
) -> tuple[list[Any], dict[int, int]]:
    """``get_output_data_types``: ``register`` on fake shapes; an output aliased to an input is found
    by the identity of the input's descriptor (-1: not aliased)."""
    d = trtp.REGISTRY[plugin_id]
    descs = []
    for dtype, rank in zip(dtypes, ranks, strict=True):
        desc = trtp.TensorDesc([trtp.ShapeExpr() for _ in range(rank)], dtype)
        desc._immutable = True
        descs.append(desc)
    trtp.PHASE["fake_shapes"] = True
    try:
        outs = d["register"](*descs, **attrs)
    finally:
        trtp.PHASE["fake_shapes"] = False
    outs = outs if isinstance(outs, tuple) else (outs,)
    assert len(outs) == d["num_outputs"], "register() returned another number of outputs than it annotates"
    ids = {id(desc): i for i, desc in enumerate(descs)}
    aliases = {i: -1 if o.get_aliased() is None else ids[id(o.get_aliased())] for i, o in enumerate(outs)}
    return [o.dtype for o in outs], aliases


def output_descs(trtp: Any, plugin_id: str, descs: list[Any], attrs: Mapping[str, Any]) -> tuple[Any, ...]:
    """``get_output_shapes``: ``register`` on the inputs' real shape expressions."""
    outs = trtp.REGISTRY[plugin_id]["register"](*descs, **attrs)
    return outs if isinstance(outs, tuple) else (outs,)


def launch(trtp: Any, plugin_id: str, descs: list[Any], attrs: Mapping[str, Any]) -> tuple[str, str, Any, list[Any]]:
    """``get_launch_params``: ``aot_impl`` with every attribute positionally, in ``register()`` order,
    then TensorRT's checks of what comes back."""
    d = trtp.REGISTRY[plugin_id]
    outs = output_descs(trtp, plugin_id, descs, attrs)
    name, ptx, params, extra = d["aot_impl"](*descs, *(attrs[a] for a in d["attrs"]), outs, 0)
    assert isinstance(name, str | bytes) and isinstance(ptx, str | bytes)
    assert isinstance(params, trtp.KernelLaunchParams) and isinstance(extra, trtp.SymExprs)
    assert all(isinstance(a, trtp.SymInt32) for a in extra)
    return name, ptx, params, list(extra)
