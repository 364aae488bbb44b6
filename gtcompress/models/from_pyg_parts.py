"""What :func:`~gtcompress.models.from_pyg.from_pyg` calls a part of a PyG model (a submodule and its
qualified name) and how a refusal names one: shared by the import and its checks
(:mod:`gtcompress.models.from_pyg_checks`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from gtcompress.errors import UnsupportedModelError

__all__ = ["NOT_SUBCLASS", "Part", "is_a", "own_type", "path_of", "refusal", "require", "sub", "under"]


@dataclass
class Part:
    """A resolved submodule and its qualified name (for error messages and the coverage check)."""

    module: nn.Module
    path: str  # dotted path in the root model, or "<role>" for a module passed from outside it
    in_root: bool


def refusal(part_path: str, module: object, expected: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"{part_path or '<model>'} ({type(module).__name__}): expected {expected}")


#: Appended to a refusal of a subclass of a supported class.
NOT_SUBCLASS = " itself, not a subclass (a subclass may add parameters or change forward, which the import cannot see)"


def own_type(m: object) -> type:
    """The class whose forward runs: a module's own class, seen through ``torch.nn.utils.parametrize``
    (which swaps in a generated subclass whose ``weight`` is still the effective weight)."""
    from torch.nn.utils import parametrize

    cls = type(m)
    if isinstance(m, nn.Module) and parametrize.is_parametrized(m):
        return cls.__bases__[0]
    return cls


def is_a(m: object, *classes: type) -> bool:
    """``m`` is an instance of one of ``classes`` exactly. ``isinstance`` would also accept a subclass,
    whose extra parameters (a LoRA Linear's ``lora_A``, a gate) or overridden forward the weight copy
    drops without a word: such a layer imported silently, its outputs off by 0.6-5.7."""
    return own_type(m) in classes


def require(m: object, path: str, classes: tuple[type, ...], expected: str) -> None:
    """Refuse ``m`` unless it is exactly one of ``classes``, saying so when it is a subclass."""
    if not is_a(m, *classes):
        raise refusal(path, m, expected + (NOT_SUBCLASS if isinstance(m, classes) else ""))


def sub(path: str, name: str) -> str:
    """Qualified name of child ``name`` of the module at ``path`` (``""`` = the root)."""
    return f"{path}.{name}" if path else name


def path_of(root: nn.Module, module: nn.Module) -> str | None:
    for name, m in root.named_modules():
        if m is module:
            return name
    return None


def under(path: str, prefixes: Sequence[str]) -> bool:
    """``path`` is one of ``prefixes`` or inside one of them (dotted paths)."""
    return any(path == q or path.startswith(q + ".") for q in prefixes)
