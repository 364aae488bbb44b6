"""Kernel v2's sweep variants as ``ptxas`` sees them, without a GPU: registers, spills, shared memory,
128-bit loads, PTX instruction count, and the programs per multiprocessor and K/V gathers in flight
they allow on a target.

    python bench/kernel_static.py              # sm_90a (H100/H200), the sweep's two families
    python bench/kernel_static.py --cc 80 --families fp32:4x16

Why: the tile sweep (``bench/kernel_sweep.py``) times these variants on a GPU, which this project gets
for minutes at a time. This table is what can be known before: the partials kernel is a gather loop,
and how many K/V bytes a multiprocessor keeps in flight is set by registers (programs per SM), tile
size and prefetch; the instruction count compares the work per tile of a segmented scan against a
tensor-core product. It lets the rule (``spec.select_config``) and the sweep's variants be chosen from
facts, and a GPU result be read against them. It predicts no time; only the sweep measures.

Writes ``bench/results/kernel/static-triton<version>.json`` (the command, commit, machine, date and Triton
version, one row per variant) and its PNG: register counts move between Triton releases (the H200 image
has 3.6, our CI 3.9), so each version's table is kept. The occupancy arithmetic follows the CUDA
programming guide's per-architecture limits (:data:`SM_LIMITS`): 64K registers per SM allocated per
warp in units of 256, a warp and block cap, and shared memory with 1 KiB reserved per block.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS, provenance
from bench.kernel_sweep import SWEEP_FAMILIES, sweep_variants, variant_label
from bench.kernel_workloads import SPEC_DTYPE

OUT_DIR = RESULTS / "kernel"
REGISTERS_PER_SM = 65536
REGISTER_UNIT = 256  # registers are allocated per warp in units of 256


@dataclass(frozen=True)
class SmLimits:
    """One architecture's per-multiprocessor limits (CUDA programming guide, compute capabilities)."""

    warps: int
    blocks: int
    shared_kib: int
    reserved_kib: int


SM_LIMITS: dict[int, SmLimits] = {
    75: SmLimits(warps=32, blocks=16, shared_kib=64, reserved_kib=0),
    80: SmLimits(warps=64, blocks=32, shared_kib=164, reserved_kib=1),
    86: SmLimits(warps=48, blocks=16, shared_kib=100, reserved_kib=1),
    89: SmLimits(warps=48, blocks=24, shared_kib=100, reserved_kib=1),
    90: SmLimits(warps=64, blocks=32, shared_kib=228, reserved_kib=1),
}


