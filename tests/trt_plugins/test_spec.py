"""Shape, attribute, config and grid logic of the plugin (plain Python, no TensorRT)."""

from __future__ import annotations

import inspect
import math

import pytest
import triton.language as tl

from trt_plugins import spec
from trt_plugins._kernel import sparse_graph_attention_fwd
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


@pytest.mark.parametrize(
    ("n", "heads", "expected"),
    [(0, 1, (1, 1, 1)), (1, 2, (1, 2, 1)), (16, 3, (1, 3, 1)), (17, 3, (2, 3, 1)), (1000, 8, (63, 8, 1))],
)
def test_grid(n: int, heads: int, expected: tuple[int, int, int]) -> None:
    assert spec.grid(n, heads, 16) == expected


def test_grid_rejects_nonsense() -> None:
    with pytest.raises(PluginSpecError):
        spec.grid(-1, 1, 16)
    with pytest.raises(PluginSpecError):
        spec.grid(4, 0, 16)


@pytest.mark.parametrize("dtype", spec.FLOAT_DTYPES)
@pytest.mark.parametrize("head_dim", [1, 5, 16, 17, 24, 64, 100, 128, 256])
def test_select_config_respects_dot_minimums(dtype: str, head_dim: int) -> None:
    c = spec.select_config(head_dim, dtype)
    assert c.block_d >= head_dim and c.block_d & (c.block_d - 1) == 0
    assert min(c.block_m, c.block_e, c.block_d) >= 16  # tl.dot: fp16 needs K >= 16, M, N >= 16
    assert c.block_e * c.block_d <= 4096
    assert c.threads_per_block == 32 * c.num_warps


def test_select_config_rejects_unsupported() -> None:
    with pytest.raises(PluginSpecError):
        spec.select_config(300, "float32")
    with pytest.raises(PluginSpecError):
        spec.select_config(64, "bfloat16")


def test_kernel_parameters_match_spec() -> None:
    """The kernel's runtime parameters are the TensorRT ABI order; its constexprs are what spec fills."""
    params = inspect.signature(sparse_graph_attention_fwd).parameters
    runtime = [n for n, p in params.items() if p.annotation is not tl.constexpr]
    assert tuple(runtime) == spec.KERNEL_ARG_NAMES
    assert spec.KERNEL_ARG_NAMES == spec.INPUT_NAMES + spec.KERNEL_SCALAR_ARGS + spec.OUTPUT_NAMES
    cx = spec.constexprs(ATTRS, spec.select_config(16, "float32"))
    assert set(cx) == set(params) - set(runtime)
    assert cx["SCALE"] == 0.25 and cx["HAS_BIAS"] is True and cx["HEAD_DIM"] == 16
    assert tuple(spec.kernel_signature("float16")) == spec.KERNEL_ARG_NAMES
    assert spec.kernel_signature("float16")["q"] == "*fp16"
    assert spec.kernel_signature("float32", "int64")["rowptr"] == "*i64"


def test_autotune_types_cover_every_io() -> None:
    types = [t.strip() for t in spec.autotune_io_types().split(",")]
    assert len(types) == len(spec.INPUT_NAMES) + len(spec.OUTPUT_NAMES)
    assert types == ["FP32|FP16"] * 3 + ["INT32"] * 2 + ["FP32|FP16"] * 2


def test_plugin_identity() -> None:
    assert spec.PLUGIN_ID == "gtcompress::SparseGraphAttention"
    assert spec.ATTRIBUTE_NAMES == ("heads", "head_dim", "scale", "has_bias")
