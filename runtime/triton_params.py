"""The ``parameters`` of a python-variant model's ``config.pbtxt``: their names, defaults and how each is read.

A deployment edits these by hand, so a misspelt name or a value out of range fails the model's load
with a line naming the model, the parameter and what was expected, instead of being ignored. Which
parameters there are, and what each does, is in :mod:`runtime.triton_python`'s docstring.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runtime.errors import SessionError
from runtime.packing import BatchConfig
from runtime.served import ServerLimits

MODEL_FILES = ("model.onnx", "model.plan")
_BATCH = BatchConfig()
_LIMITS = ServerLimits()
PARAMETER_DEFAULTS: dict[str, int] = {
    "gtcompress_threads": 1,
    "gtcompress_max_nodes": _LIMITS.max_nodes,
    "gtcompress_max_edges": _LIMITS.max_edges,
    "gtcompress_max_graphs": _LIMITS.max_graphs,
    "gtcompress_batch_nodes": _BATCH.max_nodes,
    "gtcompress_batch_edges": _BATCH.max_edges,
    "gtcompress_batch_graphs": _BATCH.max_graphs,
}
#: Parameters that take any finite number of at least 1 (``1.5e11``, ``2048.0``), not only an integer,
#: as gtc serve's --max-attention-mib and --max-pe-work do.
NUMBER_PARAMETER_DEFAULTS: dict[str, float] = {
    "gtcompress_max_pe_work": _LIMITS.max_pe_work,
    "gtcompress_max_attention_mib": _LIMITS.max_attention_mib,
    "gtcompress_batch_attention_mib": _BATCH.max_attention_mib,
    "gtcompress_max_inflight_mib": _LIMITS.max_inflight_mib,
}
#: Every ``gtcompress_*`` parameter a repository may hold: the limits above, what the exporter writes.
KNOWN_PARAMETERS = frozenset(
    {
        *PARAMETER_DEFAULTS,
        *NUMBER_PARAMETER_DEFAULTS,
        "gtcompress_model_file",
        "gtcompress_answer_each_call",
        "gtcompress_input_spec",
        "gtcompress_preprocessing",
    }
)


def config_parameters(config: Mapping[str, Any]) -> dict[str, str]:
    """``parameters`` of a Triton model configuration (JSON form) as plain strings."""
    out: dict[str, str] = {}
    for key, value in (config.get("parameters") or {}).items():
        out[key] = value.get("string_value", "") if isinstance(value, Mapping) else str(value)
    return out


def check_parameter_names(params: Mapping[str, str], where: str) -> None:
    """Refuse a ``gtcompress_*`` parameter this model does not read. The README has users add keys to
    ``config.pbtxt`` to change a limit; a misspelt one (``gtcompress_max_node``) or one of ``gtc
    serve``'s that has no parameter here (``gtcompress_max_requests``) loaded without a word and left
    the limit at its default. Other keys (Triton's own, a user's) are not ours to judge."""
    unknown = sorted(k for k in params if k.startswith("gtcompress_") and k not in KNOWN_PARAMETERS)
    if unknown:
        raise SessionError(
            f"{where}: unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in config.pbtxt; "
            f"the gtcompress parameters are {', '.join(sorted(KNOWN_PARAMETERS))}"
        )


def int_parameter(params: Mapping[str, str], key: str, where: str) -> int:
    return int(_parameter(params, key, where, number=False))


def number_parameter(params: Mapping[str, str], key: str, where: str) -> float:
    """A parameter that is a quantity rather than a count (``max_pe_work``'s steps, 1.5e11 by default,
    may be written ``1.5e11``; MiB may be ``2048.0`` or ``0.5e4``)."""
    return float(_parameter(params, key, where, number=True))


def _parameter(params: Mapping[str, str], key: str, where: str, *, number: bool) -> float:
    """``key`` from the config's parameters (its default when absent or empty), refused at load when
    it is not an integer (``number``: a finite number) of at least 1 (threads: 0)."""
    raw = params.get(key)
    if raw is None or raw == "":
        return (NUMBER_PARAMETER_DEFAULTS if number else PARAMETER_DEFAULTS)[key]
    try:
        value = float(raw) if number else int(raw)
    except ValueError:
        raise SessionError(
            f"{where}: parameter {key} is {raw!r}; expected {'a number' if number else 'an integer'}"
        ) from None
    low = 0 if key == "gtcompress_threads" else 1
    # isfinite for numbers only: on an integer past float's range (a count of 400 digits) it raised
    # OverflowError, a traceback at load, where an integer is any size and was taken as given
    if (number and not math.isfinite(value)) or value < low:
        shown, finite = (raw, ", finite") if number else (value, "")
        raise SessionError(f"{where}: parameter {key} is {shown}; expected at least {low}{finite}")
    return value


#: What ``gtcompress_answer_each_call`` may say, in any case: anything else is refused, since a loose
#: reading (``bool("off")`` is True; "not 0" takes ``no`` for on) would leave a user's escape hatch shut.
_SWITCH = {"1": True, "true": True, "0": False, "false": False}


def answer_each_call(params: Mapping[str, str], where: str) -> bool:
    """``gtcompress_answer_each_call``: whether an ``execute`` of several merged calls answers each
    request through its response sender as its call ends (the default), or returns every answer at the
    end as Triton's Python backend did before 23.10 (``0``/``false``), the escape hatch where a Triton
    deployment misbehaves with response senders. Anything else is refused at load."""
    raw = params.get("gtcompress_answer_each_call")
    if raw is None or raw == "":
        return True
    value = _SWITCH.get(raw.strip().lower())
    if value is None:
        raise SessionError(
            f"{where}: parameter gtcompress_answer_each_call is {raw!r}; expected 1 or true (answer each request as "
            "its merged call ends), 0 or false (all at the end of execute)"
        )
    return value


def model_file(version_dir: Path, params: Mapping[str, str]) -> Path:
    """The ONNX file or TensorRT plan this version runs (``gtcompress_model_file``, else the one present)."""
    named = params.get("gtcompress_model_file")
    candidates = [named] if named else list(MODEL_FILES)
    for name in candidates:
        if (version_dir / name).is_file():
            return version_dir / name
    want = named or " or ".join(MODEL_FILES)
    raise SessionError(f"{version_dir}: holds no {want} (the model this Python-backend model runs)")
