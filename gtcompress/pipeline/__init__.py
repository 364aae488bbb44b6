"""The pipeline as a library: trained GT → sparsified / pruned → exported → verified → profiled → served.

``gtc pipeline`` is this package behind a command line; from Python::

    from gtcompress.pipeline import PipelineConfig, run_pipeline

    cfg = PipelineConfig.default().with_overrides(["prune.budgets=[0.5]", "train.archs=[gt]"])
    report = run_pipeline(cfg, out="runs/p")  # resumes if runs/p holds an earlier run
    print(report["rows"][0]["model"], report["rows"][0]["test"], report["rows"][0]["latency_ms_p50"])

Modules, one concept each:

* :mod:`.config` — :class:`PipelineConfig`: sections, defaults (taken from the library's config
  classes, plus the pipeline's own faster :data:`~.config.RECIPE`), YAML/TOML and ``--set`` loading;
* :mod:`.cache` — the stage cache (``manifest.json``), stage keys and the code fingerprint that
  make a run resumable and a re-run cheap;
* :mod:`.context` — what the stages of a run share and the artifacts they hand each other;
* :mod:`.model_stages` — train, dense-ft control, TEDDY, GTSP and random pruning (checkpoints);
* :mod:`.deploy_stages` — ONNX export, TensorRT, profile, Triton repository;
* :mod:`.measure` — accuracy from the ONNX files and latency side by side, as a deployment runs them;
* :mod:`.quantize` — an int8 export written only if its metric stays within a drop of the float32 one's
  (``gtc export --quantize int8``);
* :mod:`.report` — ``report.json``, ``report.md``, ``pareto.png``;
* :mod:`.run` — :func:`run_pipeline`, the stages in order.

A run directory holds ``models/`` (checkpoints), ``onnx/``, ``profile/``, ``triton/``, the report
and ``manifest.json``.

**Import rule.** This package composes ``gtcompress`` with :mod:`exporters` and :mod:`runtime`,
which import ``gtcompress`` themselves, so it sits above them even though it lives here (where a
Python user looks for it, and installed with it). It imports ``exporters``, ``runtime`` and
``trt_plugins`` only inside functions, never at module level, and nothing in ``gtcompress`` outside
this package — nor anything in ``exporters`` or ``runtime`` — imports it: no import cycle forms, and
``import gtcompress`` never loads the exporters. It never imports ``cli``. Torch-side library
modules are imported inside the stages as well, so building a config stays cheap.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

#: Where a run goes when no directory is given (``gtc pipeline --out``, ``run_pipeline(out=...)``).
DEFAULT_OUT = Path("runs/pipeline")

_LAZY = {
    "PipelineConfig": "gtcompress.pipeline.config",
    "RECIPE": "gtcompress.pipeline.config",
    "load_config": "gtcompress.pipeline.config",
    "run_pipeline": "gtcompress.pipeline.run",
    "StageCache": "gtcompress.pipeline.cache",
    "code_fingerprint": "gtcompress.pipeline.cache",
    "stage_key": "gtcompress.pipeline.cache",
    "evaluate_onnx": "gtcompress.pipeline.measure",
    "time_side_by_side": "gtcompress.pipeline.measure",
    "choose_for_serving": "gtcompress.pipeline.report",
    "quantize_measured": "gtcompress.pipeline.quantize",
}

__all__ = sorted(["DEFAULT_OUT", *_LAZY])


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gtcompress.pipeline' has no attribute {name!r}")
