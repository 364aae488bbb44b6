"""Ahead-of-time compilation of the kernel to PTX for named GPUs, without a GPU.

TensorRT's AOT plugin path takes PTX text and bakes it into the engine, so the kernel has to be
compiled for the engine's GPU before TensorRT sees it -- and, for shipping, for every GPU we claim
to support, on machines that have no GPU and no driver. ``triton.compile`` does that when it is
given an explicit ``GPUTarget("cuda", cc, 32)``.

Choices made here, and why:

* **PTX ISA pinned per target** (:data:`PTX_VERSIONS`): Triton 3.9 emits ``.version 8.8`` by
  default, which only recent drivers load. Each target gets the ISA that introduced it, with 7.8
  (CUDA 11.8) as the floor: sm_75/sm_80/sm_86/sm_89 7.8, sm_90 8.0. The floor is what Triton's
  shared-memory code for the kernels' scans needs (``st.shared::cta``), and costs nothing: TensorRT
  10 itself needs a CUDA 11.8 driver. Triton compiles
  cc 90 for ``sm_90a``, whose minimum is 8.0; LLVM *aborts the process* on a version below a
  target's minimum, so versions are checked here before Triton is called.
* **Trailing scratch parameters removed**: Triton >= 3.3 appends ``global_scratch`` and
  ``profile_scratch`` pointers to every kernel's parameter list. TensorRT launches an AOT kernel
  with exactly its inputs, ``extra_args`` and outputs, so those two would be read from past the end
  of the argument array. Our kernel uses neither (both sizes are 0 in the metadata), so they are
  deleted from the ``.entry`` declaration after checking that the body never references them; the
  edited PTX is then assembled with Triton's bundled ``ptxas`` to prove it is still valid.
* **Pointer alignment promised** (:data:`spec.POINTER_ALIGNMENT`, ``tt.divisibility`` 16 on every
  pointer argument): Triton's JIT infers it from the tensors it is launched with, but an AOT compile
  sees no tensor, and without the hint every K/V row is read one 32-bit element at a time. TensorRT's
  buffers are 256-byte aligned, so the promise holds wherever the PTX runs.
* **Disk cache** keyed by kernel source hash, signature, constexprs, target, PTX version, launch
  options and Triton version; entries are written atomically (temp file + ``os.replace``) and carry
  the SHA-256 of their own contents (``sha256``): a damaged character inside the PTX text is still
  valid JSON, and was launched as a different kernel; an entry that does not match is compiled again.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import inspect
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trt_plugins import spec
from trt_plugins.files import dirs_made, write_atomic
from trt_plugins.ptxas import PtxasError, ptxas_usage

#: GPU targets we ship PTX for (compute capability x10).
TARGETS: tuple[int, ...] = (75, 80, 86, 89, 90)
#: Pinned PTX ISA per target, as Triton's ``ptx_version`` option (80 -> ``.version 8.0``).
PTX_VERSIONS: dict[int, int] = {75: 78, 80: 78, 86: 78, 89: 78, 90: 80}
#: Lowest PTX ISA that LLVM accepts for a Triton target (sm_90 is compiled as sm_90a).
_MIN_PTX_VERSION: dict[int, int] = {75: 63, 80: 70, 86: 71, 87: 74, 89: 78, 90: 80}
#: Head shapes ``(heads, head_dim)`` :func:`compile_all` ships by default (scale = 1/sqrt(head_dim));
#: other shapes are compiled on demand by the TensorRT plugin (and cached).
DEFAULT_HEAD_SHAPES: tuple[tuple[int, int], ...] = ((1, 64), (4, 16), (4, 32), (8, 64), (1, 128))

_CACHE_FORMAT = 3
_SCRATCH_METADATA = ("global_scratch_size", "profile_scratch_size")


class AOTCompileError(RuntimeError):
    """The kernel could not be compiled to PTX that TensorRT can launch."""


@dataclass(frozen=True)
class RawCompiled:
    """What :func:`triton_compile` reads back from ``triton.compile``."""

    ptx: str
    kernel_name: str
    num_warps: int
    shared_mem: int
    scratch_bytes: int


@dataclass(frozen=True)
class CompiledKernel:
    """One kernel variant compiled for one GPU: everything TensorRT's ``aot_impl`` returns."""

    kernel: str
    kernel_name: str
    ptx: str
    target: str
    compute_capability: int
    ptx_version: str
    dtype: str
    num_warps: int
    shared_mem: int
    config: dict[str, int]
    constexprs: dict[str, int | float | bool]
    signature: dict[str, str]
    cache_key: str
    grid: str
    from_cache: bool = dataclasses.field(default=False, compare=False)

    @property
    def threads_per_block(self) -> int:
        return self.num_warps * 32

    @property
    def kernel_config(self) -> spec.KernelConfig:
        return spec.KernelConfig(**self.config)

    def launch_grid(self, n_nodes: int, n_edges: int, heads: int) -> tuple[int, int, int]:
        """Concrete grid (:data:`spec.GRID_FORMULAS`) for a graph of ``n_nodes`` and ``n_edges``."""
        return spec.grid(self.kernel, n_nodes, n_edges, heads, self.kernel_config)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("from_cache")
        return data


