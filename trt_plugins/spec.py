r"""Everything about the plugin that is plain arithmetic: names, attributes, shapes, configs, grid.

The TensorRT decorators (:mod:`trt_plugins.tensorrt_plugin`), the AOT compiler
(:mod:`trt_plugins.aot`), the torch launcher (:mod:`trt_plugins.kernels`) and the ONNX schema
(:mod:`trt_plugins.onnx_op`) all read their facts from here, so that none of them needs TensorRT to
be tested and none can disagree with another about, say, the order of the kernel arguments.

The op computes, per destination :math:`i` and head :math:`h`, over the CSR range
``rowptr[i]:rowptr[i+1]`` of incoming edges :math:`e` with source ``col[e]``,

.. math::
    o_{ih} = \sum_e \operatorname{softmax}_e\big(\tau\, q_{ih}^\top k_{\mathrm{col}[e]h} + b_{eh}\big)\,
    v_{\mathrm{col}[e]h},

and :math:`o_{ih} = 0` where the range is empty (gtcompress's one attention definition).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

PLUGIN_NAMESPACE = "gtcompress"
#: The plugin's name is also the ONNX ``op_type``: TensorRT's ONNX parser imports a node as a plugin
#: only when its ``op_type`` equals the registered plugin name (plus a ``plugin_namespace`` attribute).
PLUGIN_NAME = "SparseGraphAttention"
PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{PLUGIN_NAME}"
PLUGIN_VERSION = "1"

#: Plugin inputs in order. ``bias`` is always connected (a QDP plugin has a fixed input count); with
#: ``has_bias == 0`` it is a placeholder the kernel never reads (conventionally shape ``[0, heads]``).
INPUT_NAMES: tuple[str, ...] = ("q", "k", "v", "rowptr", "col", "bias")
OUTPUT_NAMES: tuple[str, ...] = ("out",)
#: Plugin attributes in ``register()`` order, with their Python types (TensorRT passes ONNX node
#: attributes only when they are named like these).
ATTRIBUTES: tuple[tuple[str, type], ...] = (("heads", int), ("head_dim", int), ("scale", float), ("has_bias", int))
ATTRIBUTE_NAMES: tuple[str, ...] = tuple(name for name, _ in ATTRIBUTES)

FLOAT_DTYPES: tuple[str, ...] = ("float32", "float16")
#: ``rowptr`` and ``col`` are int32: TensorRT plugins take int32 indices natively and a graph batch
#: with 2**31 edges does not fit one engine call anyway.
INDEX_DTYPE = "int32"
MAX_HEAD_DIM = 256
INT32_MAX = 2**31 - 1

#: Kernel parameters in order: TensorRT's AOT launch passes input pointers, then the ``extra_args``
#: (int32 scalars), then output pointers; the Triton kernel is written in exactly that order.
KERNEL_POINTER_INPUTS: tuple[str, ...] = INPUT_NAMES
KERNEL_SCALAR_ARGS: tuple[str, ...] = ("n_nodes", "n_heads")
KERNEL_OUTPUTS: tuple[str, ...] = OUTPUT_NAMES
KERNEL_ARG_NAMES: tuple[str, ...] = KERNEL_POINTER_INPUTS + KERNEL_SCALAR_ARGS + KERNEL_OUTPUTS

GRID_FORMULA = "(max(1, ceil(n_nodes / BLOCK_M)), n_heads, 1)"

_TRITON_TYPE = {"float32": "fp32", "float16": "fp16", "int32": "i32", "int64": "i64"}
_AUTOTUNE_TYPE = {"float32": "FP32", "float16": "FP16", "int32": "INT32"}

Dim = int | None
"""A dimension: an int when known, ``None`` when symbolic (TensorRT build time)."""


class PluginSpecError(ValueError):
    """An input or attribute of the plugin op is not what the op accepts; the message names it."""


@dataclass(frozen=True)
class Attributes:
    """Validated plugin attributes."""

    heads: int
    head_dim: int
    scale: float
    has_bias: bool

    def as_dict(self) -> dict[str, int | float]:
        """The attributes as TensorRT/ONNX see them (``has_bias`` as 0/1)."""
        return {"heads": self.heads, "head_dim": self.head_dim, "scale": self.scale, "has_bias": int(self.has_bias)}


@dataclass(frozen=True)
class KernelConfig:
    """Tile sizes and launch shape of one kernel variant.

    ``block_m`` destinations share a program and walk their (contiguous) CSR edge range in tiles of
    ``block_e`` edges; ``block_d`` is ``head_dim`` rounded up to a power of two. All three are >= 16
    because both products in the kernel are ``tl.dot`` (fp16 needs K >= 16 on the GPU; the
    interpreter would accept less, the AOT compile would not).
    """

    block_m: int
    block_e: int
    block_d: int
    num_warps: int
    num_stages: int

    @property
    def threads_per_block(self) -> int:
        return self.num_warps * 32


def default_scale(head_dim: int) -> float:
    """``1 / sqrt(head_dim)``, the reference attention's default."""
    return 1.0 / math.sqrt(head_dim)


