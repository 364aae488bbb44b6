"""Which readout an imported PyG model pools with (part of :func:`~gtcompress.models.from_pyg.from_pyg`).

A graph-level PyG model pools in its ``forward``, usually with a function (``global_add_pool`` in PyG's
``examples/graph_gps.py``), which no module records. ``global_add_pool`` and ``global_mean_pool`` differ
by a factor of the graph size, ``global_max_pool`` by more, so a readout taken on trust is a silently
wrong import. The forward's *code* names the functions it calls, though: this module reads the names a
code object refers to (``co_names``: globals and attributes, so ``pyg_nn.global_max_pool`` too, and
those of nested code: lambdas, local functions), resolved where they can be (an alias of a PyG pool
function in the module's globals, a pool function held by the model or its class), and follows the
calls it can see into the model's own code: methods of its class (``self._pool(x, batch)``, and the
bases' with ``super()``) and functions of the same module, to any depth. The compiled bytecode is read,
not the source text, so a comment or a string naming a pool function does not count.

What it finds is a hint, not the forward's semantics (a branch not taken still names its function), so
it settles the readout only when exactly one PyG pool function is found and nothing else that could
pool is named (``scatter``, ``index_add_``, another PyG pool, or a node count such as ``bincount``:
:data:`OTHER_REDUCERS`); then a ``readout=`` that disagrees is refused. Several functions found leave the
choice to ``readout=`` (which must be one of them) or ``example=`` (which tries them first); none found
leaves it to them as before. A pooling written by hand (``x.sum(0)``, or a sum divided by a count that
``global_add_pool`` takes too) next to one PyG pool function is not seen: such a forward settles to that
function. ``example=`` is what catches it, and with ``example=`` the hint refuses nothing, it only orders
the readouts tried: the model's own output outranks a reading of its code.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from types import CodeType, FunctionType
from typing import Any

from gtcompress.errors import UnsupportedModelError

__all__ = ["OTHER_REDUCERS", "POOL_FUNCTIONS", "UNPLACED_CALLS", "ForwardPools", "read_forward", "settle_readout"]

#: Our readout -> the PyG function that pools so.
POOL_FUNCTIONS = {"sum": "global_add_pool", "mean": "global_mean_pool", "max": "global_max_pool"}

#: Names of functions and methods that can pool a graph's nodes other than the three above: one of them
#: in the forward means the PyG pool function found there may not be what pools its output.
OTHER_REDUCERS = frozenset(
    {
        "scatter",
        "scatter_add",
        "scatter_add_",
        "scatter_sum",
        "scatter_mean",
        "scatter_max",
        "scatter_min",
        "scatter_mul",
        "scatter_reduce",
        "scatter_reduce_",
        "index_add",
        "index_add_",
        "index_reduce",
        "index_reduce_",
        "segment",
        "segment_csr",
        "segment_coo",
        "global_sort_pool",
        "global_pool",
        # a graph's node count or per-graph padding: a mean written by hand as global_add_pool(x, batch) divided
        # by batch.bincount() or degree(batch), or pooled over to_dense_batch(x, batch)
        "bincount",
        "degree",
        "to_dense_batch",
    }
)

#: Calls a forward of the supported order (encoders -> GPSConv layers -> pooling -> head, activations inside
#: those modules) does not make: an activation of its own (between layers, after the head) or its layers
#: taken in reverse. Read from the code as the pool functions are, they are a hint of the same kind: a
#: forward naming one is refused unless ``example=`` checks the import on the model's own output.
UNPLACED_CALLS = frozenset(
    {
        "relu",
        "relu_",
        "relu6",
        "gelu",
        "elu",
        "selu",
        "celu",
        "leaky_relu",
        "leaky_relu_",
        "prelu",
        "rrelu",
        "silu",
        "mish",
        "softplus",
        "sigmoid",
        "tanh",
        "hardswish",
        "hardtanh",
        "softmax",
        "log_softmax",
        "reversed",
    }
)

# Modules whose functions pool (PyG's pooling and aggregation, torch_scatter): one reached under another
# name than the three is another reducer.
_REDUCER_MODULES = (
    "torch_geometric.nn.pool",
    "torch_geometric.nn.aggr",
    "torch_geometric.utils._scatter",
    "torch_scatter",
)


@dataclass
class ForwardPools:
    """What a model's forward was found to pool with: readout -> where (``Class.method``) it is named."""

    owner: str  # the model's class name, for messages
    found: dict[str, str] = field(default_factory=dict)
    others: dict[str, str] = field(default_factory=dict)  # another reducer's name -> where
    unplaced: dict[str, str] = field(default_factory=dict)  # a name of UNPLACED_CALLS -> where

    def settled(self) -> str | None:
        """The readout the code settles: exactly one PyG pool function and no other reducer."""
        return next(iter(self.found)) if len(self.found) == 1 and not self.others else None

    def names(self) -> str:
        """``global_add_pool (in GPS.forward) and global_max_pool (in GPS._pool)``, for messages."""
        parts = [f"{POOL_FUNCTIONS[r]} (in {self.found[r]})" for r in POOL_FUNCTIONS if r in self.found]
        return " and ".join(parts) if len(parts) < 3 else f"{parts[0]}, {parts[1]} and {parts[2]}"