def programs_per_sm(registers: int, num_warps: int, shared_bytes: int, cc: int) -> tuple[int, str]:
    """How many programs of this kernel one multiprocessor holds at once, and what limits it."""
    lim = SM_LIMITS[cc]
    per_warp = -(-registers * 32 // REGISTER_UNIT) * REGISTER_UNIT
    caps = {
        "registers": (REGISTERS_PER_SM // per_warp) // num_warps,
        "warps": lim.warps // num_warps,
        "blocks": lim.blocks,
        "shared memory": (lim.shared_kib * 1024) // max(1, shared_bytes + lim.reserved_kib * 1024),
    }
    limiter = min(caps, key=lambda k: caps[k])
    return caps[limiter], limiter


def analyse(dtype: str, heads: int, head_dim: int, label: str, cfg: Any, cc: int) -> dict[str, Any]:
    """One variant's row: compile the partials kernel for ``cc`` as the AOT path does, run ``ptxas -v``."""
    from trt_plugins import aot, spec
    from trt_plugins.ptxas import ptxas_usage

    attrs = spec.validate_attributes(heads, head_dim, spec.default_scale(head_dim), False)
    raw = aot.triton_compile(
        "partials",
        spec.kernel_signature("partials", dtype),
        spec.constexprs("partials", attrs, cfg),
        cc,
        aot.ptx_version_for(cc),
        cfg.num_warps,
        cfg.num_stages,
    )
    target = aot.ptx_header(raw.ptx, "target")
    usage = ptxas_usage(raw.ptx, target)
    if usage is None:
        raise SystemExit("error: no ptxas found (Triton's NVIDIA backend ships one); nothing to report")
    programs, limiter = programs_per_sm(usage.registers, cfg.num_warps, raw.shared_mem, cc)
    row_bytes = cfg.head_group * head_dim * spec.ITEMSIZE[dtype]
    tiles_in_flight = 2 if cfg.prefetch else 1
    return {
        "dtype": dtype,
        "hd": f"{heads}x{head_dim}",
        "variant": label,
        "config": {**cfg.__dict__, "chunk": cfg.chunk},
        "target": target,
        "registers": usage.registers,
        "spill_bytes": usage.spill_store_bytes + usage.spill_load_bytes,
        "shared_bytes": raw.shared_mem,
        "vector_loads": raw.ptx.count("ld.global.v4."),
        "instructions": ptx_instructions(raw.ptx),
        "scratch_bytes": raw.scratch_bytes,
        "programs_per_sm": programs,
        "limited_by": limiter,
        # K and V rows of every tile a program has issued and not yet used, summed over the SM
        "kv_bytes_in_flight_per_sm": programs * cfg.tile_e * tiles_in_flight * row_bytes * 2,
    }


def ptx_instructions(ptx: str) -> int:
    """Instructions in the PTX text, each counted once (a loop body is not multiplied by its trips).

    Almost all of the kernel is its tile loop, so this compares the work per tile of two variants
    (a scan against a product, say); it is not a time."""
    skip = (".", "//", "$", "{", "}", "(", ")")
    return sum(1 for line in ptx.splitlines() if (text := line.strip()) and not text.startswith(skip))


def parse_families(text: str) -> list[tuple[str, int, int]]:
    """``"fp32:4x16,fp16:8x64"`` -> ``[("fp32", 4, 16), ("fp16", 8, 64)]``."""
    out = []
    for item in text.split(","):
        dtype, _, shape = item.strip().partition(":")
        heads, _, head_dim = shape.partition("x")
        if dtype not in SPEC_DTYPE or not (heads.isdigit() and head_dim.isdigit()):
            raise argparse.ArgumentTypeError(
                f"a family looks like DTYPE:HEADSxHEAD_DIM with DTYPE in {sorted(SPEC_DTYPE)}, got {item!r}"
            )
        out.append((dtype, int(heads), int(head_dim)))
    return out


def _name(row: dict[str, Any]) -> str:
    """The variant's label; the rule's spelled out like the others'."""
    if row["variant"] != "rule":
        return row["variant"]
    from trt_plugins import spec

    config = {k: v for k, v in row["config"].items() if k != "chunk"}
    return f"rule: {variant_label(spec.KernelConfig(**config))}"


def plot(doc: dict[str, Any], path: Path) -> Path:
    """Per family: K/V bytes in flight per SM for each variant, labelled with registers and programs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(dict.fromkeys((r["dtype"], r["hd"]) for r in doc["rows"]))
    fig, axes = plt.subplots(len(families), 1, figsize=(11, 0.45 * len(doc["rows"]) + 2.5), squeeze=False)
    for ax, (dtype, hd) in zip(axes[:, 0], families, strict=True):
        rows = [r for r in doc["rows"] if (r["dtype"], r["hd"]) == (dtype, hd)]
        ys = range(len(rows))
        ax.barh(list(ys), [r["kv_bytes_in_flight_per_sm"] / 1024 for r in rows], color="tab:blue")
        for y, r in zip(ys, rows, strict=True):
            note = (
                f" {r['registers']} regs, {r['programs_per_sm']} programs/SM ({r['limited_by']}),"
                f" {r['instructions']} PTX instructions"
            )
            ax.text(r["kv_bytes_in_flight_per_sm"] / 1024, y, note, va="center", fontsize=7)
        ax.set_yticks(list(ys), [_name(r) for r in rows], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("K/V bytes in flight per SM (KiB)")
        ax.set_title(f"{dtype}, H x D = {hd}, {rows[0]['target']}")
        ax.margins(x=0.35)
    fig.suptitle(f"Kernel v2 partials, ptxas -v, Triton {doc['triton']} (commit {str(doc.get('commit', ''))[:10]})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cc", type=int, default=90, choices=sorted(SM_LIMITS), help="compute capability x10")
    parser.add_argument(
        "--families",
        type=parse_families,
        default=[(d, h, hd) for d, h, hd in SWEEP_FAMILIES],
        help="DTYPE:HEADSxHEAD_DIM list (default: the sweep's)",
    )
    parser.add_argument("--out", type=Path, help="JSON path (default: results/kernel/static-triton<version>.json)")
    args = parser.parse_args(argv)
    import triton
    from rich.progress import Progress

    out = args.out or OUT_DIR / f"static-triton{triton.__version__}.json"
    doc: dict[str, Any] = {**provenance(sys.argv if argv is None else ["bench/kernel_static.py", *argv])}
    doc["triton"] = triton.__version__
    doc["rows"] = []
    jobs = [
        (SPEC_DTYPE[d], h, hd, label, cfg)
        for d, h, hd in args.families
        for label, cfg in sweep_variants(h, hd, SPEC_DTYPE[d]).items()
    ]
    with Progress() as bar:
        task = bar.add_task("compiling variants", total=len(jobs))
        for dtype, heads, head_dim, label, cfg in jobs:
            doc["rows"].append(analyse(dtype, heads, head_dim, label, cfg, args.cc))
            bar.advance(task)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_json = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp_json, out)
    png = plot(doc, out.with_suffix(".png"))
    for r in doc["rows"]:
        print(
            f"{r['dtype']:8s} {r['hd']:5s} {_name(r):48s} {r['registers']:3d} regs  spills {r['spill_bytes']:4d} B"
            f"  {r['programs_per_sm']:2d} programs/SM ({r['limited_by']})"
            f"  {r['kv_bytes_in_flight_per_sm'] / 1024:5.1f} KiB K/V in flight per SM"
            f"  {r['instructions']:5d} PTX instructions"
        )
    print(f"wrote {out} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