def validate_attributes(heads: int, head_dim: int, scale: float, has_bias: int | bool) -> Attributes:
    """Check the attributes and return them typed; raises :class:`PluginSpecError` naming the bad one."""
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
        raise PluginSpecError(f"attribute 'heads' must be an int >= 1, got {heads!r}")
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or not 1 <= head_dim <= MAX_HEAD_DIM:
        raise PluginSpecError(f"attribute 'head_dim' must be an int in [1, {MAX_HEAD_DIM}], got {head_dim!r}")
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale):
        raise PluginSpecError(f"attribute 'scale' must be a finite float, got {scale!r}")
    if has_bias not in (0, 1):  # True/False compare equal to 1/0
        raise PluginSpecError(f"attribute 'has_bias' must be 0 or 1, got {has_bias!r}")
    return Attributes(heads=heads, head_dim=head_dim, scale=float(scale), has_bias=bool(has_bias))


def _same(a: Dim, b: Dim) -> bool:
    return a is None or b is None or a == b


def validate_inputs(shapes: Sequence[Sequence[Dim]], dtypes: Sequence[str], attrs: Attributes) -> None:
    """Check the six plugin inputs against each other and the attributes.

    ``shapes`` and ``dtypes`` follow :data:`INPUT_NAMES`; dtypes are numpy-style names
    (``"float32"``). Unknown (symbolic) dimensions are ``None`` and are not checked. Raises
    :class:`PluginSpecError` whose message names the offending input.
    """
    if len(shapes) != len(INPUT_NAMES) or len(dtypes) != len(INPUT_NAMES):
        raise PluginSpecError(
            f"expected {len(INPUT_NAMES)} inputs {INPUT_NAMES}, got {len(shapes)} shapes and {len(dtypes)} dtypes"
        )
    shape = dict(zip(INPUT_NAMES, (tuple(s) for s in shapes), strict=True))
    dtype = dict(zip(INPUT_NAMES, dtypes, strict=True))
    ranks = {"q": 3, "k": 3, "v": 3, "rowptr": 1, "col": 1, "bias": 2}
    for name, rank in ranks.items():
        if len(shape[name]) != rank:
            raise PluginSpecError(f"input '{name}' must have rank {rank}, got shape {shape[name]}")
    if dtype["q"] not in FLOAT_DTYPES:
        raise PluginSpecError(f"input 'q' must be one of {FLOAT_DTYPES}, got {dtype['q']}")
    for name in ("k", "v", "bias"):
        if dtype[name] != dtype["q"]:
            raise PluginSpecError(f"input '{name}' must have the dtype of 'q' ({dtype['q']}), got {dtype[name]}")
    for name in ("rowptr", "col"):
        if dtype[name] != INDEX_DTYPE:
            raise PluginSpecError(f"input '{name}' must be {INDEX_DTYPE}, got {dtype[name]}")
    n, h, d = shape["q"]
    if not _same(h, attrs.heads):
        raise PluginSpecError(f"input 'q' has {h} heads (dim 1) but attribute heads={attrs.heads}")
    if not _same(d, attrs.head_dim):
        raise PluginSpecError(f"input 'q' has head dim {d} (dim 2) but attribute head_dim={attrs.head_dim}")
    for name in ("k", "v"):
        if not all(_same(a, b) for a, b in zip(shape[name], shape["q"], strict=True)):
            raise PluginSpecError(f"input '{name}' must have the shape of 'q' {shape['q']}, got {shape[name]}")
    (rp,) = shape["rowptr"]
    if n is not None and not _same(rp, n + 1):
        raise PluginSpecError(f"input 'rowptr' must have n_nodes + 1 = {n + 1} entries, got {rp}")
    (e,) = shape["col"]
    for name, value in (("q", n), ("col", e)):
        if value is not None and value > INT32_MAX:
            raise PluginSpecError(f"input '{name}' is too large for int32 indexing ({value})")
    if attrs.has_bias:
        eb, hb = shape["bias"]
        if not _same(eb, e) or not _same(hb, attrs.heads):
            raise PluginSpecError(f"input 'bias' must have shape [E={e}, heads={attrs.heads}], got {shape['bias']}")


