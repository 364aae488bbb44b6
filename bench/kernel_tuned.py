"""Carry the sweep's measured winners from a ``bench/kernel.py`` result into ``trt_plugins/tuned.py``.

``python bench/kernel_tuned.py bench/results/kernel/kernel.json`` rewrites the table behind
``trt_plugins.spec.TUNED`` so that the library, the AOT manifest and the TensorRT plugin run what
the GPU run measured fastest, with a comment per entry saying which run measured it (commit, GPU,
date, both times). Copying
configs by hand from a JSON of hundreds of rows is how a wrong tile size would slip in; this step
refuses what was not measured on a GPU (a CPU dry run), validates every config with
``spec.KernelConfig`` before writing, keeps entries of other head shapes from earlier runs, and
writes the file by temp file + rename.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from bench._json import read_json  # noqa: E402  (imports nothing of torch)
from trt_plugins import spec  # noqa: E402  (imports nothing of torch)

TABLE_PATH = ROOT / "trt_plugins" / "tuned.py"
TABLE = "MEASURED"
TABLE_TYPE = "dict[tuple[int, int, str], dict[str, int | bool | str]]"


class TunedError(ValueError):
    """The result cannot be carried into ``spec.py``; the message says which file and what is wrong."""


def tuned_entries(doc: dict[str, Any], source: str) -> dict[tuple[int, int, str], tuple[spec.KernelConfig, str]]:
    """``{(heads, head_dim, dtype): (config, comment)}`` from a result's ``tuned`` section."""
    if doc.get("cpu_dry_run"):
        raise TunedError(f"{source} is a CPU dry run: its times are interpreter times, not a GPU's")
    tuned = doc.get("tuned")
    if not isinstance(tuned, dict) or not tuned:
        raise TunedError(f"{source} has no 'tuned' section (was it run with --no-sweep, or cut before the sweep?)")
    fields = {f.name for f in dataclasses.fields(spec.KernelConfig)}
    machine = doc.get("machine", {})
    where = f"{str(doc.get('commit', '?'))[:10]}, {machine.get('gpu', 'GPU?')}, {doc.get('date', '?')}"
    out: dict[tuple[int, int, str], tuple[spec.KernelConfig, str]] = {}
    for key, entry in tuned.items():
        try:
            shape, dtype = key.split(" ")
            heads, head_dim = (int(x) for x in shape.split("x"))
            raw = {k: v for k, v in entry["config"].items() if k in fields}
            config = spec.KernelConfig(**raw)
            ms, rule_ms = float(entry["summed_ms"]), float(entry["rule_ms"])
        except spec.PluginSpecError as e:
            raise TunedError(f"{source}: tuned entry {key!r}: {e}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise TunedError(f"{source}: tuned entry {key!r} is not a kernel config: {e}") from None
        if dtype not in spec.FLOAT_DTYPES:
            raise TunedError(f"{source}: tuned entry {key!r} has dtype {dtype!r}, not one of {spec.FLOAT_DTYPES}")
        try:
            spec.check_tuned(heads, head_dim, dtype, config)
        except spec.PluginSpecError as e:
            raise TunedError(f"{source}: tuned entry {key!r}: {e}") from None
        comment = f"{entry.get('variant', '?')}: {ms:.4g} ms vs rule {rule_ms:.4g} ms\n    # ({source}: {where})"
        out[(heads, head_dim, dtype)] = (config, comment)
    return out


def _literal(value: int | bool | str) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def fields_source(config: spec.KernelConfig, indent: str) -> str:
    """Every field of ``config`` as a dict literal, one per line as ``ruff format`` writes it."""
    items = "".join(
        f'{indent}    "{f.name}": {_literal(getattr(config, f.name))},\n' for f in dataclasses.fields(config)
    )
    return "{\n" + items + indent + "}"


def _table(text: str, path: Path) -> tuple[int, int, dict[tuple[int, int, str], list[str]]]:
    """The table literal's first and last line (0-based) and, per key, its entry's lines with the
    comments just above it."""
    nodes = [n for n in ast.parse(text).body if isinstance(n, ast.AnnAssign) and getattr(n.target, "id", None) == TABLE]
    if len(nodes) != 1 or not isinstance(nodes[0].value, ast.Dict):
        raise TunedError(f"{path}: expected one dict literal assigned to {TABLE}, found {len(nodes)} assignments")
    node, table = nodes[0], nodes[0].value
    lines = text.splitlines()
    first, last = node.lineno - 1, (node.end_lineno or node.lineno) - 1
    kept: dict[tuple[int, int, str], list[str]] = {}
    begin = first + 1
    for k, v in zip(table.keys, table.values, strict=True):
        end = v.end_lineno or v.lineno  # 1-based last line of the entry = 0-based line after it
        kept[ast.literal_eval(k)] = lines[begin:end]  # type: ignore[arg-type]
        begin = end
    return first, last, kept


def render(new: dict[tuple[int, int, str], tuple[spec.KernelConfig, str]], kept: dict[Any, list[str]]) -> list[str]:
    """The table's lines: this run's entries, and the kept ones of other shapes, sorted by key."""
    out = [f"{TABLE}: {TABLE_TYPE} = {{"]
    for key in sorted(set(kept) | set(new)):
        if key in new:
            config, comment = new[key]
            heads, head_dim, dtype = key
            out += (
                f'    # {comment}\n    ({heads}, {head_dim}, "{dtype}"): {fields_source(config, "    ")},'.splitlines()
            )
        else:
            out += kept[key]
    return [*out, "}"]


def apply(result: Path, table_path: Path = TABLE_PATH) -> dict[tuple[int, int, str], spec.KernelConfig]:
    """Rewrite ``table_path``'s table with ``result``'s winners; returns what was written from it."""
    try:
        doc = read_json(result)
    except (OSError, json.JSONDecodeError) as e:
        raise TunedError(f"{result}: cannot read a bench/kernel.py result: {e}") from None
    new = tuned_entries(doc, result.name)
    text = table_path.read_text()
    first, last, kept = _table(text, table_path)
    lines = text.splitlines()
    body = [*lines[:first], *render(new, kept), *lines[last + 1 :]]
    tmp = table_path.with_name(f".{table_path.name}.tmp")
    try:
        tmp.write_text("\n".join(body) + "\n")
        os.replace(tmp, table_path)
    finally:
        tmp.unlink(missing_ok=True)
    return {k: c for k, (c, _) in new.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("result", type=Path, help="a bench/kernel.py JSON from a GPU run")
    p.add_argument("--table", type=Path, default=TABLE_PATH, help="the tuned.py to rewrite")
    args = p.parse_args(argv)
    try:
        written = apply(args.result, args.table)
    except TunedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for (heads, head_dim, dtype), config in sorted(written.items()):
        print(f"TUNED[{heads}x{head_dim} {dtype}] = {config}")
    print(f"wrote {args.table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
