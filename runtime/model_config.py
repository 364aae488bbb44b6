"""The sizes the memory counts read from an exported model's config (``model_config`` metadata): its
largest head count and hidden width, refused at load where a hand-edited entry is unusable, since a
wrong size would let requests past the memory limits (:mod:`runtime.request_cost`,
:mod:`runtime.edge_cost`). A model file without a config counts 8 heads and 64 channels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runtime.errors import SessionError
from runtime.spec import metadata_json

if TYPE_CHECKING:
    from runtime.request_cost import CostedModel


def config_heads(session: CostedModel) -> tuple[dict[str, Any], int]:
    """The exported model config (empty without one) and its largest head count (8 without one)."""
    cfg = metadata_json(session.metadata, "model_config", str(session.path)) or {}
    try:  # a hand-edited entry: refused at load, where a wrong count would let requests past the memory limit
        layers = cfg.get("layers") or []
        heads = max((int(layer.get("heads", 0)) for layer in layers), default=int(cfg.get("heads", 8)))
    except (AttributeError, TypeError, ValueError) as e:
        raise SessionError(f"{session.path}: metadata 'model_config' has no usable head counts ({e})") from None
    return cfg, heads


def config_hidden(session: CostedModel, cfg: dict[str, Any]) -> int:
    """The hidden width of ``cfg`` (:func:`config_heads`' config), 64 without one."""
    try:
        return int(cfg.get("hidden", 64))
    except (TypeError, ValueError) as e:
        raise SessionError(f"{session.path}: metadata 'model_config' has no usable hidden width ({e})") from None
