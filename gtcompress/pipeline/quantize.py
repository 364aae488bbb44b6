"""An int8 export that is written only if it holds up on the data: :func:`quantize_measured`.

:func:`exporters.quantize.quantize_int8` makes the file; whether it is as accurate as the float32 export is a
measurement on the checkpoint's val split, both files evaluated alike under ONNX Runtime as a deployment
runs them (:func:`gtcompress.pipeline.measure.evaluate_onnx`), the drop bounded in the units the pipeline's
``max_metric_drop`` uses (:func:`gtcompress.pipeline.report.drop_between`). A float32 parity tolerance
would refuse every int8 model: its error is the scheme's, and only the metric says whether it matters.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass
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
) -> QuantizedExport:
    """Quantize the export ``float_path`` of ``model`` (:func:`quantize_int8`) and write it to ``dst`` only if
    it holds up: it runs the export's verification graphs (edge cases, random batches) without raising and
    with finite outputs of the right shape, and its metric on ``dataset[split]`` is within ``max_drop`` of
    the float32 file's (points for accuracy and ROC-AUC, percent of the float32 MAE for MAE)."""
    from exporters.quantize import check_quantized, quantize_int8
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
    with tempfile.TemporaryDirectory(prefix="gtc-int8-") as work:
        tmp = quantize_int8(float_path, Path(work) / "int8.onnx")
        err, cases = check_quantized(tmp, model, verify_batches, dst)
        pcfg = {"threads": 0, "batch_graphs": batch_graphs}
        ref = evaluate_onnx(float_path, dataset, pcfg, None, split)[split]
        got = evaluate_onnx(tmp, dataset, pcfg, None, split)[split]
        metric = dataset.info.metric
        drop = drop_between(metric, ref, got)
        if not drop <= max_drop:  # NaN too: an undefined metric is no evidence of accuracy kept
            raise QuantizationDropError(
                f"{dst}: int8 quantization takes the {split} {metric} from {ref:.4g} to {got:.4g} on "
                f"{len(dataset[split]):,} graphs, a drop of {drop_words(metric, drop)}, more than the "
                f"{drop_words(metric, max_drop)} allowed; not written"
            )
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
    )
