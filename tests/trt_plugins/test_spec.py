"""Shape, attribute, config and grid logic of the plugin (plain Python, no TensorRT)."""

from __future__ import annotations

import inspect
import math

import pytest
import triton.language as tl

from trt_plugins import spec
from trt_plugins._kernel import sga_combine, sga_partials
from trt_plugins.spec import PluginSpecError

ATTRS = spec.validate_attributes(4, 16, 0.25, 1)
F32 = ["float32", "float32", "float32", "int32", "int32", "float32"]


def shapes(n: int | None = 10, e: int | None = 30, h: int = 4, d: int = 16) -> list[tuple[int | None, ...]]:
    rp = None if n is None else n + 1
    return [(n, h, d), (n, h, d), (n, h, d), (rp,), (e,), (e, h)]


def test_valid_inputs_pass_with_known_and_symbolic_dims() -> None:
    spec.validate_inputs(shapes(), F32, ATTRS)
    spec.validate_inputs(shapes(None, None), F32, ATTRS)
    spec.validate_inputs(shapes(0, 0), ["float16"] * 3 + ["int32"] * 2 + ["float16"], ATTRS)


@pytest.mark.parametrize(
    ("index", "shape", "dtype", "match"),
    [
        (0, (10, 4), None, "'q' must have rank 3"),
        (1, (10, 4, 8), None, "'k' must have the shape of 'q'"),
        (2, (9, 4, 16), None, "'v' must have the shape of 'q'"),
        (3, (10,), None, "'rowptr' must have n_nodes \\+ 1 = 11"),
        (4, (30, 1), None, "'col' must have rank 1"),
        (5, (29, 4), None, "'bias' must have shape \\[E=30, heads=4\\]"),
        (5, (30, 3), None, "'bias' must have shape"),
        (0, None, "float64", "'q' must be one of"),
        (1, None, "float16", "'k' must have the dtype of 'q'"),
        (3, None, "int64", "'rowptr' must be int32"),
        (4, None, "float32", "'col' must be int32"),
        (5, None, "float16", "'bias' must have the dtype of 'q'"),
    ],
)
def test_bad_input_is_named(index: int, shape: tuple[int, ...] | None, dtype: str | None, match: str) -> None:
    s, t = shapes(), list(F32)
    if shape is not None:
        s[index] = shape
    if dtype is not None:
        t[index] = dtype
    with pytest.raises(PluginSpecError, match=match):
        spec.validate_inputs(s, t, ATTRS)


def test_attributes_must_match_q() -> None:
    with pytest.raises(PluginSpecError, match="heads=3"):
        spec.validate_inputs(shapes(), F32, spec.validate_attributes(3, 16, 0.25, 1))
    with pytest.raises(PluginSpecError, match="head_dim=8"):
        spec.validate_inputs(shapes(), F32, spec.validate_attributes(4, 8, 0.25, 1))
    with pytest.raises(PluginSpecError, match="expected 6 inputs"):
        spec.validate_inputs(shapes()[:5], F32[:5], ATTRS)


def test_placeholder_bias_is_not_checked_without_has_bias() -> None:
    s = shapes()
    s[5] = (0, 4)
    spec.validate_inputs(s, F32, spec.validate_attributes(4, 16, 0.25, 0))
    with pytest.raises(PluginSpecError, match="'bias'"):
        spec.validate_inputs(s, F32, ATTRS)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0, 16, 0.1, 0), "'heads'"),
        ((True, 16, 0.1, 0), "'heads'"),
        ((2, 0, 0.1, 0), "'head_dim'"),
        ((2, 257, 0.1, 0), "'head_dim'"),
        ((2, 16, math.nan, 0), "'scale'"),
        ((2, 16, "0.1", 0), "'scale'"),
        ((2, 16, 0.1, 2), "'has_bias'"),
    ],
)
def test_bad_attribute_is_named(args: tuple, match: str) -> None:
    with pytest.raises(PluginSpecError, match=match):
        spec.validate_attributes(*args)


def test_attributes_round_trip() -> None:
    a = spec.validate_attributes(2, 64, 1, True)
    assert a == spec.Attributes(2, 64, 1.0, True)
    assert a.as_dict() == {"heads": 2, "head_dim": 64, "scale": 1.0, "has_bias": 1}
    assert list(a.as_dict()) == list(spec.ATTRIBUTE_NAMES)
    assert spec.attributes_from_mapping({"heads": 2, "head_dim": 64}).scale == 0.125
    with pytest.raises(PluginSpecError, match="head_dim"):
        spec.attributes_from_mapping({"heads": 2})