def output_shape(q_shape: Sequence[Dim]) -> tuple[Dim, ...]:
    """The output has the shape of ``q``: ``[n_nodes, heads, head_dim]``."""
    if len(q_shape) != 3:
        raise PluginSpecError(f"input 'q' must have rank 3, got shape {tuple(q_shape)}")
    return tuple(q_shape)


def output_dtype(q_dtype: str) -> str:
    """The output has the dtype of ``q``."""
    if q_dtype not in FLOAT_DTYPES:
        raise PluginSpecError(f"input 'q' must be one of {FLOAT_DTYPES}, got {q_dtype}")
    return q_dtype


def block_d_for(head_dim: int) -> int:
    """``head_dim`` rounded up to a power of two, at least 16 (the ``tl.dot`` minimum)."""
    return max(16, 1 << (head_dim - 1).bit_length())


def select_config(head_dim: int, dtype: str) -> KernelConfig:
    """The kernel variant for a head size and dtype (one config per pair; no autotuning)."""
    if dtype not in FLOAT_DTYPES:
        raise PluginSpecError(f"dtype must be one of {FLOAT_DTYPES}, got {dtype}")
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        raise PluginSpecError(f"head_dim must be in [1, {MAX_HEAD_DIM}], got {head_dim}")
    block_d = block_d_for(head_dim)
    # K and V tiles are [block_e, block_d]; keep them at <= 4096 elements (32 fp32 registers per
    # thread with 4 warps) so wide heads do not spill.
    block_e = 32 if block_d <= 64 else 16
    return KernelConfig(block_m=16, block_e=block_e, block_d=block_d, num_warps=4, num_stages=1)


def constexprs(attrs: Attributes, config: KernelConfig) -> dict[str, int | float | bool]:
    """The compile-time constants of one kernel variant (the scale is compiled in: TensorRT's AOT
    launch passes only int32 scalars)."""
    return {
        "HEAD_DIM": attrs.head_dim,
        "SCALE": float(attrs.scale),
        "HAS_BIAS": bool(attrs.has_bias),
        "BLOCK_M": config.block_m,
        "BLOCK_E": config.block_e,
        "BLOCK_D": config.block_d,
    }


def kernel_signature(dtype: str, index_dtype: str = INDEX_DTYPE) -> dict[str, str]:
    """Triton signature of the runtime arguments (``ASTSource`` form) for a float and index dtype."""
    if dtype not in FLOAT_DTYPES:
        raise PluginSpecError(f"dtype must be one of {FLOAT_DTYPES}, got {dtype}")
    if index_dtype not in ("int32", "int64"):
        raise PluginSpecError(f"index dtype must be int32 or int64, got {index_dtype}")
    f, i = _TRITON_TYPE[dtype], _TRITON_TYPE[index_dtype]
    return {
        "q": f"*{f}",
        "k": f"*{f}",
        "v": f"*{f}",
        "rowptr": f"*{i}",
        "col": f"*{i}",
        "bias": f"*{f}",
        "n_nodes": "i32",
        "n_heads": "i32",
        "out": f"*{f}",
    }


def grid(n_nodes: int, heads: int, block_m: int) -> tuple[int, int, int]:
    """Launch grid :data:`GRID_FORMULA`; never empty, so a zero-node call is still a valid launch
    (the kernel masks every row of a program past ``n_nodes``)."""
    if n_nodes < 0 or heads < 1 or block_m < 1:
        raise PluginSpecError(f"grid needs n_nodes >= 0, heads >= 1, block_m >= 1; got {n_nodes}, {heads}, {block_m}")
    return (max(1, -(-n_nodes // block_m)), heads, 1)


def autotune_io_types() -> str:
    """TensorRT ``AutoTuneCombination`` type string: the float I/O are all fp32 or all fp16
    (dependent ``|``), the index inputs int32."""
    floats = "|".join(_AUTOTUNE_TYPE[d] for d in FLOAT_DTYPES)
    kinds = {"q": floats, "k": floats, "v": floats, "rowptr": "INT32", "col": "INT32", "bias": floats, "out": floats}
    return ", ".join(kinds[name] for name in INPUT_NAMES + OUTPUT_NAMES)


def attributes_from_mapping(values: Mapping[str, object]) -> Attributes:
    """Validate attributes given by name (e.g. an ONNX node's), filling ``scale`` from ``head_dim``."""
    missing = [name for name in ("heads", "head_dim") if name not in values]
    if missing:
        raise PluginSpecError(f"missing attribute(s) {missing}")
    head_dim = values["head_dim"]
    scale = values.get("scale")
    if scale is None and isinstance(head_dim, int):
        scale = default_scale(head_dim)
    return validate_attributes(values["heads"], head_dim, scale, values.get("has_bias", 0))  # type: ignore[arg-type]
