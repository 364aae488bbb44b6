"""TensorRT wiring of the two plugins (registration, output shapes and aliases, validation, autotune,
``aot_impl``, the combine plugin's edge count, engine building, a missing or old TensorRT), checked
against the stand-in for ``tensorrt.plugin`` in ``fake_tensorrt.py``. The real module is exercised by
``test_tensorrt_real.py`` wherever TensorRT is installed. One contract, the plugins' side of
TensorRT, in one file: hence a little over 500 lines.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from typing import Any
from unittest import mock

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from tests.trt_plugins.fake_tensorrt import launch, make_fake_tensorrt, output_descs, output_dtypes_and_aliases
from trt_plugins import aot, engine, kernels, onnx_op, spec, tensorrt_plugin
from trt_plugins.spec import PluginSpecError
from trt_plugins.tensorrt_plugin import (
    TensorRTNotAvailableError,
    autotune_io_types,
    combine_n_edges,
    part_chunk,
    register_plugin,
    tensorrt_available,
    validate_combine_inputs,
)

FLOATS = "FP32|FP16|BF16"


# --- fixtures and descriptors ------------------------------------------------------------------------

H, D = 4, 32
CONFIG = spec.select_config(H, D, "float16")
CHUNK = CONFIG.chunk  # 512
ATTRS = {"heads": H, "head_dim": D, "scale": 0.5, "has_bias": 1}
COMBINE = {"heads": H, "head_dim": D}


@pytest.fixture(scope="module")
def ptx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One PTX cache for the module: each kernel variant is compiled once (a few seconds)."""
    return tmp_path_factory.mktemp("gtcompress-cache")


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch, ptx_cache: Path) -> types.ModuleType:
    trt, trtp = make_fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", trtp)
    monkeypatch.setattr(tensorrt_plugin, "_REGISTERED", False)
    monkeypatch.setenv("GTCOMPRESS_CUDA_ARCH", "80")
    monkeypatch.setenv("GTCOMPRESS_CACHE", str(ptx_cache))
    return trtp


def _dim(trtp: Any, value: int | None, name: str) -> Any:
    return trtp.ShapeExpr.symbol(name) if value is None else trtp.ShapeExpr(value)


def _descs(trtp: Any, n: int | None, e: int | None, h: int = H, d: int = D, dtype: str = "float32") -> list[Any]:
    """``q, k, v, rowptr, col, bias``; ``None`` sizes are symbols ``N`` and ``E``."""
    trt = sys.modules["tensorrt"]
    f, i = getattr(trt, dtype), trt.int32
    nn, ee = _dim(trtp, n, "N"), _dim(trtp, e, "E")
    hh, dd = trtp.ShapeExpr(h), trtp.ShapeExpr(d)
    return [
        trtp.TensorDesc([nn, hh, dd], f),
        trtp.TensorDesc([nn, hh, dd], f),
        trtp.TensorDesc([nn, hh, dd], f),
        trtp.TensorDesc([nn + 1], i),
        trtp.TensorDesc([ee], i),
        trtp.TensorDesc([ee, hh], f),
    ]


def _combine_descs(trtp: Any, n: int | None, e: int | None, dtype: str = "float16") -> list[Any]:
    """``out_in, part, rowptr`` as the partials plugin hands them on."""
    descs = _descs(trtp, n, e, dtype=dtype)
    out, part = output_descs(trtp, spec.PARTIALS_PLUGIN_ID, descs, ATTRS)
    return [out, part, descs[3]]


def _value(expr: Any, n: int, e: int) -> int:
    return expr.value if expr.value is not None else expr.evaluate(N=n, E=e)


SIZES = [(0, 0), (1, 0), (5, 1), (37, CHUNK - 1), (37, CHUNK), (300, CHUNK + 1), (40_000, 10 * CHUNK + 7)]


# --- registration ------------------------------------------------------------------------------------


