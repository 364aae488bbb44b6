"""An int8 export that is written only if it holds up on the data: :func:`quantize_measured`.

:func:`exporters.quantize.quantize_int8` makes the file; whether it is as accurate as the float32 export is a
measurement on the checkpoint's val split, both files evaluated alike under ONNX Runtime as a deployment
runs them (:func:`gtcompress.pipeline.measure.evaluate_onnx`), the drop bounded in the units the pipeline's
``max_metric_drop`` uses (:func:`gtcompress.pipeline.report.drop_between`). A float32 parity tolerance
would refuse every int8 model: its error is the scheme's, and only the metric says whether it matters.

A model whose int8 file loses more than allowed is often lost by a few of its blocks (a layer's
attention or FFN, an encoder: :func:`exporters.quantize.product_blocks`), where an activation with a wide
range leaves the others few int8 steps. With ``mixed`` the fewest blocks that bring the drop within the
limit are kept float32, found by measurement: each block kept float32 alone, then the most helpful
ones together, in that order, until the drop is within it (at most ``2k - 1`` evaluations for ``k``
blocks). Greedy, not exhaustive (``2^k`` files); what it kept is recorded in the file and reported.

``gtc export`` refuses a file past the limit; the pipeline (``keep_closest``) writes the closest one it
evaluated, as it reports every row and holds the serving pick to its own bound on the test split.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gtcompress.errors import ConfigError, GTCompressError

if TYPE_CHECKING:
    from gtcompress.data.base import GraphDataset
    from gtcompress.models.model import GraphModel


class QuantizationDropError(GTCompressError):
    """The int8 model's metric fell further below the float32 model's than allowed; nothing was written."""


@dataclass
class QuantizedExport:
    """What :func:`quantize_measured` measured of the int8 file it wrote at ``path``."""

    path: Path
    split: str
    graphs: int
    metric: str
    #: the split's metric of each file, as reported (percent for accuracy and ROC-AUC)
    float32: float
    int8: float
    #: how far int8 falls short of float32: points, or percent of the float32 MAE
    drop: float
    float32_mb: float
    int8_mb: float
    #: the largest |int8 - PyTorch| on the export's verification graphs (edge cases and random batches)
    max_abs_err: float
    cases: int
    #: the blocks kept float32 (``mixed``), in the file's order; empty when every block is int8
    float32_blocks: list[str] = field(default_factory=list)
    #: the blocks of the model's weight products
    blocks: int = 0
    #: int8 files evaluated: 1, or more where ``mixed`` searched
    evaluations: int = 1
    #: whether ``drop`` is within the ``max_drop`` asked for (false only with ``keep_closest``)
    within: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()}


def drop_words(metric: str, drop: float) -> str:
    """``drop`` in its units, for a table or a refusal (``1.20 points``, ``3.1 % of the float32 MAE``)."""
    from gtcompress.train.metrics import higher_is_better

    return f"{drop:.2f} points" if higher_is_better(metric) else f"{drop:.1f} % of the float32 {metric.upper()}"


def quantize_measured(
    float_path: str | Path,
    dst: str | Path,
    model: GraphModel,
    dataset: GraphDataset,
    max_drop: float,
    *,
    split: str = "val",
    verify_batches: int = 3,
    batch_graphs: int = 32,
    mixed: bool = True,
    teddy: Mapping[str, Any] | None = None,
    keep_closest: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
) -> QuantizedExport:
    """Quantize the export ``float_path`` of ``model`` (:func:`quantize_int8`) and write it to ``dst`` only if
    it holds up: it runs the export's verification graphs (edge cases, random batches) without raising and
    with finite outputs of the right shape, and its metric on ``dataset[split]`` is within ``max_drop`` of
    the float32 file's (points for accuracy and ROC-AUC, percent of the float32 MAE for MAE). With
    ``mixed``, a model past the limit keeps its most costly blocks float32 where that brings it within
    (module docstring); ``progress(done, at_most, what)`` is told of each evaluation.

    ``teddy``: the TEDDY settings a deployment applies to ``dataset``'s graphs first (the pipeline's
    datasets are the original graphs; ``gtc export`` passes them sparsified already). ``keep_closest``:
    where no file is within ``max_drop``, write the one of the smallest drop instead of raising
    :class:`QuantizationDropError` (``within`` is false)."""
    from exporters.quantize import check_quantized, product_blocks, quantize_int8
    from gtcompress.io import atomic_path
    from gtcompress.pipeline.measure import evaluate_onnx
    from gtcompress.pipeline.report import drop_between

    if not (isinstance(max_drop, int | float) and math.isfinite(max_drop) and max_drop >= 0):
        raise ConfigError(f"max_drop must be a finite number >= 0, got {max_drop!r}")
    float_path, dst = Path(float_path), Path(dst)
    if not dataset.splits.get(split):
        raise ConfigError(
            f"dataset {dataset.info.name!r}: the {split} split is empty; the int8 model is measured on it"
        )
    blocks = list(product_blocks(float_path))
    at_most = 2 * len(blocks) - 1 if mixed and len(blocks) > 1 else 1
    metric = dataset.info.metric
    pcfg = {"threads": 0, "batch_graphs": batch_graphs}
    ref = evaluate_onnx(float_path, dataset, pcfg, teddy, split)[split]
    if math.isnan(ref) and not keep_closest:  # before any int8 file: no drop is measurable against it
        raise QuantizationDropError(
            f"{dst}: the {split} {metric} of the float32 export is undefined (NaN) on "
            f"{len(dataset[split]):,} graphs ({undefined_why(metric)}), so what int8 costs cannot be measured; "
            "not written"
        )
    with tempfile.TemporaryDirectory(prefix="gtc-int8-") as work:
        files: dict[frozenset[str], tuple[Path, float]] = {}

        def measure(keep: Sequence[str]) -> float:
            """The drop of the int8 file keeping ``keep`` float32 (each set quantized and evaluated once)."""
            key = frozenset(keep)
            if key not in files:
                path = quantize_int8(float_path, Path(work) / f"int8-{len(files)}.onnx", keep_float32=list(keep))
                files[key] = path, evaluate_onnx(path, dataset, pcfg, teddy, split)[split]
                if progress is not None:
                    progress(len(files), at_most, ", ".join(keep) + " float32" if keep else "every block in int8")
            return drop_between(metric, ref, files[key][1])

        keep: list[str] = []
        drop = full = measure(keep)
        # an undefined int8 metric too (no evidence of accuracy kept); against an undefined reference, no
        # file can come closer (keep_closest writes every block in int8)
        if not drop <= max_drop and at_most > 1 and not math.isnan(ref):
            keep, drop = _fewest_float32(blocks, measure, max_drop)
        if keep_closest and not drop <= max_drop:  # all-int8 may be the closest; a NaN drop never is
            closest = min(files, key=lambda k: (_nan_last(drop_between(metric, ref, files[k][1])), len(k)))
            keep = [b for b in blocks if b in closest]
            drop = drop_between(metric, ref, files[closest][1])
        tmp, got = files[frozenset(keep)]
        if not drop <= max_drop and not keep_closest:
            tried = (
                f"; keeping float32 up to {len(blocks) - 1} of its {len(blocks)} blocks, the most costly first, "
                f"drops {drop_words(metric, drop)} at best"
                if at_most > 1
                else ""
            )
            raise QuantizationDropError(
                f"{dst}: int8 quantization takes the {split} {metric} from {ref:.4g} to "
                f"{files[frozenset()][1]:.4g} on {len(dataset[split]):,} graphs, a drop of {drop_words(metric, full)}, "
                f"more than the {drop_words(metric, max_drop)} allowed{tried}; not written"
            )
        # the file written, not every one the search tried: the PyTorch side of each verification graph is the
        # same for all of them, and a file not written needs no check
        err, cases = check_quantized(tmp, model, verify_batches, dst)
        with atomic_path(dst) as out:
            shutil.copyfile(tmp, out)
    return QuantizedExport(
        dst,
        split,
        len(dataset[split]),
        metric,
        ref,
        got,
        drop,
        float_path.stat().st_size / 1e6,
        dst.stat().st_size / 1e6,
        err,
        cases,
        [b for b in blocks if b in keep],
        len(blocks),
        len(files),
        drop <= max_drop,
    )


def undefined_why(metric: str) -> str:
    """Why ``metric`` can be undefined on a split, for a message that says it is."""
    nan = "a NaN output leaves any metric undefined"
    if metric in ("rocauc", "ap"):
        return f"{'ROC-AUC' if metric == 'rocauc' else 'average precision'} needs both classes among the labels; {nan}"
    return nan


def _nan_last(drop: float) -> tuple[bool, float]:
    """A sort key putting an undefined (NaN) drop after every measured one."""
    return math.isnan(drop), drop


def _fewest_float32(
    blocks: Sequence[str], measure: Callable[[Sequence[str]], float], max_drop: float
) -> tuple[list[str], float]:
    """Blocks to keep float32 and the drop they leave: each block alone, then the most helpful ones
    together (ties in the file's order) until the drop is within ``max_drop``; never all of them (an int8
    file with no int8 product). Where none suffices, the set that came closest."""
    alone = {b: measure([b]) for b in blocks}
    order = sorted(blocks, key=lambda b: _nan_last(alone[b]))
    best: tuple[list[str], float] = ([], math.inf)
    for n in range(1, len(blocks)):
        keep = order[:n]
        drop = alone[keep[0]] if n == 1 else measure(keep)
        if drop <= max_drop:
            return keep, drop
        if drop < best[1]:
            best = (keep, drop)
    return best if best[0] else (order[:1], alone[order[0]])
