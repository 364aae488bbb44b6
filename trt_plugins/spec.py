r"""Everything about the plugin that is plain arithmetic: names, attributes, shapes, configs, grid.

The TensorRT decorators (:mod:`trt_plugins.tensorrt_plugin`), the AOT compiler
(:mod:`trt_plugins.aot`), the torch launcher (:mod:`trt_plugins.kernels`) and the ONNX schema
(:mod:`trt_plugins.onnx_op`) all read their facts from here, so that none of them needs TensorRT to
be tested and none can disagree with another about, say, the order of the kernel arguments. That
is also why it passes 500 lines: split, the facts those four must agree on would be split too.

The op computes, per destination :math:`i` and head :math:`h`, over the CSR range
``rowptr[i]:rowptr[i+1]`` of incoming edges :math:`e` with source ``col[e]``,

.. math::
    o_{ih} = \sum_e \operatorname{softmax}_e\big(\tau\, q_{ih}^\top k_{\mathrm{col}[e]h} + b_{eh}\big)\,
    v_{\mathrm{col}[e]h},

and :math:`o_{ih} = 0` where the range is empty (gtcompress's one attention definition).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from trt_plugins.tuned import MEASURED

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

FLOAT_DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16")
#: Bytes every tensor pointer the kernels receive is a multiple of. TensorRT hands plugins 256-byte
#: aligned buffers and torch's allocator 512-byte aligned ones; promising 16 lets the compiler read
#: and write K/V/Q/out rows with 128-bit instructions. Without the promise Triton assumes nothing,
#: emits one 32-bit load per element, and the kernel needs about half again as many registers (ptxas
#: on sm_90a: 127 instead of 80 for fp32 4x16), so fewer programs share a multiprocessor.
POINTER_ALIGNMENT = 16
#: FMA contraction in every compile (AOT PTX and JIT launches alike), so the plugin and the torch op round
#: alike; unnamed, Triton's default applies, which TRITON_DEFAULT_FP_FUSION=0 and Triton 3.10 turn off.
FP_FUSION = True
#: ``rowptr`` and ``col`` are int32: TensorRT plugins take int32 indices natively and a graph batch
#: with 2**31 edges does not fit one engine call anyway.
INDEX_DTYPE = "int32"
MAX_HEAD_DIM = 256
INT32_MAX = 2**31 - 1
#: Headroom the kernels' int32 index arithmetic needs past the last edge and node: a chunk end
#: (``c_start + chunk``), the prefetch two tiles ahead, and ids ``n_nodes + lane`` for the lanes past
#: a tile's end. Graphs up to :data:`MAX_INDEX` edges and nodes fit; ``KernelConfig`` keeps its
#: chunk within the headroom.
INDEX_HEADROOM = 2**16
MAX_INDEX = INT32_MAX - INDEX_HEADROOM
#: Ways ``partials`` works a tile: ``scan`` sums ``p * v`` over a destination's edges with a
#: segmented scan over the ``[tile_e, block_h, block_d]`` block (any tile); ``dot`` with a product of
#: the tile's 0/1 same-destination matrix and that block, on tensor cores (``tile_e`` and
#: ``block_h * block_d`` at least :data:`MIN_DOT`); ``mma`` computes the scores and the sums as
#: per-head tensor-core products on K, Q and V as loaded (``tile_e`` and ``block_d`` at least
#: :data:`MIN_DOT`), which saves the per-element work of 16-bit inputs with wide heads.
AGGREGATES: tuple[str, ...] = ("scan", "dot", "mma")
MIN_DOT = 16

#: Two kernels run the op (:mod:`trt_plugins._kernel`): ``partials`` splits the edges into fixed
#: chunks and writes every row that lies inside one chunk, plus partial states for the rows cut by a
#: chunk border; ``combine`` merges those and zeroes rows without incoming edges, in place. TensorRT
#: runs each as a plugin of its own (:data:`PARTIALS_PLUGIN_ID` then :data:`COMBINE_PLUGIN_ID`, output
#: aliased to its first input). Kernel parameters follow TensorRT's AOT launch order: input pointers,
#: then the ``extra_args`` (int32 scalars), then output pointers.
KERNEL_SCALAR_ARGS: tuple[str, ...] = ("n_nodes", "n_edges")
PARTIALS_OUTPUTS: tuple[str, ...] = ("out", "part")
COMBINE_INPUTS: tuple[str, ...] = ("out_in", "part", "rowptr")
COMBINE_OUTPUTS: tuple[str, ...] = ("out",)
KERNEL_ARGS: dict[str, tuple[str, ...]] = {
    "partials": INPUT_NAMES + KERNEL_SCALAR_ARGS + PARTIALS_OUTPUTS,
    "combine": COMBINE_INPUTS + KERNEL_SCALAR_ARGS + COMBINE_OUTPUTS,
}
KERNELS: tuple[str, ...] = tuple(KERNEL_ARGS)
PARTIALS_PLUGIN_NAME = f"{PLUGIN_NAME}Partials"
COMBINE_PLUGIN_NAME = f"{PLUGIN_NAME}Combine"
PARTIALS_PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{PARTIALS_PLUGIN_NAME}"
COMBINE_PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{COMBINE_PLUGIN_NAME}"

GRID_FORMULAS: dict[str, str] = {
    "partials": "(max(1, cdiv(n_edges, CHUNK)), cdiv(heads, HEAD_GROUP), 1)",
    "combine": "(max(1, cdiv(n_nodes, BLOCK_R), cdiv(n_edges, CHUNK)), heads, 1)",
}
PART_SHAPE_FORMULA = "[2 * max(1, cdiv(n_edges, CHUNK)), heads, head_dim + 2] float32"

_TRITON_TYPE = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "int32": "i32", "int64": "i64"}

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
    """Tile sizes and launch shape of one kernel variant (both kernels share it).

    ``partials``: a program owns ``chunk = tile_e * tiles`` consecutive CSR edges and ``head_group``
    heads, and walks the edges ``tile_e`` at a time, each tile a ``[tile_e, block_h, block_d]``
    register block of gathered K/V rows (``block_h``, ``block_d``: the head group and head size
    rounded up to powers of two), with ``num_warps`` warps. ``combine``: ``block_r`` destinations per
    program for the zero rows, ``block_p`` partial records per step, :data:`COMBINE_WARPS` warps.
    """

    tile_e: int
    tiles: int
    block_h: int
    block_d: int
    block_r: int = 128
    block_p: int = 32
    num_warps: int = 4
    num_stages: int = 1
    head_group: int = 0  # 0: block_h (every head of a row in one program, as long as block_h covers them)
    prefetch: bool = False  # partials gathers the next tile's K/V rows while it works on this one
    aggregate: str = "scan"  # how partials works a tile: "scan", "dot" or "mma" (AGGREGATES)

    def __post_init__(self) -> None:
        # tl.arange takes powers of two only; a block's size is a power of two or Triton fails in
        # its compiler with a message that names none of these fields
        for name in ("tile_e", "block_h", "block_d", "block_r", "block_p", "num_warps"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1 and value & (value - 1) == 0):
                raise PluginSpecError(f"{name} must be a power of two >= 1, got {value!r}")
        for name in ("tiles", "num_stages"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise PluginSpecError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.head_group < 0:
            raise PluginSpecError(f"head_group must be >= 1 (or 0: block_h), got {self.head_group}")
        if self.head_group == 0:
            object.__setattr__(self, "head_group", self.block_h)
        if self.head_group > self.block_h:
            raise PluginSpecError(f"head_group {self.head_group} does not fit block_h {self.block_h}")
        if self.chunk + 2 * self.tile_e > INDEX_HEADROOM:
            raise PluginSpecError(
                f"chunk {self.chunk} (tile_e {self.tile_e} x tiles {self.tiles}) exceeds the int32 "
                f"headroom of {INDEX_HEADROOM} edges"
            )
        if self.aggregate not in AGGREGATES:
            raise PluginSpecError(f"aggregate must be one of {AGGREGATES}, got {self.aggregate!r}")
        if self.aggregate == "mma" and min(self.tile_e, self.block_d) < MIN_DOT:
            raise PluginSpecError(
                f"aggregate 'mma' needs tile_e >= {MIN_DOT} and block_d >= {MIN_DOT} (tl.dot's smallest "
                f"operand, per head), got tile_e {self.tile_e}, block_d {self.block_d}"
            )
        if self.aggregate == "dot" and min(self.tile_e, self.block_h * self.block_d) < MIN_DOT:
            raise PluginSpecError(
                f"aggregate 'dot' needs tile_e >= {MIN_DOT} and block_h * block_d >= {MIN_DOT} "
                f"(tl.dot's smallest operand), got tile_e {self.tile_e}, block_h * block_d "
                f"{self.block_h * self.block_d}"
            )

    @property
    def chunk(self) -> int:
        """Edges per ``partials`` program: the unit of work balance."""
        return self.tile_e * self.tiles


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
    for name, what, value in (("q", "nodes", n), ("col", "edges", e)):
        if value is not None and value > MAX_INDEX:
            raise PluginSpecError(
                f"input '{name}' has {value} {what}; the kernels index with int32 and take at most {MAX_INDEX}"
            )
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


def next_pow2(x: int) -> int:
    """Smallest power of two >= ``x`` (>= 1)."""
    return 1 << max(0, x - 1).bit_length()


#: Elements of one ``[tile_e, block_h, block_d]`` register block, per warp: 32 float32 registers per
#: thread and gathered tensor, in one-warp programs (:data:`RULE_WARPS`). The work of an edge's row
#: (its search, the segmented scans, the carry) is repeated by every thread that holds a piece of the
#: row, so the tile loop's warp instructions per edge fall with the warps per program: ptxas and the
#: SASS (sm_90a, ``python bench/kernel_static.py``) count 0.14-0.30 warp instructions per K/V byte for
#: float32 across 11 head shapes from 1x16 to 16x16 and 1x128 (Triton 3.9 and 3.6; 0.27-0.61 for
#: 16-bit rows, half as many bytes), where four-warp programs with prefetch cost 0.36-0.70 (0.68-1.4),
#: and an H200 issues about 0.25 per byte its memory delivers. One-warp programs take 127-244
#: registers, no spill, 8-16 per multiprocessor, 27-128 KiB of K/V gathers in flight per SM (the
#: four-warp ones 27-80). Counts, not time: the sweep (``bench/kernel.py``) times the rule against
#: four-warp, prefetching and tensor-core variants.
TILE_ELEMENTS_PER_WARP = 1024
#: Warps per ``partials`` program under the rule (see :data:`TILE_ELEMENTS_PER_WARP`).
RULE_WARPS = 1
#: Contiguous bytes of a K/V row one program reads: two 128-byte cache lines. Narrow rows (4 heads of
#: 16 floats) are read whole; wide rows (8 heads of 64) are split into head groups of this size over
#: programs, which keeps a tile in registers without shrinking it to a few edges.
GROUP_BYTES = 256
#: Bytes per element of each float dtype the kernels take.
ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2}
#: Target edges per ``partials`` program. Larger chunks mean fewer partial records for hub rows
#: (``combine`` reads ``in_degree / CHUNK`` of them for a row) but fewer programs on small graphs.
TARGET_CHUNK = 512


#: Configs measured best for a ``(heads, head_dim, dtype)`` by ``bench/kernel.py``'s sweep
#: (:mod:`trt_plugins.tuned`, written by ``bench/kernel_tuned.py``); every other shape takes the rule
#: in :func:`rule_config`.
TUNED: dict[tuple[int, int, str], KernelConfig] = {key: KernelConfig(**fields) for key, fields in MEASURED.items()}


def check_config(heads: int, head_dim: int, config: KernelConfig) -> KernelConfig:
    """``config`` if the kernels compute a ``[heads, head_dim]`` row right with it. A ``block_d``
    below ``head_dim`` would leave the row's last dims out of every score: a wrong answer, not an
    error, so it is refused here (for a config passed in, and for a :data:`TUNED` entry)."""
    if config.block_d < head_dim:
        raise PluginSpecError(
            f"config block_d {config.block_d} is smaller than head_dim {head_dim}: the kernels would skip "
            f"dims {config.block_d}..{head_dim - 1} (block_d must be a power of two >= head_dim)"
        )
    return config


@functools.cache  # the launcher selects a config per call; a tuned entry is checked once
def check_tuned(heads: int, head_dim: int, dtype: str, config: KernelConfig) -> KernelConfig:
    """``config`` if it may stand in :data:`TUNED` for ``(heads, head_dim, dtype)``: it fits the head
    (:func:`check_config`) and keeps the rule's chunk. The TensorRT plugins declare the ``part``
    buffer before TensorRT picks the dtype they run in, so a head shape needs one chunk for every
    dtype; the rule's is :data:`TARGET_CHUNK` for all."""
    check_config(heads, head_dim, config)
    rule = rule_config(heads, head_dim, dtype)
    if config.chunk != rule.chunk:
        raise PluginSpecError(
            f"tuned config for heads={heads}, head_dim={head_dim}, {dtype} has chunk {config.chunk}, the rule "
            f"{rule.chunk}: the TensorRT plugins need one part buffer shape for every dtype of a head shape"
        )
    return config