def test_output_shape_and_dtype() -> None:
    assert spec.output_shape((7, 2, 32)) == (7, 2, 32)
    assert spec.output_shape((None, 2, 32)) == (None, 2, 32)
    assert spec.output_dtype("float16") == "float16"
    with pytest.raises(PluginSpecError, match="'q'"):
        spec.output_shape((7, 64))
    with pytest.raises(PluginSpecError, match="'q'"):
        spec.output_dtype("int32")


CFG = spec.KernelConfig(tile_e=32, tiles=16, block_h=4, block_d=16, block_r=128, block_p=64)


@pytest.mark.parametrize(
    ("n", "e", "heads", "partials", "combine"),
    [
        (0, 0, 1, (1, 1, 1), (1, 1, 1)),  # nothing at all: still a valid launch
        (5, 0, 2, (1, 1, 1), (1, 2, 1)),
        (1, 512, 3, (1, 1, 1), (1, 3, 1)),  # heads 3 fit one group of block_h 4
        (1, 513, 3, (2, 1, 1), (2, 3, 1)),  # a single hub row: two chunks
        (1000, 600, 4, (2, 1, 1), (8, 4, 1)),  # more row blocks than chunks
        (100_000, 1_000_000, 4, (1954, 1, 1), (1954, 4, 1)),
    ],
)
def test_grids_depend_on_shapes_only(
    n: int, e: int, heads: int, partials: tuple[int, int, int], combine: tuple[int, int, int]
) -> None:
    assert CFG.chunk == 512
    assert spec.grid("partials", n, e, heads, CFG) == partials
    assert spec.grid("combine", n, e, heads, CFG) == combine
    assert spec.part_shape(e, heads, 16, CFG) == (2 * partials[0], heads, 18)


def test_grid_rejects_nonsense() -> None:
    with pytest.raises(PluginSpecError, match="n_nodes >= 0"):
        spec.grid("partials", -1, 0, 1, CFG)
    with pytest.raises(PluginSpecError, match="heads >= 1"):
        spec.grid("combine", 4, 4, 0, CFG)
    with pytest.raises(PluginSpecError, match="kernel must be one of"):
        spec.grid("fused", 4, 4, 1, CFG)


@pytest.mark.parametrize("dtype", spec.FLOAT_DTYPES)
@pytest.mark.parametrize(("heads", "head_dim"), [(1, 1), (1, 5), (4, 16), (3, 24), (8, 64), (1, 128), (2, 256)])
def test_select_config_fits_registers(dtype: str, heads: int, head_dim: int) -> None:
    c = spec.select_config(heads, head_dim, dtype)
    assert 1 <= c.head_group <= heads and c.block_h >= c.head_group and c.block_h & (c.block_h - 1) == 0
    itemsize = 4 if dtype == "float32" else 2
    # a program reads all heads of a row, or a group of at least GROUP_BYTES contiguous bytes
    assert c.head_group == heads or c.head_group * head_dim * itemsize >= spec.GROUP_BYTES
    assert c.block_d >= head_dim and c.block_d & (c.block_d - 1) == 0
    assert c.tile_e & (c.tile_e - 1) == 0 and c.tile_e >= 4
    assert c.tile_e * c.block_h * c.block_d <= spec.TILE_ELEMENTS_PER_WARP * c.num_warps or c.tile_e == 4
    assert c.chunk >= spec.TARGET_CHUNK // 2 and c.block_p * c.block_d <= 4096


def test_head_groups_of_the_issue_shapes() -> None:
    assert spec.select_config(4, 16, "float32").head_group == 4  # 256 bytes: the whole row in one program
    assert spec.select_config(4, 16, "float16").head_group == 4
    assert spec.select_config(8, 64, "float16").head_group == 2  # 1 KiB rows: 256-byte groups
    assert spec.select_config(8, 64, "float32").head_group == 1
    assert spec.grid("partials", 10, 5000, 8, spec.select_config(8, 64, "float16")) == (
        spec.n_chunks(5000, spec.select_config(8, 64, "float16").chunk),
        4,
        1,
    )
    with pytest.raises(PluginSpecError, match="head_group 4 does not fit block_h 2"):
        spec.KernelConfig(tile_e=4, tiles=1, block_h=2, block_d=16, head_group=4)