def _pool_objects() -> dict[int, str]:
    from torch_geometric.nn import global_add_pool, global_max_pool, global_mean_pool

    return {id(global_add_pool): "sum", id(global_mean_pool): "mean", id(global_max_pool): "max"}


def _function(obj: Any) -> FunctionType | None:
    """The Python function behind ``obj`` (through staticmethod/classmethod, ``functools.partial``, bound
    methods and ``functools.wraps`` decorators), or ``None``."""
    if isinstance(obj, staticmethod | classmethod):
        obj = obj.__func__
    while isinstance(obj, functools.partial):  # self.pool = partial(global_max_pool, size=None)
        obj = obj.func
    obj = getattr(obj, "__func__", obj)
    try:
        obj = inspect.unwrap(obj)
    except ValueError:  # a __wrapped__ cycle
        return None
    return obj if isinstance(obj, FunctionType) else None


def _codes(code: CodeType) -> list[CodeType]:
    """``code`` and the code nested in it (lambdas, local functions, comprehensions)."""
    out = [code]
    for c in code.co_consts:
        if isinstance(c, CodeType):
            out.extend(_codes(c))
    return out


def _library(fn: FunctionType) -> bool:
    """``fn`` is torch's or PyG's (``nn.Module.__call__`` and its kind are not read), not the user's."""
    return (fn.__module__ or "").partition(".")[0] in ("torch", "torch_geometric", "torch_scatter")


def read_forward(model: Any) -> ForwardPools:
    """The PyG pool functions and other reducers ``type(model).forward`` refers to, and those of the
    model's own code it calls (see the module docstring). A forward that is not Python code gives none."""
    cls = type(model)
    out = ForwardPools(cls.__name__)
    start = _function(inspect.getattr_static(cls, "forward", None))
    if start is None or _library(start):
        return out
    pools = _pool_objects()
    by_name = {f: r for r, f in POOL_FUNCTIONS.items()}
    instance = vars(model)
    mro = [k for k in cls.__mro__ if k.__module__.partition(".")[0] not in ("torch", "torch_geometric", "builtins")]
    todo, seen = [start], set()
    while todo:
        fn = todo.pop()
        if fn.__code__ in seen:
            continue
        seen.add(fn.__code__)
        owner = next((i for i, k in enumerate(mro) if any(_function(v) is fn for v in vars(k).values())), None)
        for code in _codes(fn.__code__):
            for name in code.co_names:
                if name in UNPLACED_CALLS:
                    out.unplaced.setdefault(name, code.co_qualname)
                glob = fn.__globals__.get(name)
                # what `name` is: a global, a callable held by the model, a method of its class (self.name),
                # and with super() in the code, the bases' methods of that name
                held = [instance.get(name), inspect.getattr_static(cls, name, None)]
                if "super" in code.co_names and owner is not None:
                    held += [vars(k).get(name) for k in mro[owner + 1 :]]
                funcs = [f for f in map(_function, [glob, *held]) if f is not None]
                kind = by_name.get(name) or next((pools[id(f)] for f in funcs if id(f) in pools), None)
                if kind is not None:
                    out.found.setdefault(kind, code.co_qualname)
                elif name in OTHER_REDUCERS or any((f.__module__ or "").startswith(_REDUCER_MODULES) for f in funcs):
                    out.others.setdefault(name, code.co_qualname)
                else:
                    # the user's own code it calls: the same module's functions, the model's methods
                    own = _function(glob)
                    if own is not None and own.__module__ == fn.__module__:
                        todo.append(own)
                    todo += [f for f in map(_function, held) if f is not None and not _library(f)]
    return out


