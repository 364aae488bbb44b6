"""Bench results as strict JSON: every ``bench/*.py`` writes its result with :func:`write_json`.

Python's ``json`` writes a float that is not finite as the bare tokens ``NaN``, ``Infinity`` and
``-Infinity``, which are not JSON: ``jq``, JavaScript's ``JSON.parse`` and other strict parsers refuse
the whole file. A result can hold one: a ratio over a time of 0, the ``inf`` milliseconds of a sweep
variant that failed, a p-value over one seed. Such a number is written as ``null``, and the object
that holds it gets a ``"non_finite"`` field naming the key (``"ms"``, or ``"values[2]"`` for a list
item) and what it was (``"inf"``, ``"-inf"``, ``"nan"``): a reader sees that no number was measured
there and why, not a missing value. :func:`read_json` puts the numbers back, for the benches that
read an earlier result (a merge, the rows a run keeps).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

#: The field of an object that says which of its keys held a number that is not finite.
NON_FINITE = "non_finite"

_ITEM = re.compile(r"\[(\d+)\]")
#: A ``non_finite`` entry: the key, then the list indices down to the item (``values[2][0]``).
_PATH = re.compile(r"(.*?)((?:\[\d+\])*)", re.S)


def _name(x: float) -> str:
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as Python numbers and lists (``tolist``), paths as text."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


def _strict(value: Any, where: str, reasons: dict[str, str]) -> Any:
    value = _plain(value)
    if isinstance(value, float) and not math.isfinite(value):
        reasons[where] = _name(value)
        return None
    if isinstance(value, (list, tuple)):
        return [_strict(v, f"{where}[{i}]", reasons) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return strict(value)
    return value


def strict(doc: Any) -> Any:
    """A copy of ``doc`` that ``json.dumps(..., allow_nan=False)`` takes: each non-finite number is
    ``None``, recorded in the ``"non_finite"`` field of the object holding it (merged with one already
    there). A non-finite number outside any object has nowhere to say so: ``ValueError``."""
    if isinstance(doc, dict):
        given = doc.get(NON_FINITE)
        reasons: dict[str, str] = dict(given) if isinstance(given, dict) else {}
        out = {k: _strict(v, str(k), reasons) for k, v in doc.items() if not (k == NON_FINITE and isinstance(v, dict))}
        if reasons:
            out[NON_FINITE] = reasons
        return out
    loose: dict[str, str] = {}
    out = _strict(doc, "", loose)
    if loose:
        raise ValueError(f"a non-finite number outside any object ({', '.join(loose.values())}): not JSON")
    return out


def dumps(doc: Any, indent: int | None = 2) -> str:
    """``doc`` as strict JSON text (see the module docstring)."""
    return json.dumps(strict(doc), indent=indent, allow_nan=False)


def write_json(path: str | os.PathLike[str], doc: Any, indent: int | None = 2) -> Path:
    """Write ``doc`` as strict JSON, atomically (temp + rename)."""
    from gtcompress.io import write_atomic

    text = dumps(doc, indent) + "\n"  # before the temp exists: a document that cannot be written leaves none
    return write_atomic(path, lambda p: p.write_text(text))


def restore(doc: Any) -> Any:
    """The numbers :func:`strict` replaced, back in place of their ``null`` (the inverse of :func:`strict`)."""
    if isinstance(doc, list):
        return [restore(v) for v in doc]
    if not isinstance(doc, dict):
        return doc
    reasons = doc.get(NON_FINITE)
    out = {k: restore(v) for k, v in doc.items() if not (k == NON_FINITE and isinstance(reasons, dict))}
    for where, name in (reasons if isinstance(reasons, dict) else {}).items():
        if name not in ("inf", "-inf", "nan"):
            continue
        for key, items in _splits(where):  # a key may itself end in "[n]": the longest key held wins
            if key not in out:
                continue
            holder: Any = out
            last: Any = key
            try:
                for i in items:
                    holder, last = holder[last], i
                if holder[last] is None:
                    holder[last] = float(name)
            except (KeyError, IndexError, TypeError):  # edited by hand since: leave what is there
                pass
            break
    return out


def _splits(where: str) -> list[tuple[str, list[int]]]:
    """Every reading of a ``non_finite`` entry as (key, list indices), the longest key first: ``a[1][0]``
    is key ``a[1][0]``, ``a[1]`` then item 0, or ``a`` then items 1, 0."""
    key, items = _PATH.fullmatch(where).groups()  # type: ignore[union-attr]  (matches every string)
    indices = [int(i) for i in _ITEM.findall(items)]
    cuts = [len(key)] + [len(key) + m.end() for m in _ITEM.finditer(items)]
    return [(where[:cut], indices[k:]) for k, cut in reversed(list(enumerate(cuts)))]


def read_json(path: str | os.PathLike[str]) -> Any:
    """A result file as :func:`write_json` wrote it, non-finite numbers back in place (``OSError`` and
    ``json.JSONDecodeError`` as ``json.loads`` raises them)."""
    return restore(json.loads(Path(path).read_text()))