def test_aggregate_is_named_and_the_product_needs_its_operand_sizes() -> None:
    assert spec.select_config(4, 16, "float32").aggregate == "scan"
    dot = spec.KernelConfig(tile_e=16, tiles=2, block_h=2, block_d=8, aggregate="dot")
    assert spec.partials_constexprs(spec.validate_attributes(2, 8, 0.5, False), dot)["DOT_AGG"] is True
    mma = spec.KernelConfig(tile_e=16, tiles=2, block_h=1, block_d=16, aggregate="mma")
    assert spec.partials_constexprs(spec.validate_attributes(1, 16, 0.5, False), mma)["MMA"] is True
    with pytest.raises(
        PluginSpecError, match=r"aggregate 'mma' needs tile_e >= 16 and block_d >= 16 .* got tile_e 16, block_d 8"
    ):
        spec.KernelConfig(tile_e=16, tiles=2, block_h=4, block_d=8, aggregate="mma")
    with pytest.raises(PluginSpecError, match=r"aggregate must be one of \('scan', 'dot', 'mma'\), got 'sum'"):
        spec.KernelConfig(tile_e=16, tiles=2, block_h=2, block_d=8, aggregate="sum")
    with pytest.raises(
        PluginSpecError,
        match=r"aggregate 'dot' needs tile_e >= 16 and block_h \* block_d >= 16 \(tl.dot's smallest operand\), "
        r"got tile_e 8, block_h \* block_d 16",
    ):
        spec.KernelConfig(tile_e=8, tiles=2, block_h=2, block_d=8, aggregate="dot")
    with pytest.raises(PluginSpecError, match=r"got tile_e 16, block_h \* block_d 8"):
        spec.KernelConfig(tile_e=16, tiles=2, block_h=1, block_d=8, aggregate="dot")


def test_index_limits_leave_the_kernels_int32_headroom() -> None:
    """The kernels add a chunk and two tiles to edge indices and a lane to node ids in int32: graphs
    within INT32_MAX but inside that headroom would wrap silently, so they are refused by name."""
    attrs = spec.validate_attributes(2, 8, 0.5, False)
    dtypes = ["float32"] * 3 + ["int32"] * 2 + ["float32"]

    def shapes(n: int, e: int) -> list[tuple[int, ...]]:
        return [(n, 2, 8)] * 3 + [(n + 1,), (e,), (0, 2)]

    spec.validate_inputs(shapes(spec.MAX_INDEX, spec.MAX_INDEX), dtypes, attrs)
    assert spec.MAX_INDEX == 2**31 - 1 - 2**16
    with pytest.raises(
        PluginSpecError, match=rf"input 'col' has {spec.MAX_INDEX + 1} edges; the kernels index with int32 and take"
    ):
        spec.validate_inputs(shapes(10, spec.MAX_INDEX + 1), dtypes, attrs)
    with pytest.raises(PluginSpecError, match=rf"input 'q' has {spec.INT32_MAX} nodes; .* at most {spec.MAX_INDEX}"):
        spec.validate_inputs(shapes(spec.INT32_MAX, 10), dtypes, attrs)
    with pytest.raises(PluginSpecError, match=r"chunk 65536 \(tile_e 64 x tiles 1024\) exceeds the int32 headroom"):
        spec.KernelConfig(tile_e=64, tiles=1024, block_h=1, block_d=16)


def test_combine_keeps_its_own_warps() -> None:
    one_warp = spec.KernelConfig(tile_e=16, tiles=32, block_h=4, block_d=16, num_warps=1)
    assert spec.kernel_warps("partials", one_warp) == 1
    assert spec.kernel_warps("combine", one_warp) == spec.COMBINE_WARPS == 4
    with pytest.raises(PluginSpecError, match="kernel must be one of \\('partials', 'combine'\\), got 'fused'"):
        spec.kernel_warps("fused", one_warp)


def test_tuned_configs_override_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    tuned = spec.KernelConfig(tile_e=8, tiles=64, block_h=4, block_d=16)
    monkeypatch.setitem(spec.TUNED, (4, 16, "float32"), tuned)
    assert spec.select_config(4, 16, "float32") is tuned
    assert spec.select_config(4, 16, "float16") is not tuned


def test_rule_ignores_tuned_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    tuned = spec.KernelConfig(tile_e=8, tiles=64, block_h=4, block_d=16)
    monkeypatch.setitem(spec.TUNED, (4, 16, "float32"), tuned)
    assert spec.rule_config(4, 16, "float32") != tuned
    assert spec.rule_config(4, 16, "float32").num_warps == spec.RULE_WARPS == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tile_e": 12}, "tile_e must be a power of two >= 1, got 12"),
        ({"block_d": 24}, "block_d must be a power of two >= 1, got 24"),
        ({"block_h": 0}, "block_h must be a power of two >= 1, got 0"),
        ({"num_warps": 3}, "num_warps must be a power of two >= 1, got 3"),
        ({"block_p": 2.0}, "block_p must be a power of two >= 1, got 2.0"),
        ({"tiles": 0}, "tiles must be an integer >= 1, got 0"),
        ({"head_group": -1}, r"head_group must be >= 1 \(or 0: block_h\), got -1"),
    ],
)
def test_config_fields_are_checked_by_name(fields: dict[str, object], message: str) -> None:
    """Triton's own error for a block that is not a power of two comes from deep in its compiler and
    names no field; a config from a JSON or a user is refused where it is built."""
    base = {"tile_e": 16, "tiles": 4, "block_h": 4, "block_d": 16}
    with pytest.raises(PluginSpecError, match=f"^{message}$"):
        spec.KernelConfig(**{**base, **fields})  # type: ignore[arg-type]


