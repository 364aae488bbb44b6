"""Kernel v2's sweep variants as ``ptxas`` sees them, without a GPU: registers, spills, shared memory,
128-bit loads, the tile loop's machine instructions per edge, and the programs per multiprocessor
and K/V gathers in flight they allow on a target.

    python bench/kernel_static.py              # sm_90a (H100/H200), the sweep's families
    python bench/kernel_static.py --cc 80 --families fp32:4x16
    python bench/kernel_static.py --grid       # the rule against four warps, 33 head shapes and dtypes

Why: the tile sweep (``bench/kernel_sweep.py``) times these variants on a GPU, which this project gets
for minutes at a time. This table is what can be known before: the partials kernel is a gather loop,
and how many K/V bytes a multiprocessor keeps in flight is set by registers (programs per SM), tile
size and prefetch; the warp instructions each edge costs (the tile loop's SASS, times warps and head
groups, over the tile's edges) say whether the multiprocessors can issue the work as fast as memory
delivers the rows, and which source lines cost the most (``loop_by_line``). It lets the rule
(``spec.select_config``) and the sweep's variants be chosen from facts, and a GPU result be read
against them. It predicts no time; only the sweep measures.

Writes ``bench/results/kernel/static-triton<version>.json`` (the command, commit, machine, date and Triton
version, one row per variant) and its PNG (``--grid``: ``static-grid-triton<version>``, the rule and
the four-warp prefetching variant of every head shape in :data:`GRID_SHAPES` and dtype, which is
what the rule, chosen before any GPU run, rests on): register counts move between Triton releases (the H200 image
has 3.6, our CI 3.9), so each version's table is kept. The occupancy arithmetic follows the CUDA
programming guide's per-architecture limits (:data:`SM_LIMITS`): 64K registers per SM allocated per
warp in units of 256, a warp and block cap, and shared memory with 1 KiB reserved per block.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS, provenance
from bench._json import write_json
from bench.kernel_sweep import SWEEP_FAMILIES, parse_families, sweep_variants, variant_label
from bench.kernel_workloads import SPEC_DTYPE

OUT_DIR = RESULTS / "kernel"
REGISTERS_PER_SM = 65536
REGISTER_UNIT = 256  # registers are allocated per warp in units of 256
BY_LINE = 12  # source lines kept per row, the costliest first
#: Warp instructions an H200 issues per byte of copy bandwidth: 132 SMs x 4 schedulers x 1.98 GHz
#: = 1.05e12 per second, over the 4.2 TB/s its copy reaches (measured in the GPU issue). A kernel
#: whose tile loop costs more per K/V byte is bound by instruction issue before memory.
H200_ISSUE_PER_BYTE = 0.25
#: Head shapes (heads, head_dim) of ``--grid``: narrow and wide rows, odd head sizes, many heads.
GRID_SHAPES = ((1, 16), (2, 16), (4, 16), (8, 16), (4, 32), (2, 64), (8, 64), (1, 128), (3, 24), (8, 32), (16, 16))


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
    """One variant's row: compile the partials kernel for ``cc`` as the AOT path does, assemble it once
    (``ptxas -v``) and read its SASS."""
    from trt_plugins import aot, spec
    from trt_plugins.ptxas import sass

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
    code = sass(raw.ptx, target)
    if code is None:
        raise SystemExit("error: no ptxas and nvdisasm (Triton's NVIDIA backend ships both); nothing to report")
    usage = code.usage
    programs, limiter = programs_per_sm(usage.registers, cfg.num_warps, raw.shared_mem, cc)
    row_bytes = cfg.head_group * head_dim * spec.ITEMSIZE[dtype]
    tiles_in_flight = 2 if cfg.prefetch else 1
    return {
        "dtype": dtype,
        "hd": f"{heads}x{head_dim}",
        "variant": label,
        "name": f"rule: {variant_label(cfg)}" if label == "rule" else label,
        "config": {**cfg.__dict__, "chunk": cfg.chunk},
        "target": target,
        "registers": usage.registers,
        "spill_bytes": usage.spill_store_bytes + usage.spill_load_bytes,
        "shared_bytes": raw.shared_mem,
        "vector_loads": raw.ptx.count("ld.global.v4."),
        **loop_figures(sass_loop(code.text), cfg, heads, head_dim, dtype),
        "scratch_bytes": raw.scratch_bytes,
        "programs_per_sm": programs,
        "limited_by": limiter,
        # K and V rows of every tile a program has issued and not yet used, summed over the SM
        "kv_bytes_in_flight_per_sm": programs * cfg.tile_e * tiles_in_flight * row_bytes * 2,
    }


@dataclass(frozen=True)
class SassLoop:
    """The outermost loop of a kernel's SASS (the partials kernel's tile loop): its instructions,
    inner loops (the row searches) counted once, and how many of them each source line made."""

    instructions: int
    by_line: dict[int, int]


def sass_loop(sass_text: str) -> SassLoop:
    """Find the loop whose backward branch spans the most instructions and count what it holds
    (``NOP`` padding left out). Line numbers come from ``nvdisasm -g``'s ``//## File ..., line N``."""
    instructions: list[tuple[str, int | None]] = []
    labels: dict[str, int] = {}
    line: int | None = None
    for raw in sass_text.splitlines():
        text = raw.strip()
        if text.startswith("//##"):
            m = re.search(r"line (\d+)", text)
            line = int(m.group(1)) if m else line
        elif m := re.match(r"^(\.L_x_\d+):", text):
            labels[m.group(1)] = len(instructions)
        elif m := re.match(r"^/\*[0-9a-f]{4,}\*/\s+(.*?)\s*;", text):
            instructions.append((m.group(1), line))
    loops = [
        (labels[m.group(1)], i)
        for i, (ins, _) in enumerate(instructions)
        if (m := re.search(r"\bBRA\b.*?(\.L_x_\d+)", ins)) and labels.get(m.group(1), len(instructions)) <= i
    ]
    if not loops:
        raise ValueError("no loop in the SASS: a backward branch (BRA to an earlier label) was expected")
    first, last = max(loops, key=lambda span: span[1] - span[0])
    body = [(ins, ln) for ins, ln in instructions[first : last + 1] if not ins.startswith("NOP")]
    by_line: dict[int, int] = {}
    for _, ln in body:
        if ln is not None:
            by_line[ln] = by_line.get(ln, 0) + 1
    return SassLoop(len(body), dict(sorted(by_line.items(), key=lambda kv: -kv[1])))


