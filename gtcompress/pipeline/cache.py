"""The stage cache: what makes a pipeline run resumable and a re-run cheap.

Each stage writes its artifacts into the run directory (atomically, :mod:`gtcompress.io`) and
records in ``manifest.json`` a key of everything it depends on — its settings and the keys of its
inputs — with its result. :meth:`StageCache.stage` skips a stage whose key is unchanged and whose
outputs all exist, so an interrupted run (Ctrl-C, kill) resumes where it stopped and a changed
setting re-runs only what it affects. Every key also holds :func:`code_fingerprint`: a run
directory made by other code (an upgrade, a changed default such as the axes ``auto`` picks) is
redone, not silently reused.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gtcompress.io import write_json

__all__ = ["FINGERPRINTED", "MANIFEST", "StageCache", "code_fingerprint", "stage_key"]

#: The packages whose source decides what a stage produces. ``cli`` is not among them: it only turns
#: options into a config, and the config is in every key already.
FINGERPRINTED = ("gtcompress", "exporters", "trt_plugins", "runtime")
#: The file in the run directory that records each finished stage.
MANIFEST = "manifest.json"


def stage_key(*parts: Any) -> str:
    """A short, stable hash of JSON-able ``parts`` (dict order does not matter)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@functools.cache
def code_fingerprint() -> str:
    """Hash of the source of every package the stages run (:data:`FINGERPRINTED`), this one included.

    The packages are located, not imported: the fingerprint is taken before any stage runs."""
    h = hashlib.sha256()
    for name in FINGERPRINTED:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(next(iter(spec.submodule_search_locations)))
        for f in sorted(root.rglob("*.py")):
            h.update(f.relative_to(root.parent).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


@dataclass
class StageCache:
    """Runs stages with manifest-based skipping under ``root``; ``log`` reports each stage's fate
    (``▶ name`` when it runs, ``✓ name (cached)`` when skipped; rich markup)."""

    root: Path
    log: Callable[[str], None] = print
    manifest: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / MANIFEST
        if path.exists():
            try:
                self.manifest = json.loads(path.read_text())
            except json.JSONDecodeError:
                self.manifest = {}

    def stage(self, name: str, key: str, outputs: list[Path], fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """``fn()``'s result, recorded under ``name``; or the recorded one when ``key`` matches and
        every path of ``outputs`` exists. The manifest is rewritten (atomically) after each stage."""
        entry = self.manifest.get(name)
        if entry and entry.get("key") == key and all(p.exists() for p in outputs):
            self.log(f"[dim]✓ {name} (cached)[/]")
            return entry["result"]
        t = time.perf_counter()
        self.log(f"▶ {name}")
        if self.manifest.pop(name, None) is not None:  # a run killed inside fn() leaves no old key over new outputs
            write_json(self.root / MANIFEST, self.manifest)
        result = fn()
        self.manifest[name] = {
            "key": key,
            "outputs": [str(p) for p in outputs],
            "result": result,
            "seconds": time.perf_counter() - t,
        }
        write_json(self.root / MANIFEST, self.manifest)
        self.log(f"[green]✓ {name}[/] ({time.perf_counter() - t:.1f} s)")
        return result