def select_config(heads: int, head_dim: int, dtype: str) -> KernelConfig:
    """The kernel variant for a head shape and dtype (one per triple; no run-time autotuning, so the
    TensorRT plugin, the AOT manifest and the torch launcher always agree)."""
    if (heads, head_dim, dtype) in TUNED:
        return check_tuned(heads, head_dim, dtype, TUNED[(heads, head_dim, dtype)])
    return rule_config(heads, head_dim, dtype)


@functools.cache  # pure; the launcher asks per call
def rule_config(heads: int, head_dim: int, dtype: str) -> KernelConfig:
    """The variant the rule picks for a head shape and dtype, whatever :data:`TUNED` holds."""
    if dtype not in FLOAT_DTYPES:
        raise PluginSpecError(f"dtype must be one of {FLOAT_DTYPES}, got {dtype}")
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        raise PluginSpecError(f"head_dim must be in [1, {MAX_HEAD_DIM}], got {head_dim}")
    if heads < 1:
        raise PluginSpecError(f"heads must be >= 1, got {heads}")
    head_group = min(heads, max(1, -(-GROUP_BYTES // (head_dim * ITEMSIZE[dtype]))))
    block_h, block_d = next_pow2(head_group), next_pow2(head_dim)
    num_warps = RULE_WARPS
    tile_e = max(4, min(64, TILE_ELEMENTS_PER_WARP * num_warps // (block_h * block_d)))
    tiles = max(1, TARGET_CHUNK // tile_e)
    block_p = max(8, min(64, 4096 // block_d))
    return KernelConfig(
        tile_e,
        tiles,
        block_h,
        block_d,
        block_r=128,
        block_p=block_p,
        num_warps=num_warps,
        head_group=head_group,
    )


def partials_constexprs(attrs: Attributes, config: KernelConfig) -> dict[str, int | float | bool]:
    """Compile-time constants of the ``partials`` kernel (the scale is compiled in: TensorRT's AOT
    launch passes only int32 scalars)."""
    return {
        "HEADS": attrs.heads,
        "HEAD_DIM": attrs.head_dim,
        "SCALE": float(attrs.scale),
        "HAS_BIAS": bool(attrs.has_bias),
        "TILE_E": config.tile_e,
        "TILES": config.tiles,
        "HEAD_GROUP": config.head_group,
        "BLOCK_H": config.block_h,
        "BLOCK_D": config.block_d,
        "PREFETCH": bool(config.prefetch),
        "DOT_AGG": config.aggregate == "dot",
        "MMA": config.aggregate == "mma",
    }


def combine_constexprs(attrs: Attributes, config: KernelConfig) -> dict[str, int | float | bool]:
    """Compile-time constants of the ``combine`` kernel."""
    return {
        "HEADS": attrs.heads,
        "HEAD_DIM": attrs.head_dim,
        "TILE_E": config.tile_e,
        "TILES": config.tiles,
        "BLOCK_R": config.block_r,
        "BLOCK_P": config.block_p,
        "BLOCK_D": config.block_d,
    }


#: Warps of every ``combine`` program. Its record merge holds ``block_p x block_d`` float32 values,
#: which one or two warps cannot keep in registers (ptxas, fp16 8x64: 255 registers and spills at
#: one warp, 124 at four), and its work is a small share of the op's, so it does not follow
#: ``partials``' warps.
COMBINE_WARPS = 4


def kernel_warps(kernel: str, config: KernelConfig) -> int:
    """Warps per program of ``kernel``: ``config.num_warps`` for ``partials``, :data:`COMBINE_WARPS`
    for ``combine``."""
    if kernel == "partials":
        return config.num_warps
    if kernel == "combine":
        return COMBINE_WARPS
    raise PluginSpecError(f"kernel must be one of {KERNELS}, got {kernel!r}")


def constexprs(kernel: str, attrs: Attributes, config: KernelConfig) -> dict[str, int | float | bool]:
    """Compile-time constants of ``kernel`` (``"partials"`` or ``"combine"``)."""
    if kernel == "partials":
        return partials_constexprs(attrs, config)
    if kernel == "combine":
        return combine_constexprs(attrs, config)
    raise PluginSpecError(f"kernel must be one of {KERNELS}, got {kernel!r}")


def kernel_signature(kernel: str, dtype: str, index_dtype: str = INDEX_DTYPE) -> dict[str, str]:
    """Triton signature of ``kernel``'s runtime arguments (``ASTSource`` form)."""
    if dtype not in FLOAT_DTYPES:
        raise PluginSpecError(f"dtype must be one of {FLOAT_DTYPES}, got {dtype}")
    if index_dtype not in ("int32", "int64"):
        raise PluginSpecError(f"index dtype must be int32 or int64, got {index_dtype}")
    if kernel not in KERNEL_ARGS:
        raise PluginSpecError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    f, i = _TRITON_TYPE[dtype], _TRITON_TYPE[index_dtype]
    kinds = {
        "q": f"*{f}",
        "k": f"*{f}",
        "v": f"*{f}",
        "bias": f"*{f}",
        "out": f"*{f}",
        "out_in": f"*{f}",
        "rowptr": f"*{i}",
        "col": f"*{i}",
        "part": "*fp32",
        "n_nodes": "i32",
        "n_edges": "i32",
    }
    return {name: kinds[name] for name in KERNEL_ARGS[kernel]}


def pointer_args(kernel: str) -> tuple[str, ...]:
    """The runtime arguments of ``kernel`` that are tensor pointers (:data:`POINTER_ALIGNMENT` holds for them)."""
    return tuple(name for name, kind in kernel_signature(kernel, FLOAT_DTYPES[0]).items() if kind.startswith("*"))


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def n_chunks(n_edges: int, chunk: int) -> int:
    """``partials`` programs (and pairs of partial records): ``max(1, cdiv(E, chunk))``."""
    if n_edges < 0 or chunk < 1:
        raise PluginSpecError(f"n_chunks needs n_edges >= 0 and chunk >= 1; got {n_edges}, {chunk}")
    return max(1, _cdiv(n_edges, chunk))


def part_shape(n_edges: int, heads: int, head_dim: int, config: KernelConfig) -> tuple[int, int, int]:
    """Shape of the float32 partial-state buffer :data:`PART_SHAPE_FORMULA`."""
    return (2 * n_chunks(n_edges, config.chunk), heads, head_dim + 2)


def head_programs(heads: int, config: KernelConfig) -> int:
    """``partials`` programs per chunk, one per head group (the grid's second axis): a function of the
    attributes alone, so TensorRT's launch takes it as a constant."""
    return _cdiv(heads, config.head_group)


def grid(kernel: str, n_nodes: int, n_edges: int, heads: int, config: KernelConfig) -> tuple[int, int, int]:
    """Launch grid of ``kernel`` (:data:`GRID_FORMULAS`): a function of ``(N, E, heads)`` only, never
    empty, so a graph with no node or no edge is still a valid launch."""
    if n_nodes < 0 or n_edges < 0 or heads < 1:
        raise PluginSpecError(f"grid needs n_nodes >= 0, n_edges >= 0, heads >= 1; got {n_nodes}, {n_edges}, {heads}")
    chunks = n_chunks(n_edges, config.chunk)
    if kernel == "partials":
        return (chunks, head_programs(heads, config), 1)
    if kernel == "combine":
        return (max(1, _cdiv(n_nodes, config.block_r), chunks), heads, 1)
    raise PluginSpecError(f"kernel must be one of {KERNELS}, got {kernel!r}")


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