def loop_figures(loop: SassLoop, cfg: Any, heads: int, head_dim: int, dtype: str) -> dict[str, Any]:
    """The tile loop's SASS instructions, the warp instructions each edge costs, and per byte read.

    Every warp of a program runs the loop once per ``tile_e`` edges, for each head group; an edge
    reads its K and V rows (the minimum the op must move). Where this exceeds a GPU's ratio of
    instruction issue to bandwidth (:data:`H200_ISSUE_PER_BYTE`), the kernel cannot reach the
    bandwidth: it is bound by issue, not by memory.
    """
    from trt_plugins import spec

    per_edge = loop.instructions * cfg.num_warps * spec.head_programs(heads, cfg) / cfg.tile_e
    kv_bytes = 2 * heads * head_dim * spec.ITEMSIZE[dtype]
    return {
        "loop_instructions": loop.instructions,
        "warp_instructions_per_edge": round(per_edge, 1),
        "warp_instructions_per_kv_byte": round(per_edge / kv_bytes, 3),
        "loop_by_line": {str(k): v for k, v in list(loop.by_line.items())[:BY_LINE]},
    }


def grid_variants(heads: int, head_dim: int, dtype: str) -> dict[str, Any]:
    """The rule and, of the sweep's variants, the one with the rule's tile and head group run by four
    warps with prefetch (the rule before the SASS counts): the pair ``--grid`` compares per shape."""
    variants = sweep_variants(heads, head_dim, dtype)
    rule = variants["rule"]
    four = [
        label
        for label, c in variants.items()
        if (c.tile_e, c.head_group, c.num_warps, c.prefetch, c.aggregate)
        == (rule.tile_e, rule.head_group, 4, True, "scan")
    ]
    return {"rule": rule, **{label: variants[label] for label in four}}


