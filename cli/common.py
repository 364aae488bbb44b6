"""What every command shares: user errors as one line + exit code 2, option parsing, tables."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from gtcompress.errors import GTCompressError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn a :class:`GTCompressError` (a user mistake) into ``error: …`` on stderr and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GTCompressError as e:
            err_console.print("[bold red]error:[/]", end=" ")
            err_console.print(str(e), markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def parse_pe(text: str) -> dict[str, int]:
    """``"lap:8,rwse:20"`` → ``{"lap": 8, "rwse": 20}``; ``"none"`` → ``{}``."""
    if text.strip().lower() in ("", "none"):
        return {}
    out: dict[str, int] = {}
    for part in text.split(","):
        kind, _, k = part.partition(":")
        kind = kind.strip().lower()
        if kind not in ("lap", "rwse") or not k.strip().isdigit() or int(k) <= 0:
            raise GTCompressError(f"--pe: expected entries like 'lap:8' or 'rwse:20' (comma-separated), got {part!r}")
        out[kind] = int(k)
    return out


def table(title: str, rows: list[dict[str, Any]]) -> Table:
    t = Table(title=title, title_justify="left")
    if not rows:
        return t
    for col in rows[0]:
        t.add_column(str(col), justify="right" if isinstance(rows[0][col], (int, float)) else "left")
    for r in rows:
        t.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in r.values()))
    return t