def settle_readout(
    task_level: str,
    readout: str | None,
    held: tuple[str, str] | None,
    code: ForwardPools,
    example: bool,
) -> list[str]:
    """The readouts to build, in order: the one known, or those an example will try.

    ``held`` is ``(kind, "path (Type)")`` of a pooling module the model holds (read by type, so it is
    trusted over the code's hint, but the two must agree); ``code`` is what :func:`read_forward` found."""
    if task_level == "node":
        return [readout or "sum"]  # no pooling: the value is never used
    by_code = code.settled()
    # several PyG pool functions and no other reducer: the readout is one of them
    several = [r for r in POOL_FUNCTIONS if r in code.found] if len(code.found) > 1 and not code.others else []
    if held is not None:
        kind, where = held
        if readout is not None and readout != kind:
            raise UnsupportedModelError(
                f"{where}: expected readout={kind!r} (the model pools so), not readout={readout!r} as passed"
            )
        if by_code is not None and by_code != kind and not example:
            raise UnsupportedModelError(
                f"{where}: the model holds this readout={kind!r} pooling module, but its forward calls "
                f"{code.names()} (readout={by_code!r}); pass ignore=[...] naming the module if the forward "
                "does not use it, or example=(batch, output) to check the import on the model's own output"
            )
        return [kind]
    if example:
        # The example checks every candidate on the model's own output, so the code's hint only orders them:
        # a misread hint (a mean written by hand around global_add_pool) must not refuse a readout it confirms.
        if readout is not None:
            return [readout]
        named = [by_code] if by_code is not None else several
        return named + [r for r in POOL_FUNCTIONS if r not in named]
    if by_code is not None:
        if readout is not None and readout != by_code:
            raise UnsupportedModelError(
                f"readout={readout!r} ({POOL_FUNCTIONS[readout]}) as passed, but {code.owner}'s forward calls "
                f"{code.names()}, which is readout={by_code!r}; pass readout={by_code!r} or leave readout out, "
                f"or pass example=(batch, output) as well to check readout={readout!r} on the model's own output"
            )
        return [by_code]
    if readout is not None:
        if several and readout not in several:
            raise UnsupportedModelError(
                f"readout={readout!r} ({POOL_FUNCTIONS[readout]}) as passed, but {code.owner}'s forward calls "
                f"{code.names()} only; pass one of readout={', readout='.join(map(repr, several))}, or pass "
                f"example=(batch, output) as well to check readout={readout!r} on the model's own output"
            )
        return [readout]
    if several:
        why = f"{code.owner}'s forward calls {code.names()}, so which one pools its output cannot be read"
        fix = f"pass readout={' or readout='.join(map(repr, several))}"
    else:
        why = (
            f"{code.owner}'s forward calls none of PyG's global_add_pool, global_mean_pool and global_max_pool"
            if not code.found
            else f"{code.owner}'s forward calls {code.names()} but also "
            + ", ".join(f"{n} (in {w})" for n, w in code.others.items())
        )
        why += ", so its pooling cannot be read"
        fix = (
            "pass readout='sum' (global_add_pool), readout='mean' (global_mean_pool) or readout='max' (global_max_pool)"
        )
    raise ValueError(
        f"readout is required for a graph-level model: {why}; {fix}, or example=(batch, output) to detect it"
    )