def plot_grid(doc: dict[str, Any], path: Path) -> Path:
    """Per dtype: warp instructions per K/V byte of the rule and of four warps, per head shape,
    against an H200's issue-to-bandwidth ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dtypes = list(dict.fromkeys(r["dtype"] for r in doc["rows"]))
    fig, axes = plt.subplots(len(dtypes), 1, figsize=(12, 3.2 * len(dtypes)), squeeze=False)
    for ax, dtype in zip(axes[:, 0], dtypes, strict=True):
        rows = [r for r in doc["rows"] if r["dtype"] == dtype]
        shapes = list(dict.fromkeys(r["hd"] for r in rows))
        for i, (name, color) in enumerate((("rule", "tab:blue"), ("four warps, prefetch", "tab:gray"))):
            picked = {r["hd"]: r for r in rows if (r["variant"] == "rule") == (name == "rule")}
            xs = [j + (i - 0.5) * 0.38 for j, hd in enumerate(shapes) if hd in picked]
            ys = [picked[hd]["warp_instructions_per_kv_byte"] for hd in shapes if hd in picked]
            ax.bar(xs, ys, width=0.38, color=color, label=name)
            for x, hd in zip(xs, [hd for hd in shapes if hd in picked], strict=True):
                r = picked[hd]
                ax.text(
                    x,
                    r["warp_instructions_per_kv_byte"],
                    f"{r['registers']}r\n{r['programs_per_sm']}p",
                    ha="center",
                    va="bottom",
                    fontsize=6,
                )
        ax.axhline(
            H200_ISSUE_PER_BYTE, color="black", linestyle="--", linewidth=1, label="H200: issue = copy bandwidth"
        )
        ax.set_xticks(range(len(shapes)), shapes)
        ax.set_ylabel("warp instructions per K/V byte")
        ax.set_title(f"{dtype} (labels: registers, programs per SM)", fontsize=9)
        ax.margins(y=0.2)
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("heads x head_dim")
    fig.suptitle(
        f"Kernel v2 partials tile loop, SASS, Triton {doc['triton']} (commit {str(doc.get('commit', ''))[:10]})"
    )
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    """Write a figure by temp file and rename, so that a run cut short leaves no half-written PNG."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def plot(doc: dict[str, Any], path: Path) -> Path:
    """Per family: K/V bytes in flight per SM for each variant (labelled with registers and programs),
    and warp instructions per K/V byte against an H200's issue-to-bandwidth ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(dict.fromkeys((r["dtype"], r["hd"]) for r in doc["rows"]))
    fig, axes = plt.subplots(
        len(families), 2, figsize=(15, 0.45 * len(doc["rows"]) + 2.5), squeeze=False, width_ratios=(3, 2)
    )
    for (ax, ax_issue), (dtype, hd) in zip(axes, families, strict=True):
        rows = [r for r in doc["rows"] if (r["dtype"], r["hd"]) == (dtype, hd)]
        ys = list(range(len(rows)))
        ax.barh(ys, [r["kv_bytes_in_flight_per_sm"] / 1024 for r in rows], color="tab:blue")
        for y, r in zip(ys, rows, strict=True):
            note = f" {r['registers']} regs, {r['programs_per_sm']} programs/SM ({r['limited_by']})"
            ax.text(r["kv_bytes_in_flight_per_sm"] / 1024, y, note, va="center", fontsize=7)
        ax.set_yticks(ys, [r["name"] for r in rows], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("K/V bytes in flight per SM (KiB)")
        ax.set_title(f"{dtype}, H x D = {hd}, {rows[0]['target']}")
        ax.margins(x=0.35)
        ax_issue.barh(ys, [r["warp_instructions_per_kv_byte"] for r in rows], color="tab:orange")
        ax_issue.axvline(H200_ISSUE_PER_BYTE, color="black", linestyle="--", linewidth=1)
        ax_issue.text(H200_ISSUE_PER_BYTE, -0.8, " H200: issue = copy bandwidth", fontsize=7)
        for y, r in zip(ys, rows, strict=True):
            ax_issue.text(
                r["warp_instructions_per_kv_byte"],
                y,
                f" {r['warp_instructions_per_edge']:.0f}/edge",
                va="center",
                fontsize=7,
            )
        ax_issue.set_yticks(ys, [])
        ax_issue.invert_yaxis()
        ax_issue.set_xlabel("tile-loop warp instructions per K/V byte (SASS)")
        ax_issue.margins(x=0.25)
    fig.suptitle(
        f"Kernel v2 partials, ptxas -v and SASS, Triton {doc['triton']} (commit {str(doc.get('commit', ''))[:10]})"
    )
    fig.tight_layout(rect=(0.01, 0, 1, 0.985))  # room for the suptitle and the longest labels
    return _save(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cc", type=int, default=90, choices=sorted(SM_LIMITS), help="compute capability x10")
    parser.add_argument(
        "--families",
        type=parse_families,
        default=[(d, h, hd) for d, h, hd in SWEEP_FAMILIES],
        help="DTYPE:HEADSxHEAD_DIM list (default: the sweep's)",
    )
    parser.add_argument(
        "--grid",
        action="store_true",
        help="the rule and its four-warp prefetching variant for every shape in GRID_SHAPES, fp32/fp16/bf16",
    )
    parser.add_argument(
        "--out", type=Path, help="JSON path (default: results/kernel/static[-grid]-triton<version>.json)"
    )
    args = parser.parse_args(argv)
    import triton
    from rich.progress import Progress

    out = args.out or OUT_DIR / f"static{'-grid' if args.grid else ''}-triton{triton.__version__}.json"
    families = [(d, h, hd) for d in SPEC_DTYPE for h, hd in GRID_SHAPES] if args.grid else args.families
    variants = grid_variants if args.grid else sweep_variants
    doc: dict[str, Any] = {**provenance(sys.argv if argv is None else ["bench/kernel_static.py", *argv])}
    doc["triton"] = triton.__version__
    doc["rows"] = []
    jobs = [
        (SPEC_DTYPE[d], h, hd, label, cfg)
        for d, h, hd in families
        for label, cfg in variants(h, hd, SPEC_DTYPE[d]).items()
    ]
    with Progress() as bar:
        task = bar.add_task("compiling variants", total=len(jobs))
        for dtype, heads, head_dim, label, cfg in jobs:
            doc["rows"].append(analyse(dtype, heads, head_dim, label, cfg, args.cc))
            bar.advance(task)
    write_json(out, doc, indent=1)
    png = (plot_grid if args.grid else plot)(doc, out.with_suffix(".png"))
    for r in doc["rows"]:
        print(
            f"{r['dtype']:8s} {r['hd']:5s} {r['name']:48s} {r['registers']:3d} regs  spills {r['spill_bytes']:4d} B"
            f"  {r['programs_per_sm']:2d} programs/SM ({r['limited_by']})"
            f"  {r['kv_bytes_in_flight_per_sm'] / 1024:5.1f} KiB K/V in flight per SM"
            f"  {r['warp_instructions_per_edge']:6.0f} warp instructions per edge"
            f" ({r['warp_instructions_per_kv_byte']:.2f} per K/V byte)"
        )
    print(f"wrote {out} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
