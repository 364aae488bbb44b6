"""Triton's bundled ``ptxas`` and ``nvdisasm``: the proof that edited PTX still assembles, the
resource report (``ptxas -v``) and the machine code (SASS), which are what a machine without a GPU
can say about the kernel's speed -- registers per thread decide how many programs share a
multiprocessor, and so how many gathers are in flight; the instructions of the tile loop decide how
many edges per second the multiprocessors can issue."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


class PtxasError(RuntimeError):
    """``ptxas`` rejected the PTX, or printed no resource report."""


@dataclass(frozen=True)
class PtxasUsage:
    """What ``ptxas -v`` reports for one kernel: per-thread registers, spill traffic and stack bytes."""

    registers: int
    spill_store_bytes: int
    spill_load_bytes: int
    stack_bytes: int


def ptxas_path() -> str | None:
    """Triton's bundled ``ptxas``, else one on ``PATH``, else ``None``."""
    try:
        import triton

        return triton.knobs.nvidia.ptxas.path
    except Exception:  # the NVIDIA backend or its tools are missing
        return shutil.which("ptxas")


def _assemble(ptx: str, target: str, tmp: Path, *flags: str) -> tuple[Path, str]:
    """Run ``ptxas -v`` on ``ptx`` for ``target`` in ``tmp``: the cubin's path and the report."""
    src, cubin = tmp / "kernel.ptx", tmp / "kernel.cubin"
    src.write_text(ptx, encoding="utf-8")
    proc = subprocess.run(
        [str(ptxas_path()), "-v", *flags, f"-arch={target}", str(src), "-o", str(cubin)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise PtxasError(f"ptxas rejected the PTX for {target}: {proc.stderr.strip()[:2000]}")
    return cubin, proc.stdout + proc.stderr


def _usage(report: str, target: str) -> PtxasUsage:
    def number(pattern: str) -> int:
        m = re.search(pattern, report)
        if m is None:
            raise PtxasError(f"ptxas -v printed no {pattern!r} for {target}: {report.strip()[:2000]}")
        return int(m.group(1))

    return PtxasUsage(
        registers=number(r"Used (\d+) registers"),
        spill_store_bytes=number(r"(\d+) bytes spill stores"),
        spill_load_bytes=number(r"(\d+) bytes spill loads"),
        stack_bytes=number(r"(\d+) bytes stack frame"),
    )


def ptxas_usage(ptx: str, target: str) -> PtxasUsage | None:
    """Assemble ``ptx`` for ``target`` (e.g. ``sm_90a``) with Triton's bundled ``ptxas -v``.

    Returns ``None`` when no ``ptxas`` is available (nothing verified); raises
    :class:`PtxasError` when assembly fails. Registers decide how many programs share a
    multiprocessor, and so how many gathers are in flight: the one figure a GPU-less machine can
    give about the kernel's speed.
    """
    if not ptxas_path():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        _, report = _assemble(ptx, target, Path(tmp))
    return _usage(report, target)


@dataclass(frozen=True)
class Sass:
    """One assembly's resource report and machine code."""

    usage: PtxasUsage
    text: str


def sass(ptx: str, target: str) -> Sass | None:
    """The SASS of ``ptx`` assembled for ``target``, with source lines (``ptxas -lineinfo``, then
    ``nvdisasm -g -c``), and the resource report of that one assembly: what the GPU executes, as
    opposed to PTX, which ptxas still rewrites.

    Returns ``None`` when ``ptxas`` or ``nvdisasm`` is missing; raises :class:`PtxasError` when
    either fails.
    """
    ptxas = ptxas_path()
    nvdisasm = shutil.which("nvdisasm", path=str(Path(ptxas).parent)) if ptxas else None
    if not ptxas or not nvdisasm:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        cubin, report = _assemble(ptx, target, Path(tmp), "-lineinfo")
        proc = subprocess.run([nvdisasm, "-g", "-c", str(cubin)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise PtxasError(f"nvdisasm could not read the cubin for {target}: {proc.stderr.strip()[:2000]}")
    return Sass(_usage(report, target), proc.stdout)