def ptx_version_for(cc: int) -> int | None:
    """Pinned PTX version for a compute capability; ``None`` (Triton's default) for unlisted GPUs
    newer than sm_90, which need a recent driver anyway."""
    if cc < 75:
        raise AOTCompileError(f"compute capability {cc} is not supported (sm_75 and newer only)")
    return PTX_VERSIONS.get(cc)


def _check_ptx_version(cc: int, ptx_version: int | None) -> None:
    if ptx_version is None:
        return
    minimum = _MIN_PTX_VERSION.get(cc, 0)
    if ptx_version < minimum:
        raise AOTCompileError(
            f"PTX version {ptx_version / 10:.1f} is below the minimum {minimum / 10:.1f} for sm_{cc} "
            "(LLVM would abort the process)"
        )


def cache_dir() -> Path:
    """``$GTCOMPRESS_CACHE/ptx`` if the variable is set, else ``~/.cache/gtcompress/ptx``."""
    root = os.environ.get("GTCOMPRESS_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "gtcompress") / "ptx"


def kernel_source_hash() -> str:
    """sha256 of the kernel module's source, combine functions included (part of every cache key)."""
    from trt_plugins import _kernel

    return hashlib.sha256(inspect.getsource(_kernel).encode()).hexdigest()


def _triton_version() -> str:
    import triton

    return str(triton.__version__)


def _fp_fusion() -> bool:
    """Whether Triton compiles with the FP fusion :data:`~trt_plugins.spec.FP_FUSION` asks for:
    ``TRITON_FORCE_DISABLE_FP_FUSION`` overrides the request, and the PTX changes with it, so the
    cache key holds the outcome, not the request. (Triton versions without the knob do as asked.)"""
    import triton

    enabled = getattr(getattr(getattr(triton, "knobs", None), "language", None), "fp_fusion_enabled", None)
    return bool(enabled(spec.FP_FUSION)) if enabled is not None else spec.FP_FUSION


def triton_compile(
    kernel: str,
    signature: dict[str, str],
    constexprs: dict[str, int | float | bool],
    cc: int,
    ptx_version: int | None,
    num_warps: int,
    num_stages: int,
) -> RawCompiled:
    """Run ``triton.compile`` for an explicit CUDA target (no GPU or driver needed)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from trt_plugins.kernels import jit_kernel

    fn = jit_kernel(kernel)
    full_signature = {**signature, **{name: "constexpr" for name in constexprs}}
    aligned = [["tt.divisibility", spec.POINTER_ALIGNMENT]]
    attrs = {(fn.arg_names.index(name),): aligned for name in spec.pointer_args(kernel)}
    options: dict[str, Any] = {"num_warps": num_warps, "num_stages": num_stages, "enable_fp_fusion": spec.FP_FUSION}
    if ptx_version is not None:
        options["ptx_version"] = ptx_version
    compiled = triton.compile(
        ASTSource(fn, full_signature, constexprs, attrs), target=GPUTarget("cuda", cc, 32), options=options
    )
    meta = compiled.metadata
    scratch = sum(int(getattr(meta, name, 0) or 0) for name in _SCRATCH_METADATA)
    return RawCompiled(
        ptx=compiled.asm["ptx"],
        kernel_name=str(meta.name),
        num_warps=int(meta.num_warps),
        shared_mem=int(meta.shared),
        scratch_bytes=scratch,
    )


_ENTRY = re.compile(r"\.entry\s+(?P<name>[\w$]+)\s*\((?P<params>[^)]*)\)", re.S)


def ptx_entry_params(ptx: str, kernel_name: str) -> list[str]:
    """Parameter names of the ``.entry`` of ``kernel_name``, in order."""
    for m in _ENTRY.finditer(ptx):
        if m.group("name") == kernel_name:
            return [p.split()[-1] for p in m.group("params").split(",") if p.strip()]
    raise AOTCompileError(f"PTX has no .entry named {kernel_name!r}")


def strip_unused_trailing_params(ptx: str, kernel_name: str, keep: int) -> str:
    """Drop the ``.entry`` parameters after the first ``keep`` if the kernel body never reads them."""
    for m in _ENTRY.finditer(ptx):
        if m.group("name") != kernel_name:
            continue
        decls = [p for p in m.group("params").split(",") if p.strip()]
        if len(decls) < keep:
            raise AOTCompileError(f"kernel {kernel_name} has {len(decls)} parameters, expected at least {keep}")
        body = ptx[: m.start()] + ptx[m.end() :]
        for decl in decls[keep:]:
            name = decl.split()[-1]
            if re.search(rf"\b{re.escape(name)}\b", body):
                raise AOTCompileError(f"parameter {name} of {kernel_name} is used; TensorRT cannot pass it")
        params = ",".join(decls[:keep]).rstrip()
        return f"{ptx[: m.start('params')]}{params}\n{ptx[m.end('params') :]}"
    raise AOTCompileError(f"PTX has no .entry named {kernel_name!r}")


def ptx_header(ptx: str, directive: str) -> str:
    """The value of a PTX header directive (``target`` -> ``sm_90a``, ``version`` -> ``8.0``)."""
    m = re.search(rf"^\s*\.{directive}\s+(\S+)", ptx, re.M)
    if not m:
        raise AOTCompileError(f"PTX has no .{directive} directive")
    return m.group(1)


def verify_ptx(ptx: str, target: str) -> bool:
    """Assemble ``ptx`` for ``target`` (e.g. ``sm_90a``) with Triton's bundled ``ptxas``: ``False``
    when no ``ptxas`` is available (nothing verified); raises :class:`AOTCompileError` when assembly fails."""
    try:
        return ptxas_usage(ptx, target) is not None
    except PtxasError as exc:
        raise AOTCompileError(str(exc)) from None


def _sha256_json(obj: dict[str, Any]) -> str:
    """SHA-256 of ``obj`` as canonical JSON: a cache entry's key (of what it was compiled from) and
    its ``sha256`` field (of its own contents, that field aside)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def compile_kernel(
    kernel: str,
    dtype: str,
    heads: int,
    head_dim: int,
    cc: int,
    scale: float | None = None,
    has_bias: bool = False,
    *,
    use_cache: bool = True,
    cache_root: Path | None = None,
    verify: bool = True,
) -> CompiledKernel:
    """PTX of ``kernel`` (``"partials"`` or ``"combine"``) for ``(dtype, heads, head_dim, scale,
    has_bias)`` on compute capability ``cc``.

    ``scale`` defaults to ``1/sqrt(head_dim)``; it is a compile-time constant. Results are cached
    on disk (:func:`cache_dir`); ``verify`` assembles fresh PTX with ``ptxas`` when one is available.
    """
    if kernel not in spec.KERNELS:
        raise AOTCompileError(f"kernel must be one of {spec.KERNELS}, got {kernel!r}")
    attrs = spec.validate_attributes(
        heads, head_dim, spec.default_scale(head_dim) if scale is None else scale, has_bias
    )
    config = spec.select_config(heads, head_dim, dtype)
    constexprs = spec.constexprs(kernel, attrs, config)
    signature = spec.kernel_signature(kernel, dtype)
    ptx_version = ptx_version_for(cc)
    _check_ptx_version(cc, ptx_version)
    payload = {
        "format": _CACHE_FORMAT,
        "kernel": kernel,
        "source": kernel_source_hash(),
        "signature": signature,
        "constexprs": {k: repr(v) for k, v in constexprs.items()},
        "target": ["cuda", cc, 32],
        "ptx_version": ptx_version,
        "num_warps": spec.kernel_warps(kernel, config),
        "num_stages": config.num_stages,
        "pointer_alignment": spec.POINTER_ALIGNMENT,
        "fp_fusion": _fp_fusion(),
        "triton": _triton_version(),
    }
    key = _sha256_json(payload)
    path = (cache_root or cache_dir()) / f"sparse_graph_attention_{kernel}-{key[:32]}.json"
    if use_cache and path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            recorded = data.pop("sha256", None)
            if data.get("cache_key") == key and recorded == _sha256_json(data):
                return CompiledKernel(**data, from_cache=True)
        except (OSError, ValueError, TypeError, AttributeError):  # AttributeError: JSON but not an object
            pass  # unreadable, damaged or stale entry: compile again and overwrite it

    warps = spec.kernel_warps(kernel, config)
    raw = triton_compile(kernel, signature, constexprs, cc, ptx_version, warps, config.num_stages)
    if raw.scratch_bytes:
        raise AOTCompileError(
            f"kernel {kernel} needs {raw.scratch_bytes} bytes of Triton scratch memory, "
            "which TensorRT's AOT launch cannot provide"
        )
    ptx = strip_unused_trailing_params(raw.ptx, raw.kernel_name, len(spec.KERNEL_ARGS[kernel]))
    target = ptx_header(ptx, "target")
    if verify:
        verify_ptx(ptx, target)
    compiled = CompiledKernel(
        kernel=kernel,
        kernel_name=raw.kernel_name,
        ptx=ptx,
        target=target,
        compute_capability=cc,
        ptx_version=ptx_header(ptx, "version"),
        dtype=dtype,
        num_warps=raw.num_warps,
        shared_mem=raw.shared_mem,
        config=dataclasses.asdict(config),
        constexprs=constexprs,
        signature=signature,
        cache_key=key,
        grid=spec.GRID_FORMULAS[kernel],
    )
    if use_cache:
        entry = compiled.to_json()
        write_atomic(path, json.dumps({**entry, "sha256": _sha256_json(entry)}, indent=1))
    return compiled


def current_compute_capability() -> int:
    """Compute capability (x10) of the GPU Triton would launch on; ``$GTCOMPRESS_CUDA_ARCH`` overrides
    (``80``, ``sm_90a``, or ``8.6`` as ``TORCH_CUDA_ARCH_LIST`` writes it)."""
    override = os.environ.get("GTCOMPRESS_CUDA_ARCH", "").strip()
    if override:
        # The TensorRT plugin reads this inside the engine build, where a bare ValueError from int()
        # surfaces as an unexplained plugin failure; a mistyped value is named here instead.
        m = re.fullmatch(r"(?:sm_)?(\d+)a?|(\d+)\.(\d)", override)
        if m is None:
            raise AOTCompileError(
                f"GTCOMPRESS_CUDA_ARCH={override!r}: expected a compute capability such as 80, sm_90a or 8.6"
            )
        return int(m.group(1)) if m.group(1) else int(m.group(2)) * 10 + int(m.group(3))
    try:
        from triton.runtime import driver

        target = driver.active.get_current_target()
    except Exception as err:  # no driver, no GPU
        raise AOTCompileError(
            "no CUDA GPU visible to Triton; set GTCOMPRESS_CUDA_ARCH (e.g. 80) to compile for a named target"
        ) from err
    if target.backend != "cuda":
        raise AOTCompileError(f"the active Triton backend is {target.backend!r}, not 'cuda'")
    return int(target.arch)


def compile_all(
    out_dir: str | os.PathLike[str],
    targets: Iterable[int] = TARGETS,
    dtypes: Iterable[str] = spec.FLOAT_DTYPES,
    head_shapes: Iterable[tuple[int, int]] = DEFAULT_HEAD_SHAPES,
    has_bias: Iterable[bool] = (False, True),
    *,
    use_cache: bool = True,
) -> Path:
    """Write one ``.ptx`` per (kernel, target, dtype, head shape, has_bias) plus ``manifest.json``;
    returns the manifest path. The scale of each variant is ``1/sqrt(head_dim)``. ``combine`` does
    not depend on the bias or the scale, so it is written once per (target, dtype, head shape)."""
    out = Path(out_dir)
    with dirs_made(out):  # a target, dtype or shape refused before any file is written leaves no empty folder
        entries = []
        for cc in targets:
            for dtype in dtypes:
                for heads, head_dim in head_shapes:
                    for kernel in spec.KERNELS:
                        for bias in has_bias if kernel == "partials" else (False,):
                            k = compile_kernel(kernel, dtype, heads, head_dim, cc, None, bias, use_cache=use_cache)
                            tag = ("_bias" if bias else "_nobias") if kernel == "partials" else ""
                            name = f"sga_{kernel}_{dtype}_h{heads}d{head_dim}{tag}_sm{cc}.ptx"
                            write_atomic(out / name, k.ptx)
                            entries.append(
                                {
                                    "file": name,
                                    "kernel": kernel,
                                    "sha256": hashlib.sha256(k.ptx.encode()).hexdigest(),
                                    "kernel_name": k.kernel_name,
                                    "target": k.target,
                                    "compute_capability": cc,
                                    "ptx_version": k.ptx_version,
                                    "dtype": dtype,
                                    "heads": heads,
                                    "head_dim": head_dim,
                                    "scale": spec.default_scale(head_dim),
                                    "has_bias": bool(bias),
                                    "config": k.config,
                                    "constexprs": k.constexprs,
                                    "num_warps": k.num_warps,
                                    "threads_per_block": k.threads_per_block,
                                    "shared_mem": k.shared_mem,
                                    "grid": k.grid,
                                }
                            )
        manifest = {
            "format": _CACHE_FORMAT,
            "plugin_ids": [spec.PARTIALS_PLUGIN_ID, spec.COMBINE_PLUGIN_ID],
            "triton_version": _triton_version(),
            "kernel_source_sha256": kernel_source_hash(),
            "kernel_args": {name: list(args) for name, args in spec.KERNEL_ARGS.items()},
            "scalar_args": list(spec.KERNEL_SCALAR_ARGS),
            "grids": spec.GRID_FORMULAS,
            "part_shape": spec.PART_SHAPE_FORMULA,
            "entries": entries,
        }
        path = out / "manifest.json"
        write_atomic(path, json.dumps(manifest, indent=1))
    return path


def _ints(text: str) -> list[int]:
    """``"sm_80,90"`` -> ``[80, 90]``; a target the compiler refuses is refused here, by name, so that
    a mistyped list ends in one usage error instead of a traceback after the first targets compiled."""
    targets = []
    for item in (x.strip() for x in text.split(",") if x.strip()):
        digits = item.removeprefix("sm_")
        if not (digits.isascii() and digits.isdigit()):  # '²' passes isdigit, not int
            raise argparse.ArgumentTypeError(f"a target is a compute capability such as 80 or sm_90, got {item!r}")
        try:
            _check_ptx_version(int(digits), ptx_version_for(int(digits)))
        except AOTCompileError as err:
            raise argparse.ArgumentTypeError(f"target {item!r}: {err}") from None
        targets.append(int(digits))
    return targets


def _dtypes(text: str) -> list[str]:
    """``"float16,bfloat16"`` -> ``["float16", "bfloat16"]``, each one of :data:`spec.FLOAT_DTYPES`."""
    dtypes = [x.strip() for x in text.split(",") if x.strip()]
    for dtype in dtypes:
        if dtype not in spec.FLOAT_DTYPES:
            raise argparse.ArgumentTypeError(f"dtype must be one of {spec.FLOAT_DTYPES}, got {dtype!r}")
    return dtypes


def _shapes(text: str) -> list[tuple[int, int]]:
    """``"4x16,8x64"`` -> ``[(4, 16), (8, 64)]``; a shape the kernels do not take (``4x0``: no scale
    ``1/sqrt(head_dim)``; ``1x512``: wider than :data:`spec.MAX_HEAD_DIM`) is refused with the reason."""
    shapes = []
    for item in text.split(","):
        heads, _, head_dim = item.strip().partition("x")
        if not all(x.isascii() and x.isdigit() for x in (heads, head_dim)):
            raise argparse.ArgumentTypeError(f"head shape must look like HEADSxHEAD_DIM (e.g. 4x16), got {item!r}")
        try:
            spec.validate_attributes(int(heads), int(head_dim), 1.0, 0)
        except spec.PluginSpecError as err:
            raise argparse.ArgumentTypeError(f"head shape {item.strip()!r}: {err}") from None
        shapes.append((int(heads), int(head_dim)))
    return shapes


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m trt_plugins.aot OUT_DIR [--targets 80,90] [--head-shapes 4x16,8x64] [--dtypes float16]``."""
    parser = argparse.ArgumentParser(description="Compile the sparse graph attention kernels to PTX.")
    parser.add_argument("out_dir")
    parser.add_argument("--targets", type=_ints, default=list(TARGETS))
    parser.add_argument("--head-shapes", type=_shapes, default=list(DEFAULT_HEAD_SHAPES))
    parser.add_argument("--dtypes", type=_dtypes, default=list(spec.FLOAT_DTYPES))
    args = parser.parse_args(argv)
    path = compile_all(args.out_dir, args.targets, args.dtypes, args.head_shapes)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