def test_a_config_narrower_than_the_head_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """block_d < head_dim would drop the head's last dims from every score: a wrong answer, not a
    crash, so a config passed in or tuned is checked against the head it runs."""
    narrow = spec.KernelConfig(tile_e=16, tiles=4, block_h=2, block_d=16)
    assert spec.check_config(2, 16, narrow) is narrow
    message = (
        r"^config block_d 16 is smaller than head_dim 32: the kernels would skip dims 16..31 "
        r"\(block_d must be a power of two >= head_dim\)$"
    )
    with pytest.raises(PluginSpecError, match=message):
        spec.check_config(2, 32, narrow)
    monkeypatch.setitem(spec.TUNED, (2, 32, "float16"), narrow)
    with pytest.raises(PluginSpecError, match=message):
        spec.select_config(2, 32, "float16")


def test_a_tuned_config_keeps_the_rules_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The TensorRT plugins size ``part`` by the chunk before TensorRT picks the dtype they run in,
    so a tuned fp32 config with a longer chunk would make the fp16 plugin's buffer wrong."""
    longer = spec.KernelConfig(tile_e=16, tiles=64, block_h=4, block_d=16)
    monkeypatch.setitem(spec.TUNED, (4, 16, "float32"), longer)
    with pytest.raises(
        PluginSpecError,
        match=r"^tuned config for heads=4, head_dim=16, float32 has chunk 1024, the rule 512: the TensorRT "
        r"plugins need one part buffer shape for every dtype of a head shape$",
    ):
        spec.select_config(4, 16, "float32")
    same = spec.KernelConfig(tile_e=32, tiles=16, block_h=4, block_d=16, num_warps=1)
    assert spec.check_tuned(4, 16, "float32", same) is same


def test_select_config_rejects_unsupported() -> None:
    with pytest.raises(PluginSpecError, match="head_dim must be in"):
        spec.select_config(1, 300, "float32")
    with pytest.raises(PluginSpecError, match="dtype must be one of"):
        spec.select_config(1, 64, "float64")
    with pytest.raises(PluginSpecError, match="heads must be >= 1"):
        spec.select_config(0, 64, "float32")


@pytest.mark.parametrize(("name", "fn"), [("partials", sga_partials), ("combine", sga_combine)])
def test_kernel_parameters_match_spec(name: str, fn: object) -> None:
    """Each kernel's runtime parameters are its TensorRT ABI order; its constexprs are what spec fills."""
    params = inspect.signature(fn).parameters  # type: ignore[arg-type]
    runtime = [n for n, p in params.items() if p.annotation is not tl.constexpr]
    assert tuple(runtime) == spec.KERNEL_ARGS[name]
    cx = spec.constexprs(name, ATTRS, spec.select_config(4, 16, "float32"))
    assert set(cx) == set(params) - set(runtime)
    assert tuple(spec.kernel_signature(name, "float16")) == spec.KERNEL_ARGS[name]
    assert spec.kernel_signature(name, "float32", "int64")["rowptr"] == "*i64"
    assert spec.kernel_signature(name, "bfloat16")["out"] == "*bf16"
    assert spec.kernel_signature(name, "float16")["part"] == "*fp32"


def test_kernel_abi_order() -> None:
    assert spec.KERNEL_ARGS["partials"] == spec.INPUT_NAMES + spec.KERNEL_SCALAR_ARGS + ("out", "part")
    assert spec.KERNEL_ARGS["combine"] == ("out_in", "part", "rowptr", *spec.KERNEL_SCALAR_ARGS, "out")
    cx = spec.partials_constexprs(ATTRS, CFG)
    assert cx["SCALE"] == 0.25 and cx["HAS_BIAS"] is True and cx["HEAD_DIM"] == 16 and cx["HEADS"] == 4


def test_plugin_identity() -> None:
    assert spec.PLUGIN_ID == "gtcompress::SparseGraphAttention"
    assert spec.PARTIALS_PLUGIN_ID == "gtcompress::SparseGraphAttentionPartials"
    assert spec.COMBINE_PLUGIN_ID == "gtcompress::SparseGraphAttentionCombine"
    assert spec.ATTRIBUTE_NAMES == ("heads", "head_dim", "scale", "has_bias")
