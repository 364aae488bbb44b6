"""AOT compilation to PTX for named GPUs, with no GPU and no driver.

These tests are what catch kernel configs the GPU compiler rejects (the interpreter accepts
``tl.dot`` shapes that PTX generation does not), so every shipped tile config is compiled here.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from pathlib import Path

import pytest

from trt_plugins import aot, spec
from trt_plugins.aot import AOTCompileError
from trt_plugins.ptxas import PtxasError, ptxas_usage, sass

MAX_STATIC_SHARED = 48 * 1024  # above this a launch needs an opt-in TensorRT does not make
#: TensorRT ABI of each kernel: (pointer params, int32 params); Triton's scratch params are stripped.
ABI = {"partials": (8, 2), "combine": (4, 2)}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GTCOMPRESS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "ptx"


def _version(ptx_version: int) -> str:
    return f"{ptx_version // 10}.{ptx_version % 10}"


@pytest.mark.parametrize("kernel", spec.KERNELS)
@pytest.mark.parametrize("cc", aot.TARGETS)
def test_every_target_gets_pinned_ptx(kernel: str, cc: int, cache: Path) -> None:
    k = aot.compile_kernel(kernel, "float16", 8, 64, cc, None, True)
    target = f"sm_{cc}a" if cc >= 90 else f"sm_{cc}"  # Triton compiles cc 90 for sm_90a
    assert re.search(rf"^\.target {target}\s*$", k.ptx, re.M)
    assert re.search(rf"^\.version {re.escape(_version(aot.PTX_VERSIONS[cc]))}\s*$", k.ptx, re.M)
    assert (k.target, k.ptx_version, k.compute_capability) == (target, _version(aot.PTX_VERSIONS[cc]), cc)
    name = f"sga_{kernel}"
    assert k.kernel_name == name and f".entry {name}(" in k.ptx
    # exactly the TensorRT ABI: input pointers, int32 scalars, output pointers; no scratch pointers
    params = aot.ptx_entry_params(k.ptx, name)
    assert len(params) == len(spec.KERNEL_ARGS[kernel])
    decls = k.ptx[k.ptx.index(f".entry {name}(") :].split(")", 1)[0]
    assert (decls.count(".u64"), decls.count(".u32")) == ABI[kernel]
    assert k.threads_per_block == 32 * k.num_warps and 0 <= k.shared_mem <= MAX_STATIC_SHARED
    assert k.grid == spec.GRID_FORMULAS[kernel] and k.kernel_config == spec.select_config(8, 64, "float16")
    assert aot.verify_ptx(k.ptx, k.target)  # the edited PTX still assembles (Triton's bundled ptxas)


#: The three code-generation paths: sm_75 (no TF32, no bf16 arithmetic), sm_80 (shared by sm_86 and
#: sm_89), sm_90a.
PATHS = (75, 80, 90)
#: One head shape per config bucket.
BUCKET_SHAPES = ((1, 1), (4, 16), (3, 24), (8, 64), (1, 128), (2, 256))


@pytest.mark.parametrize("dtype", spec.FLOAT_DTYPES)
def test_every_tile_config_compiles(dtype: str, cache: Path) -> None:
    """Both kernels for one head shape per config bucket, in every dtype, with no Triton scratch memory
    (compile_kernel refuses it) and static shared memory a plugin launch gets without opt-in. The
    target turns with the shape and the dtype so that every pair of (target, dtype), (target, shape)
    and (dtype, shape) is compiled: 36 compiles, not the full product's 108 (85 s on a cold Triton
    cache, a seventh of the suite's time on 2 cores); what each target's code generation refuses
    depends on the tile shapes and the element type, each met there."""
    for j, (heads, head_dim) in enumerate(BUCKET_SHAPES):
        cc = PATHS[(spec.FLOAT_DTYPES.index(dtype) + j) % len(PATHS)]
        for kernel in spec.KERNELS:
            k = aot.compile_kernel(kernel, dtype, heads, head_dim, cc, 0.5, True, verify=False)
            assert k.shared_mem <= MAX_STATIC_SHARED, (kernel, dtype, heads, head_dim, cc, k.shared_mem)
            assert k.constexprs["BLOCK_D"] == spec.next_pow2(head_dim)


def test_scratch_memory_is_refused(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = aot.triton_compile

    def with_scratch(*args: object, **kwargs: object) -> aot.RawCompiled:
        raw = real(*args, **kwargs)  # type: ignore[arg-type]
        return aot.RawCompiled(raw.ptx, raw.kernel_name, raw.num_warps, raw.shared_mem, scratch_bytes=256)

    monkeypatch.setattr(aot, "triton_compile", with_scratch)
    with pytest.raises(AOTCompileError, match="kernel combine needs 256 bytes of Triton scratch memory"):
        aot.compile_kernel("combine", "float32", 1, 16, 80, use_cache=False)


def test_cache_is_hit_the_second_time(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict] = []
    real = aot.triton_compile

    def counting(*args: object, **kwargs: object) -> aot.RawCompiled:
        calls.append({"args": args})
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(aot, "triton_compile", counting)
    first = aot.compile_kernel("partials", "float32", 2, 32, 80, 0.2, False)
    assert len(calls) == 1 and not first.from_cache
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".json"  # no temp files left behind
    assert json.loads(files[0].read_text())["cache_key"] == first.cache_key

    second = aot.compile_kernel("partials", "float32", 2, 32, 80, 0.2, False)
    assert len(calls) == 1 and second.from_cache and second == first

    aot.compile_kernel("partials", "float32", 2, 32, 80, 0.25, False)  # another scale is another kernel
    aot.compile_kernel("partials", "float32", 2, 32, 86, 0.2, False)  # another target too
    aot.compile_kernel("combine", "float32", 2, 32, 80, 0.2, False)  # and the other kernel
    assert len(calls) == 4

    files[0].write_text("{not json")  # a damaged entry is recompiled and replaced
    third = aot.compile_kernel("partials", "float32", 2, 32, 80, 0.2, False)
    assert len(calls) == 5 and not third.from_cache and third == first
    assert json.loads(files[0].read_text())["cache_key"] == first.cache_key


def test_cache_dir_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GTCOMPRESS_CACHE", str(tmp_path))
    assert aot.cache_dir() == tmp_path / "ptx"
    monkeypatch.delenv("GTCOMPRESS_CACHE")
    assert aot.cache_dir() == Path.home() / ".cache" / "gtcompress" / "ptx"


def test_compile_all_refused_before_any_file_leaves_no_folder(cache: Path, tmp_path: Path) -> None:
    """A library call with a target or dtype the compiler refuses made ``out`` (and its parents) first,
    and left them empty; one that fails after writing PTX keeps its folder, which holds them."""
    out = tmp_path / "new" / "ptx"
    with pytest.raises(AOTCompileError, match="compute capability 10 is not supported"):
        aot.compile_all(out, targets=[10], dtypes=["float16"], head_shapes=[(2, 32)])
    with pytest.raises(spec.PluginSpecError, match="dtype must be one of"):
        aot.compile_all(out, targets=[80], dtypes=["float8"], head_shapes=[(2, 32)])
    assert not (tmp_path / "new").exists()


def test_compile_all_writes_ptx_and_manifest(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "ptx_out"
    argv = [str(out), "--targets", "sm_80,90", "--head-shapes", "2x32", "--dtypes", "float16"]
    assert aot.main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["plugin_ids"] == [spec.PARTIALS_PLUGIN_ID, spec.COMBINE_PLUGIN_ID]
    assert manifest["grids"] == spec.GRID_FORMULAS
    assert manifest["kernel_args"] == {k: list(v) for k, v in spec.KERNEL_ARGS.items()}
    entries = manifest["entries"]
    assert sorted((e["kernel"], e["compute_capability"], e["has_bias"]) for e in entries) == [
        ("combine", 80, False),
        ("combine", 90, False),
        ("partials", 80, False),
        ("partials", 80, True),
        ("partials", 90, False),
        ("partials", 90, True),
    ]
    for e in entries:
        ptx = (out / e["file"]).read_text()
        assert f".target {e['target']}" in ptx and f".version {e['ptx_version']}" in ptx
        assert e["kernel_name"] in ptx and e["dtype"] == "float16" and (e["heads"], e["head_dim"]) == (2, 32)
        assert e["scale"] == pytest.approx(32**-0.5) and e["threads_per_block"] == 32 * e["num_warps"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*(e["file"] for e in entries), "manifest.json"])


def test_bad_head_shape_argument_is_named(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        aot.main([str(tmp_path), "--head-shapes", "4-16"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--head-shapes", "4x0"], "argument --head-shapes: head shape '4x0': attribute 'head_dim' must be an int in"),
        (["--head-shapes", "2x512"], "argument --head-shapes: head shape '2x512': attribute 'head_dim' must be an int"),
        (["--head-shapes", "0x16"], "argument --head-shapes: head shape '0x16': attribute 'heads' must be an int >= 1"),
        (["--dtypes", "float16,float64"], "argument --dtypes: dtype must be one of ('float32', 'float16', 'bfloat16')"),
        (["--targets", "80,sm_70"], "argument --targets: target 'sm_70': compute capability 70 is not supported"),
        (["--targets", "80x"], "argument --targets: a target is a compute capability such as 80 or sm_90, got '80x'"),
        # '²' passes str.isdigit(), then int() raised
        (
            ["--targets", "sm_8²"],
            "argument --targets: a target is a compute capability such as 80 or sm_90, got 'sm_8²'",
        ),
        (
            ["--head-shapes", "4x1²"],
            "argument --head-shapes: head shape must look like HEADSxHEAD_DIM (e.g. 4x16), got",
        ),
    ],
)
def test_arguments_the_compiler_refuses_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """``python -m trt_plugins.aot`` (README) refuses what it cannot compile before compiling anything:
    one ``error:`` line naming the argument and exit 2, not a traceback (``4x0`` was a ZeroDivisionError
    from the default scale, ``float64`` and ``sm_70`` tracebacks from the compiler)."""
    with pytest.raises(SystemExit) as exc:
        aot.main([str(tmp_path / "out"), *argv])
    assert exc.value.code == 2
    assert f"error: {message}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


PTX_STUB = """.version 8.0
.target sm_80
.address_size 64
.visible .entry k(
\t.param .u64 k_param_0,
\t.param .u32 k_param_1,
\t.param .u64 k_param_2,
\t.param .u64 k_param_3
)
{
\tld.param.u64 %rd1, [k_param_0];
\tld.param.u64 %rd2, [k_param_2];
\tret;
}
"""


def test_strip_trailing_params_only_when_unused() -> None:
    stripped = aot.strip_unused_trailing_params(PTX_STUB, "k", 3)
    assert aot.ptx_entry_params(stripped, "k") == ["k_param_0", "k_param_1", "k_param_2"]
    assert "k_param_3" not in stripped and "[k_param_2]" in stripped
    with pytest.raises(AOTCompileError, match="k_param_2 of k is used"):
        aot.strip_unused_trailing_params(PTX_STUB, "k", 2)
    with pytest.raises(AOTCompileError, match=r"no \.entry"):
        aot.strip_unused_trailing_params(PTX_STUB, "other", 2)
    with pytest.raises(AOTCompileError, match="expected at least 5"):
        aot.strip_unused_trailing_params(PTX_STUB, "k", 5)


def test_ptxas_rejects_broken_ptx() -> None:
    with pytest.raises(AOTCompileError, match="ptxas"):
        aot.verify_ptx(PTX_STUB.replace("ret;", "bogus.instruction;"), "sm_80")


def test_ptx_versions_are_guarded_before_llvm() -> None:
    assert all(aot.PTX_VERSIONS[cc] >= aot._MIN_PTX_VERSION[cc] for cc in aot.TARGETS)
    with pytest.raises(AOTCompileError, match=r"minimum 8\.0 for sm_90"):
        aot._check_ptx_version(90, 78)
    with pytest.raises(AOTCompileError, match="not supported"):
        aot.ptx_version_for(70)
    assert aot.ptx_version_for(120) is None  # newer GPUs: Triton's default PTX


def test_launch_grid_and_json_round_trip(cache: Path) -> None:
    k = aot.compile_kernel("combine", "float32", 2, 8, 80, None, False)
    c = k.kernel_config
    assert k.launch_grid(0, 0, 2) == (1, 2, 1)
    assert k.launch_grid(c.block_r * 3, 1, 2) == (3, 2, 1) and k.launch_grid(1, c.chunk * 5, 2) == (5, 2, 1)
    assert aot.CompiledKernel(**k.to_json()) == k


def test_current_compute_capability_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GTCOMPRESS_CUDA_ARCH", "sm_90a")
    assert aot.current_compute_capability() == 90
    monkeypatch.setenv("GTCOMPRESS_CUDA_ARCH", "86")
    assert aot.current_compute_capability() == 86
    monkeypatch.setenv("GTCOMPRESS_CUDA_ARCH", "8.9")  # TORCH_CUDA_ARCH_LIST's way of writing it
    assert aot.current_compute_capability() == 89


@pytest.mark.parametrize("value", ["sm86", "8.6.1", "ampere", "sm_"])
def test_a_mistyped_compute_capability_override_is_named(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """The TensorRT plugin reads the override inside the engine build: it was a bare ``ValueError:
    invalid literal for int()`` (and ``8.6`` one too) that did not say where the value came from."""
    monkeypatch.setenv("GTCOMPRESS_CUDA_ARCH", value)
    with pytest.raises(aot.AOTCompileError, match=rf"^GTCOMPRESS_CUDA_ARCH='{value}': expected a compute capability"):
        aot.current_compute_capability()


@pytest.mark.parametrize(("dtype", "heads", "head_dim"), [("float32", 4, 16), ("float16", 8, 64)])
def test_rows_are_moved_in_128_bit_pieces(dtype: str, heads: int, head_dim: int, cache: Path) -> None:
    """The AOT PTX reads the K, V and Q rows and writes ``out`` with
    vector instructions: the pointers are declared 16-byte aligned (``spec.POINTER_ALIGNMENT``).
    Without that promise Triton emits only scalar ``ld.global.b32``/``.b16`` loads, and ptxas needs
    about half again as many registers."""
    k = aot.compile_kernel("partials", dtype, heads, head_dim, 90, None, False)
    assert not k.constexprs["PREFETCH"] and k.num_warps == spec.RULE_WARPS  # one-warp programs
    assert k.ptx.count("ld.global.v4.b32") >= 3, k.ptx.count("ld.global.v4.b32")
    assert "st.global.v4.b32" in k.ptx
    usage = ptxas_usage(k.ptx, k.target)
    assert usage is not None and usage.spill_store_bytes == usage.spill_load_bytes == 0
    # below ptxas's cap of 255, where it would start spilling: eight or more one-warp programs per SM
    assert usage.registers < 255


#: The tensor-core instructions a product compiles to on sm_80 and later, per input dtype: "dot"
#: multiplies in TF32 whatever the input; "mma" takes fp16 as loaded and bf16 and float32 as TF32.
PRODUCT_MMA = {
    ("dot", "float32"): "tf32.tf32",
    ("dot", "float16"): "tf32.tf32",
    ("dot", "bfloat16"): "tf32.tf32",
    ("mma", "float32"): "tf32.tf32",
    ("mma", "float16"): "f16.f16",
    ("mma", "bfloat16"): "tf32.tf32",
}


#: (dtype, heads, head_dim, aggregate, targets): the targets turn so that each dtype and each aggregate
#: meets all three code-generation paths, and each (dtype, aggregate) at least one with tensor cores.
PRODUCT_CASES = [
    (*shape, aggregate, (PATHS[t % 3], PATHS[(t + 1) % 3]))
    for t, (shape, aggregate) in enumerate(
        itertools.product((("float32", 4, 16), ("float16", 8, 64), ("bfloat16", 2, 256)), ("dot", "mma"))
    )
]


@pytest.mark.parametrize(("dtype", "heads", "head_dim", "aggregate", "targets"), PRODUCT_CASES)
def test_tensor_core_products_compile_for_every_path(
    dtype: str,
    heads: int,
    head_dim: int,
    aggregate: str,
    targets: tuple[int, int],
    cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tuned config that works its tiles with ``tl.dot`` is AOT-compilable like the scan: no
    scratch, the TensorRT ABI, static shared memory a plugin launch gets without opt-in. From sm_80
    the products run on tensor cores; for sm_75 (no TF32) Triton emits FMAs, for fp16 as well."""
    rule = spec.select_config(heads, head_dim, dtype)
    tile = max(spec.MIN_DOT, rule.tile_e)
    config = dataclasses.replace(rule, tile_e=tile, tiles=max(1, rule.chunk // tile), aggregate=aggregate)
    monkeypatch.setitem(spec.TUNED, (heads, head_dim, dtype), config)
    for cc in targets:
        k = aot.compile_kernel("partials", dtype, heads, head_dim, cc, None, True)
        assert k.kernel_config == config
        assert (k.constexprs["DOT_AGG"], k.constexprs["MMA"]) == (aggregate == "dot", aggregate == "mma")
        decls = k.ptx[k.ptx.index(".entry sga_partials(") :].split(")", 1)[0]
        assert (decls.count(".u64"), decls.count(".u32")) == ABI["partials"]
        assert 0 < k.shared_mem <= MAX_STATIC_SHARED
        kind = PRODUCT_MMA[(aggregate, dtype)]
        mma = re.findall(rf"^\s*mma\.sync\.aligned\.\S+\.{re.escape(kind)}", k.ptx, re.M)
        assert (len(mma) > 0) == (cc >= 80), (cc, kind, len(mma))


def test_product_cases_cover_every_pair() -> None:
    """What :data:`PRODUCT_CASES` promises: every dtype and every aggregate on each path, and tensor
    cores checked for every (dtype, aggregate)."""
    by_dtype = {d: set() for d in spec.FLOAT_DTYPES}
    by_aggregate: dict[str, set[int]] = {"dot": set(), "mma": set()}
    for dtype, _, _, aggregate, targets in PRODUCT_CASES:
        by_dtype[dtype] |= set(targets)
        by_aggregate[aggregate] |= set(targets)
        assert max(targets) >= 80
    assert all(s == set(PATHS) for s in [*by_dtype.values(), *by_aggregate.values()])
    assert {(d, a) for d, *_, a, _ in PRODUCT_CASES} == {(d, a) for d in spec.FLOAT_DTYPES for a in ("dot", "mma")}


def test_a_one_warp_partials_leaves_combine_at_four_warps(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep's one- and two-warp variants change only ``partials``: ``combine`` holds a
    ``block_p x block_d`` merge that one warp cannot keep in registers (it would spill)."""
    rule = spec.select_config(8, 64, "float16")
    monkeypatch.setitem(spec.TUNED, (8, 64, "float16"), dataclasses.replace(rule, num_warps=1))
    partials = aot.compile_kernel("partials", "float16", 8, 64, 90, None, False)
    combine = aot.compile_kernel("combine", "float16", 8, 64, 90, None, False)
    assert (partials.num_warps, partials.threads_per_block) == (1, 32)
    assert (combine.num_warps, combine.threads_per_block) == (spec.COMBINE_WARPS, 32 * spec.COMBINE_WARPS)
    for k in (partials, combine):
        usage = ptxas_usage(k.ptx, k.target)
        assert usage is not None and usage.spill_store_bytes == usage.spill_load_bytes == 0, (k.kernel, usage)


def test_sass_is_the_assembled_machine_code() -> None:
    valid = PTX_STUB.replace("{\n", "{\n\t.reg .b64 %rd<3>;\n", 1)
    code = sass(valid, "sm_80")
    assert code is not None and re.search(r"^\s*/\*[0-9a-f]{4}\*/\s+EXIT\s*;", code.text, re.M), code
    assert code.usage == ptxas_usage(valid, "sm_80")  # the report of that same assembly
    with pytest.raises(PtxasError, match="ptxas rejected the PTX for sm_80"):
        sass(PTX_STUB.replace("ret;", "bogus.instruction;"), "sm_80")


def test_ptxas_usage_reads_the_resource_report() -> None:
    valid = PTX_STUB.replace("{\n", "{\n\t.reg .b64 %rd<3>;\n", 1)
    usage = ptxas_usage(valid, "sm_80")
    assert usage is not None and usage.registers > 0 and usage.stack_bytes == 0 and usage.spill_store_bytes == 0
    with pytest.raises(PtxasError, match="ptxas rejected the PTX for sm_80"):
        ptxas_usage(PTX_STUB.replace("ret;", "bogus.instruction;"), "sm_80")


@pytest.mark.parametrize("damage", ["ptx", "warps", "not an object"])
def test_a_damaged_cache_entry_that_is_still_json_is_compiled_again(
    cache: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    """One changed character inside the PTX text (or a changed number) is still valid JSON: the entry
    was returned as it was, a different kernel for TensorRT to launch. The recorded SHA-256 catches it."""
    calls: list[int] = []
    real = aot.triton_compile

    def counting(*args: object, **kwargs: object) -> aot.RawCompiled:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(aot, "triton_compile", counting)
    first = aot.compile_kernel("partials", "float32", 2, 32, 80, 0.2, False)
    (entry,) = cache.iterdir()
    data = json.loads(entry.read_text())
    if damage == "ptx":
        at = data["ptx"].index(".entry")
        data["ptx"] = data["ptx"][:at] + ".entrz" + data["ptx"][at + 6 :]
    elif damage == "warps":
        data["num_warps"] += 1
    else:
        data = [data]
    entry.write_text(json.dumps(data))
    again = aot.compile_kernel("partials", "float32", 2, 32, 80, 0.2, False)
    assert len(calls) == 2 and not again.from_cache and again == first and again.ptx == first.ptx
    third = aot.compile_kernel("partials", "float32", 2, 32, 80, 0.2, False)
    assert len(calls) == 2 and third.from_cache and third == first  # the entry was rewritten


def test_a_compile_without_fp_fusion_is_cached_apart(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TRITON_FORCE_DISABLE_FP_FUSION overrides the fusion the compile asks for (spec.FP_FUSION), and the
    PTX changes with it; the cache key did not, so PTX compiled under it was handed to later builds
    without it (and the fused PTX to builds under it), rounding unlike the torch op's launches."""
    calls: list[object] = []
    real = aot.triton_compile

    def counting(*args: object, **kwargs: object) -> aot.RawCompiled:
        calls.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(aot, "triton_compile", counting)
    fused = aot.compile_kernel("partials", "float32", 2, 32, 80, 0.2, False, verify=False)
    monkeypatch.setenv("TRITON_FORCE_DISABLE_FP_FUSION", "1")
    unfused = aot.compile_kernel("partials", "float32", 2, 32, 80, 0.2, False, verify=False)
    assert len(calls) == 2 and not unfused.from_cache and unfused.cache_key != fused.cache_key
    assert unfused.ptx.count("fma.rn.f32") < fused.ptx.count("fma.rn.f32")
    monkeypatch.delenv("TRITON_FORCE_DISABLE_FP_FUSION")
    again = aot.compile_kernel("partials", "float32", 2, 32, 80, 0.2, False, verify=False)
    assert len(calls) == 2 and again.from_cache and again.ptx == fused.ptx
