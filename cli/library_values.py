"""The library's defaults and constants as the CLI's options take them, read from the library's source.

Each default is written once, in the library's config class, and every command's option takes it from
there; the modules are not imported because they import torch, and then every ``gtc`` command
(``gtc serve`` and ``gtc --help`` included) would load it at start-up: 0.3 s becomes 3.3 s.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path
from typing import Any

__all__ = ["MAX_SEED", "library_constant", "library_defaults"]


@functools.cache
def library_defaults(module: str, cls: str) -> dict[str, Any]:
    """The field defaults of the library's config dataclass ``module.cls``, read from its source.

    The commands' options take their defaults from here, so each default is written once, in the
    library's config class. The class is not imported because its module imports torch, and then
    every ``gtc`` command (``gtc serve`` and ``gtc --help`` included) would load it at start-up:
    0.3 s becomes 3.3 s. Literal defaults only; a ``default_factory`` field is left out (no option
    takes one). ``tests/compress/test_cli_defaults.py`` checks the result against
    :func:`dataclasses.fields` of the imported class, and the options against it."""
    path, tree = _module_source(module)
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls), None)
    if node is None:
        raise ImportError(f"{path}: no class {cls}")
    out: dict[str, Any] = {}
    for stmt in node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            try:
                out[stmt.target.id] = ast.literal_eval(stmt.value)
            except ValueError:  # field(default_factory=...): not an option's default
                continue
    return out


@functools.cache
def library_constant(module: str, name: str) -> Any:
    """The literal value of the library's module-level constant ``module.name`` (an option's choices),
    read from its source for the reason :func:`library_defaults` gives."""
    path, tree = _module_source(module)
    for stmt in tree.body:
        targets = (
            stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
        )
        if any(isinstance(t, ast.Name) and t.id == name for t in targets) and stmt.value is not None:
            return ast.literal_eval(stmt.value)
    raise ImportError(f"{path}: no constant {name}")


def _module_source(module: str) -> tuple[Path, ast.Module]:
    """The path and parsed source of the library's ``module``, located without importing it."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)  # the package's location; importing ``module`` would load torch
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"cannot locate package {top!r}")
    path = Path(next(iter(spec.submodule_search_locations)), *rest).with_suffix(".py")
    return path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


#: The largest seed the training loops take: without it, a seed past torch's range crashed with
#: "Overflow when unpacking long long" once the work had begun.
MAX_SEED: int = library_constant("gtcompress.train.loop", "MAX_SEED")