def test_registers_both_plugins_once_with_their_schemas(fake_trt: Any) -> None:
    register_plugin()
    register_plugin()  # idempotent: the fake registry would raise on a second definition
    partials, combine = fake_trt.REGISTRY[spec.PARTIALS_PLUGIN_ID], fake_trt.REGISTRY[spec.COMBINE_PLUGIN_ID]
    assert partials["tensors"] == ["q", "k", "v", "rowptr", "col", "bias"]
    assert list(partials["attrs"].items()) == [("heads", int), ("head_dim", int), ("scale", float), ("has_bias", int)]
    assert combine["tensors"] == ["out_in", "part", "rowptr"]
    assert list(combine["attrs"].items()) == [("heads", int), ("head_dim", int)]
    assert (partials["num_outputs"], combine["num_outputs"]) == (2, 1)
    assert {"register", "aot_impl", "autotune"} <= set(partials) & set(combine)
    assert spec.PLUGIN_ID not in fake_trt.REGISTRY  # the single-kernel plugin is gone
    assert tensorrt_plugin.is_registered() and tensorrt_available()


def test_reregistration_after_module_state_loss_is_skipped(fake_trt: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    register_plugin()
    monkeypatch.setattr(tensorrt_plugin, "_REGISTERED", False)
    register_plugin()  # finds both in trtp.op.gtcompress and does not redefine them
    assert tensorrt_plugin.is_registered()


def test_a_half_registered_pair_is_completed(fake_trt: Any) -> None:
    tensorrt_plugin._register_partials(sys.modules["tensorrt"], fake_trt)  # e.g. an earlier failed attempt
    register_plugin()
    assert {spec.PARTIALS_PLUGIN_ID, spec.COMBINE_PLUGIN_ID} <= set(fake_trt.REGISTRY)


# --- output descriptors --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", spec.FLOAT_DTYPES)
def test_output_dtypes_and_aliasing_on_fake_shapes(fake_trt: Any, dtype: str) -> None:
    """What TensorRT asks first, with no shapes yet: dtypes, and which output aliases which input.
    The stand-in would raise if either register function built an expression from an int here."""
    register_plugin()
    trt = sys.modules["tensorrt"]
    f = getattr(trt, dtype)
    types_, aliases = output_dtypes_and_aliases(
        fake_trt, spec.PARTIALS_PLUGIN_ID, [f, f, f, trt.int32, trt.int32, f], [3, 3, 3, 1, 1, 2], ATTRS
    )
    assert types_ == [f, trt.float32] and aliases == {0: -1, 1: -1}
    types_, aliases = output_dtypes_and_aliases(
        fake_trt, spec.COMBINE_PLUGIN_ID, [f, trt.float32, trt.int32], [3, 3, 1], COMBINE
    )
    assert types_ == [f] and aliases == {0: 0}  # combine writes out_in in place


def test_the_stand_in_rejects_int_first_expressions_on_fake_shapes(fake_trt: Any) -> None:
    """The rule that makes the test above meaningful: ``trtp.max(1, fake)`` fails, ``trtp.max(fake, 1)`` not."""
    fake = fake_trt.ShapeExpr()
    fake_trt.PHASE["fake_shapes"] = True
    try:
        with pytest.raises(RuntimeError, match=r"ShapeExpr\(1\) built while TensorRT only has fake"):
            fake_trt.max(1, fake)
        assert fake_trt.max(fake_trt.cdiv(fake, CHUNK), 1).is_fake
    finally:
        fake_trt.PHASE["fake_shapes"] = False
    with pytest.raises(TypeError, match=r"a fake operand reaches IExprBuilder\.operation"):
        fake_trt.ShapeExpr(3) * fake
    with pytest.raises(ValueError, match="Both arguments cannot be 'int's"):
        fake_trt.cdiv(3, 2)


@pytest.mark.parametrize(("n", "e"), SIZES)
def test_partials_outputs_concrete_shapes(fake_trt: Any, n: int, e: int) -> None:
    register_plugin()
    out, part = output_descs(fake_trt, spec.PARTIALS_PLUGIN_ID, _descs(fake_trt, n, e, dtype="float16"), ATTRS)
    assert out.dtype.name == "HALF" and [x.constant_value() for x in out.shape_expr] == [n, H, D]
    assert part.dtype.name == "FLOAT" and not part.is_aliased and not out.is_aliased
    assert tuple(x.constant_value() for x in part.shape_expr) == spec.part_shape(e, H, D, CONFIG)
    assert part.shape_expr[0].constant_value() == 2 * max(1, -(-e // 512))  # spec.PART_SHAPE_FORMULA, CHUNK 512


def test_partials_outputs_symbolic_shapes(fake_trt: Any) -> None:
    register_plugin()
    out, part = output_descs(fake_trt, spec.PARTIALS_PLUGIN_ID, _descs(fake_trt, None, None), ATTRS)
    assert [x.text for x in out.shape_expr] == ["N", "4", "32"]
    rows, heads, width = part.shape_expr
    assert rows.value is None and rows.text == "mul(max(cdiv(E, 512), 1), 2)"
    assert (heads.constant_value(), width.constant_value()) == (H, D + 2)
    for n, e in SIZES:
        assert rows.evaluate(N=n, E=e) == spec.part_shape(e, H, D, CONFIG)[0]


def test_combine_output_is_out_in_aliased(fake_trt: Any) -> None:
    register_plugin()
    for n, e in ((37, 1000), (None, None)):
        descs = _combine_descs(fake_trt, n, e)
        (out,) = output_descs(fake_trt, spec.COMBINE_PLUGIN_ID, descs, COMBINE)
        assert out.get_aliased() is descs[0] and out.dtype is descs[0].dtype
        assert [x.text for x in out.shape_expr] == [x.text for x in descs[0].shape_expr]
        with pytest.raises(ValueError, match="immutable"):
            out.dtype = sys.modules["tensorrt"].float32


# --- validation ------------------------------------------------------------------------------------------


def test_partials_validation_names_the_input(fake_trt: Any) -> None:
    register_plugin()
    reg = fake_trt.REGISTRY[spec.PARTIALS_PLUGIN_ID]["register"]
    with pytest.raises(PluginSpecError, match=re.escape("input 'q' has 4 heads (dim 1) but attribute heads=3")):
        reg(*_descs(fake_trt, None, None), **{**ATTRS, "heads": 3})
    bad = _descs(fake_trt, 10, 30)
    bad[5] = fake_trt.TensorDesc([fake_trt.ShapeExpr(29), fake_trt.ShapeExpr(H)], bad[5].dtype)
    with pytest.raises(PluginSpecError, match=re.escape("input 'bias' must have shape [E=30, heads=4], got (29, 4)")):
        reg(*bad, **ATTRS)
    bad = _descs(fake_trt, 10, 30)
    bad[3] = fake_trt.TensorDesc(bad[3].shape_expr, sys.modules["tensorrt"].int64)
    with pytest.raises(PluginSpecError, match=re.escape("input 'rowptr' must be int32, got int64")):
        reg(*bad, **ATTRS)


@pytest.mark.parametrize(
    ("shapes", "dtypes", "message"),
    [
        (
            [(10, H, D), (2, H, D + 2)],
            ["float16", "float32"],
            "expected 3 inputs ('out_in', 'part', 'rowptr'), got 2 shapes and 2 dtypes",
        ),
        (
            [(10, H, D), (2, H), (11,)],
            ["float16", "float32", "int32"],
            "input 'part' must have rank 3, got shape (2, 4)",
        ),
        (
            [(10, H, D), (2, H, D + 2), (11,)],
            ["int32", "float32", "int32"],
            "input 'out_in' must be one of ('float32', 'float16', 'bfloat16'), got int32",
        ),
        (
            [(10, H, D), (2, H, D + 2), (11,)],
            ["float16", "float16", "int32"],
            "input 'part' must be float32, got float16",
        ),
        (
            [(10, H, D), (2, H, D + 2), (11,)],
            ["float16", "float32", "int64"],
            "input 'rowptr' must be int32, got int64",
        ),
        (
            [(10, 2, D), (2, H, D + 2), (11,)],
            ["float16", "float32", "int32"],
            "input 'out_in' must have shape [N, heads=4, head_dim=32], got (10, 2, 32)",
        ),
        (
            [(10, H, D), (3, H, D + 2), (11,)],
            ["float16", "float32", "int32"],
            "input 'part' must have shape [2 * n_chunks >= 2, heads=4, head_dim + 2=34], got (3, 4, 34)",
        ),
        (
            [(10, H, D), (0, H, D + 2), (11,)],
            ["float16", "float32", "int32"],
            "input 'part' must have shape [2 * n_chunks >= 2, heads=4, head_dim + 2=34], got (0, 4, 34)",
        ),
        (
            [(10, H, D), (2, H, D), (11,)],
            ["float16", "float32", "int32"],
            "input 'part' must have shape [2 * n_chunks >= 2, heads=4, head_dim + 2=34], got (2, 4, 32)",
        ),
        (
            [(10, H, D), (2, H, D + 2), (12,)],
            ["float16", "float32", "int32"],
            "input 'rowptr' must have n_nodes + 1 = 11 entries, got 12",
        ),
    ],
)
def test_combine_validation_names_the_input(shapes: list[tuple], dtypes: list[str], message: str) -> None:
    with pytest.raises(PluginSpecError, match=re.escape(message)):
        validate_combine_inputs(shapes, dtypes, H, D)


def test_combine_validation_accepts_unknown_dims() -> None:
    validate_combine_inputs([(None, H, D), (None, H, D + 2), (None,)], ["bfloat16", "float32", "int32"], H, D)
    validate_combine_inputs([(None, None, None), (None, None, None), (None,)], ["float32", "float32", "int32"], H, D)


def test_combine_register_validates(fake_trt: Any) -> None:
    register_plugin()
    reg = fake_trt.REGISTRY[spec.COMBINE_PLUGIN_ID]["register"]
    descs = _combine_descs(fake_trt, 10, 30)
    with pytest.raises(PluginSpecError, match=re.escape("attribute 'heads' must be an int >= 1, got 0")):
        reg(*descs, heads=0, head_dim=D)
    with pytest.raises(PluginSpecError, match=re.escape("input 'out_in' must have shape [N, heads=4, head_dim=16]")):
        reg(*descs, heads=H, head_dim=16)


# --- autotune ------------------------------------------------------------------------------------------


def test_autotune_lists_every_float_dtype_and_fp32_partial_states(fake_trt: Any) -> None:
    register_plugin()
    descs = _descs(fake_trt, 5, 9)
    outs = output_descs(fake_trt, spec.PARTIALS_PLUGIN_ID, descs, ATTRS)
    (combo,) = fake_trt.REGISTRY[spec.PARTIALS_PLUGIN_ID]["autotune"](*descs, outs)
    # q, k, v, rowptr, col, bias, then out, part
    assert combo.io_types == [FLOATS] * 3 + ["INT32"] * 2 + [FLOATS] + [FLOATS, "FP32"] and combo.layouts == "LINEAR"
    descs = [*outs, descs[3]]
    outs = output_descs(fake_trt, spec.COMBINE_PLUGIN_ID, descs, COMBINE)
    (combo,) = fake_trt.REGISTRY[spec.COMBINE_PLUGIN_ID]["autotune"](*descs, outs)
    assert (
        combo.io_types == [FLOATS, "FP32", "INT32", FLOATS] and combo.layouts == "LINEAR"
    )  # out_in, part, rowptr; out


# --- aot_impl ------------------------------------------------------------------------------------------


def _ptx_header(ptx: str, name: str) -> None:
    assert re.search(r"^\.target sm_80\s*$", ptx, re.M) and re.search(r"^\.version 7\.8\s*$", ptx, re.M)
    assert f".entry {name}(" in ptx


@pytest.mark.parametrize(("n", "e"), [(37, 1000), (0, 0), (None, None)])
def test_partials_aot_impl(fake_trt: Any, n: int | None, e: int | None) -> None:
    register_plugin()
    name, ptx, params, extra = launch(fake_trt, spec.PARTIALS_PLUGIN_ID, _descs(fake_trt, n, e, dtype="float16"), ATTRS)
    compiled = aot.compile_kernel("partials", "float16", H, D, 80, 0.5, True)
    assert name == "sga_partials" == compiled.kernel_name and ptx == compiled.ptx
    _ptx_header(ptx, name)
    assert params.block_x.expr.value == compiled.threads_per_block == 32 * spec.RULE_WARPS
    assert (params.block_y.expr.value, params.block_z.expr.value) == (1, 1)
    assert params.shared_mem.expr.value == compiled.shared_mem <= 48 * 1024
    assert (params.grid_y.expr.value, params.grid_z.expr.value) == (1, 1)
    assert len(extra) == len(spec.KERNEL_SCALAR_ARGS) == 2
    grid_x = params.grid_x.expr
    if n is None:
        assert grid_x.value is None and grid_x.text == "max(cdiv(E, 512), 1)"
        assert [a.expr.text for a in extra] == ["N", "E"]  # n_nodes, n_edges: the kernel's scalar order
    for nn, ee in SIZES if n is None else [(n, e)]:
        assert _value(grid_x, nn, ee) == spec.grid("partials", nn, ee, H, CONFIG)[0]
        assert [_value(a.expr, nn, ee) for a in extra] == [nn, ee]


def test_partials_aot_impl_launches_every_head_group(fake_trt: Any) -> None:
    """Wide rows are split into head groups over the grid's second axis (fp16 8x64: four groups of
    two heads); a launch of one group would leave six heads of every row unwritten."""
    register_plugin()
    attrs = {"heads": 8, "head_dim": 64, "scale": 0.125, "has_bias": 0}
    descs = _descs(fake_trt, 37, 1000, h=8, d=64, dtype="float16")
    _, _, params, _ = launch(fake_trt, spec.PARTIALS_PLUGIN_ID, descs, attrs)
    config = spec.select_config(8, 64, "float16")
    assert config.head_group == 2
    assert params.grid_y.expr.value == spec.grid("partials", 37, 1000, 8, config)[1] == 4


def test_partials_aot_impl_rejects_bad_inputs(fake_trt: Any) -> None:
    register_plugin()
    aot_fn = fake_trt.REGISTRY[spec.PARTIALS_PLUGIN_ID]["aot_impl"]
    descs = _descs(fake_trt, 10, 30, dtype="int64")
    with pytest.raises(PluginSpecError, match=re.escape("input 'q' must be one of ('float32', 'float16', 'bfloat16')")):
        aot_fn(*descs, H, D, 0.5, 1, (None, None), 0)
    descs = _descs(fake_trt, 10, 30)
    with pytest.raises(PluginSpecError, match=re.escape("input 'q' has 4 heads (dim 1) but attribute heads=32")):
        aot_fn(*descs, D, H, 0.5, 1, (None, None), 0)  # attributes arriving out of order


@pytest.mark.parametrize(("n", "e"), [(37, 1000), (300, 0), (None, None)])
def test_combine_aot_impl(fake_trt: Any, n: int | None, e: int | None) -> None:
    register_plugin()
    name, ptx, params, extra = launch(fake_trt, spec.COMBINE_PLUGIN_ID, _combine_descs(fake_trt, n, e), COMBINE)
    compiled = aot.compile_kernel("combine", "float16", H, D, 80)
    assert name == "sga_combine" == compiled.kernel_name and ptx == compiled.ptx
    _ptx_header(ptx, name)
    assert params.block_x.expr.value == compiled.threads_per_block == 32 * spec.COMBINE_WARPS
    assert params.shared_mem.expr.value == compiled.shared_mem <= 48 * 1024
    assert (params.grid_y.expr.value, params.grid_z.expr.value) == (H, 1)
    assert len(extra) == 2
    if n is None:
        assert params.grid_x.expr.value is None and extra[0].expr.text == "N"
    for nn, ee in SIZES if n is None else [(n, e)]:
        # the grid of spec.GRID_FORMULAS["combine"] for the true edge count, though the plugin has no 'col'
        assert _value(params.grid_x.expr, nn, ee) == spec.grid("combine", nn, ee, H, CONFIG)[0]
        n_nodes, n_edges = (_value(a.expr, nn, ee) for a in extra)
        assert n_nodes == nn and n_edges == combine_n_edges(2 * spec.n_chunks(ee, CHUNK), CHUNK)


def test_combine_aot_impl_rejects_bad_inputs(fake_trt: Any) -> None:
    register_plugin()
    aot_fn = fake_trt.REGISTRY[spec.COMBINE_PLUGIN_ID]["aot_impl"]
    out_in, part, rowptr = _combine_descs(fake_trt, 10, 30)
    half_part = fake_trt.TensorDesc(part.shape_expr, sys.modules["tensorrt"].float16)
    with pytest.raises(PluginSpecError, match=re.escape("input 'part' must be float32, got float16")):
        aot_fn(out_in, half_part, rowptr, H, D, (None,), 0)
    with pytest.raises(PluginSpecError, match=re.escape("input 'out_in' must have shape [N, heads=32, head_dim=4]")):
        aot_fn(out_in, part, rowptr, D, H, (None,), 0)  # attributes arriving out of order


# --- the edge count the combine plugin derives from 'part' -----------------------------------------------


def test_part_chunk_is_the_kernels_chunk_for_every_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    for heads, head_dim in ((1, 1), (4, 16), (3, 24), (8, 64), (1, 128), (2, 256)):
        assert {spec.select_config(heads, head_dim, d).chunk for d in spec.FLOAT_DTYPES} == {
            part_chunk(heads, head_dim)
        }
    real = spec.select_config

    def by_dtype(heads: int, head_dim: int, dtype: str) -> spec.KernelConfig:
        config = real(heads, head_dim, dtype)
        return spec.KernelConfig(config.tile_e, config.tiles * (2 if dtype == "float32" else 1), 4, 32)

    monkeypatch.setattr(spec, "select_config", by_dtype)
    with pytest.raises(
        PluginSpecError, match=re.escape("the chunk size for heads=4, head_dim=32 depends on the dtype")
    ):
        part_chunk(H, D)


@pytest.mark.parametrize("chunk", [1, 3, 8, 512])
def test_combine_n_edges_gives_the_kernel_the_same_chunks(chunk: int) -> None:
    """The combine kernel reads n_edges only as ``n_chunks = cdiv(n_edges, CHUNK)`` and merges in
    programs ``0 < pid < n_chunks``; its grid has ``cdiv(n_edges, CHUNK)`` too. Both are unchanged,
    and the derived count never exceeds the true one (no new int32 overflow)."""
    for e in [*range(0, 6 * chunk + 2), 2**31 - 1 - chunk, 2**31 - 1]:
        rows = 2 * spec.n_chunks(e, chunk)  # dim 0 of 'part'
        derived = combine_n_edges(rows, chunk)
        assert 1 <= derived <= max(e, 1)
        true_chunks, derived_chunks = -(-e // chunk), -(-derived // chunk)
        assert derived_chunks == true_chunks or (e == 0 and derived_chunks == 1)
        assert max(1, true_chunks) == max(1, derived_chunks)  # the grid term
        if e < 2**20:  # the programs that merge, spelled out (the grid is a chunk count)
            pids = range(max(1, true_chunks) + 2)
            assert {p for p in pids if 0 < p < true_chunks} == {p for p in pids if 0 < p < derived_chunks}


@pytest.mark.parametrize("degrees", [[], [0, 0, 0], [3, 0, 5], [0, 4, 4, 0, 1, 12, 3, 0, 17, 1, 1, 0, 8, 0]])
def test_combine_with_the_derived_edge_count_writes_the_same_output(degrees: list[int]) -> None:
    """The two kernels in Triton's interpreter, chunks of 8 edges: combine with the edge count the
    plugin derives from 'part' gives bit for bit the output combine gives with the true count."""
    n, heads, head_dim = len(degrees), 2, 8
    config = spec.KernelConfig(tile_e=4, tiles=2, block_h=2, block_d=8, block_r=8, block_p=4)
    g = torch.Generator().manual_seed(n)
    rowptr = torch.tensor([0, *torch.tensor(degrees, dtype=torch.int64).cumsum(0).tolist()], dtype=torch.int32)
    e = int(rowptr[-1])
    col = torch.randint(0, max(n, 1), (e,), generator=g, dtype=torch.int32)
    q, k, v = (torch.randn(n, heads, head_dim, generator=g) for _ in range(3))
    bias = torch.randn(e, heads, generator=g)
    attrs = spec.validate_attributes(heads, head_dim, spec.default_scale(head_dim), True)
    run = {"num_warps": config.num_warps, "num_stages": config.num_stages}
    outputs = []
    for n_edges in (e, combine_n_edges(spec.part_shape(e, heads, head_dim, config)[0], config.chunk)):
        out = torch.full_like(q, float("nan"))
        part = torch.full(spec.part_shape(e, heads, head_dim, config), float("nan"))
        if n:
            kernels.interpreted_kernel("partials")[spec.grid("partials", n, e, heads, config)](
                q, k, v, rowptr, col, bias, n, e, out, part, **spec.partials_constexprs(attrs, config), **run
            )
            kernels.interpreted_kernel("combine")[spec.grid("combine", n, n_edges, heads, config)](
                out, part, rowptr, n, n_edges, out, **spec.combine_constexprs(attrs, config), **run
            )
        outputs.append(out)
    assert spec.grid("combine", n, e, heads, config) == spec.grid(
        "combine", n, combine_n_edges(spec.part_shape(e, heads, head_dim, config)[0], config.chunk), heads, config
    )
    assert torch.equal(outputs[0], outputs[1]) and not outputs[0].isnan().any()
    expected = kernels.sparse_graph_attention(q, k, v, rowptr, col, bias, config=config)
    assert torch.equal(outputs[0], expected)


# --- engine building: the split model, parsed from memory ---------------------------------------------


def _attention_model(path: Path) -> Path:
    def vi(name: str, elem: int, shape: list) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, elem, shape)

    node = onnx_op.make_node(["q", "k", "v", "rowptr", "col", "bias"], ["out"], 2, 8, has_bias=True, name="att")
    inputs = [vi(x, TensorProto.FLOAT, ["N", 2, 8]) for x in "qkv"]
    inputs += [vi("rowptr", TensorProto.INT32, ["N1"]), vi("col", TensorProto.INT32, ["E"])]
    inputs += [vi("bias", TensorProto.FLOAT, ["E", 2])]
    graph = helper.make_graph([node], "g", inputs, [vi("out", TensorProto.FLOAT, ["N", 2, 8])])
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid(onnx_op.DOMAIN, onnx_op.OPSET_VERSION)]
    onnx.save(helper.make_model(graph, opset_imports=opsets, ir_version=10), str(path))
    return path


@pytest.mark.parametrize("plugin", [True, False])
def test_engine_parses_the_split_model_from_memory(fake_trt: Any, tmp_path: Path, plugin: bool) -> None:
    """``build_serialized_engine`` with a stand-in for the TensorRT builder: with ``plugin`` the parser
    gets the two-plugin model as bytes (and the file's path, for external weights), else the file."""
    trt = sys.modules["tensorrt"]
    calls: list[tuple[str, Any, Any]] = []

    class Parser:
        num_errors = 0

        def __init__(self, network: Any, logger: Any) -> None:
            pass

        def parse(self, model: bytes, path: str | None = None) -> bool:
            calls.append(("parse", bytes(model), path))
            return True

        def parse_from_file(self, model: str) -> bool:
            calls.append(("parse_from_file", model, None))
            return True

    builder = mock.MagicMock()
    builder.build_serialized_network.return_value = b"serialized engine"
    for name in ("Logger", "NetworkDefinitionCreationFlag", "MemoryPoolType", "BuilderFlag", "init_libnvinfer_plugins"):
        setattr(trt, name, mock.MagicMock())
    trt.Builder = mock.MagicMock(return_value=builder)  # type: ignore[attr-defined]
    trt.OnnxParser = Parser  # type: ignore[attr-defined]
    onnx_path = _attention_model(tmp_path / "model.onnx")
    before = onnx_path.read_bytes()

    shapes = {"q": ((1, 2, 8), (4, 2, 8), (8, 2, 8))}
    plan = engine.build_serialized_engine(onnx_path, tmp_path / "model.plan", shapes, plugin=plugin)
    assert plan.read_bytes() == b"serialized engine" and onnx_path.read_bytes() == before
    ((kind, model, path),) = calls
    if not plugin:
        assert (kind, model) == ("parse_from_file", str(onnx_path))
        return
    assert kind == "parse" and path == str(onnx_path)
    parsed = onnx.load_from_string(model)
    assert [(n.op_type, n.name) for n in parsed.graph.node] == [
        ("SparseGraphAttentionPartials", "att/partials"),
        ("SparseGraphAttentionCombine", "att/combine"),
    ]
    assert tensorrt_plugin.is_registered()


# --- TensorRT missing or too old ----------------------------------------------------------------------


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


def test_autotune_types_cover_every_io() -> None:
    types = [t.strip() for t in autotune_io_types("partials").split(",")]
    floats = "FP32|FP16|BF16"
    assert types == [floats] * 3 + ["INT32"] * 2 + [floats] * 2 + ["FP32"]
    types = [t.strip() for t in autotune_io_types("combine").split(",")]
    assert types == [floats, "FP32", "INT32", floats]
    with pytest.raises(PluginSpecError, match="plugin must be one of"):
        autotune_io_types("fused")
