"""The pipeline's report: deltas, tolerances, the fastest model and the Pareto plot."""

import math
from pathlib import Path

import pytest


def test_the_report_does_not_call_a_slower_model_the_fastest() -> None:
    """report.md named the largest speed-up over its own dense parent "fastest compressed model": a
    50 ms GPS model beside the 40 ms GT one the repository serves."""

    from gtcompress.pipeline.report import build_report, choose_for_serving, markdown

    def row(model: str, arch: str, method: str, p50: float) -> dict:
        test = 60.0 - 0.1 * (method != "dense")
        return {"model": model, "arch": arch, "method": method, "budget": None, "lowering": "dense",
                "file": f"{model}.onnx", "max_abs_err": 1e-5, "metric": "accuracy", "test": test, "file_mb": 1.0,
                "latency_ms_p50": p50, "latency_ms_mean": p50, "latency_ms_p90": p50, "prep_ms_p50": 1.0,
                "timed_batches": 8, "graphs_per_batch": 32, "threads": 1}  # fmt: skip

    rows = [row("gt-dense", "gt", "dense", 60.0), row("gt-gtsp-0.5", "gt", "gtsp", 40.0),
            row("gps-dense", "gps", "dense", 100.0), row("gps-gtsp-0.5", "gps", "gtsp", 50.0)]  # fmt: skip
    rep = build_report(rows, {"data": {"name": "CLUSTER", "size": "small"}}, "n/a", Path("/tmp/run"))
    assert choose_for_serving(rep, 1.0)["model"] == "gt-gtsp-0.5"
    text = markdown(rep)
    assert "Fastest" not in text
    assert (
        "Largest speed-up of a compressed model within 1 point of its dense parent: `gps-gtsp-0.5`, 2.00x lower "
        "latency (50.0 ms p50) at -0.10 points." in text
    )


def _mae_report(dense: float, tests: dict[str, float], metric: str = "mae") -> dict:
    """A report of ``metric`` rows: ``gt-dense`` at ``dense`` (60 ms) and compressed GT models, each faster."""

    from gtcompress.pipeline.report import build_report

    def row(model: str, method: str, test: float, p50: float) -> dict:
        return {"model": model, "arch": "gt", "method": method, "budget": 0.5, "lowering": "dense",
                "file": f"{model}.onnx", "max_abs_err": 1e-5, "metric": metric, "test": test, "file_mb": 1.0,
                "latency_ms_p50": p50, "latency_ms_mean": p50, "latency_ms_p90": p50, "prep_ms_p50": 1.0,
                "timed_batches": 8, "graphs_per_batch": 32, "threads": 1}  # fmt: skip

    rows = [row("gt-dense", "dense", dense, 60.0)]
    rows += [row(m, "gtsp", t, 30.0 - i) for i, (m, t) in enumerate(tests.items())]
    return build_report(rows, {"data": {"name": "ogb:ogbg_molesol", "size": "small"}}, "n/a", Path("/tmp/run"))


def test_an_mae_tolerance_is_relative_to_the_dense_models_mae() -> None:
    """max_metric_drop 1.0 was compared with the raw rise in MAE: a model with 2.8 times its dense
    parent's MAE (0.5 -> 1.4) was served and reported "within 1 point of its dense parent"."""
    from gtcompress.pipeline.report import choose_for_serving, markdown

    rep = _mae_report(0.5, {"gt-gtsp-0.5": 1.4})
    worse = rep["rows"][1]
    assert worse["metric_drop"] == pytest.approx(0.9) and worse["metric_drop_pct"] == pytest.approx(180.0)
    assert choose_for_serving(rep, 1.0)["model"] == "gt-dense"
    assert choose_for_serving(rep, 200.0)["model"] == "gt-gtsp-0.5"
    assert "No compressed model stayed within 1 % of its dense parent's MAE." in markdown(rep)

    rep = _mae_report(2.0, {"gt-gtsp-0.5": 2.01, "gt-gtsp-0.3": 1.9})  # +0.5 %: within; lower MAE: a gain
    assert [r["metric_drop_pct"] for r in rep["rows"][1:]] == pytest.approx([0.5, -5.0])
    assert choose_for_serving(rep, 1.0)["model"] == "gt-gtsp-0.3"
    assert choose_for_serving(rep, 0.0)["model"] == "gt-gtsp-0.3"
    assert (
        "Largest speed-up of a compressed model within 1 % of its dense parent's MAE: `gt-gtsp-0.3`, 2.07x lower "
        "latency (29.0 ms p50) at MAE 1.90, 5.0 % below its dense parent's." in markdown(rep)
    )


def test_an_rmse_report_names_rmse_and_its_tolerance_is_relative_too() -> None:
    """OGB's regression sets are scored by RMSE: an error in the target's units, like MAE, and the
    report's lines named it "MAE"."""
    from gtcompress.pipeline.report import choose_for_serving, markdown

    rep = _mae_report(2.0, {"gt-gtsp-0.5": 2.01, "gt-gtsp-0.3": 2.5}, "rmse")
    assert [r["metric_drop_pct"] for r in rep["rows"][1:]] == pytest.approx([0.5, 25.0])
    assert choose_for_serving(rep, 1.0)["model"] == "gt-gtsp-0.5"
    text = markdown(rep)
    assert (
        "Largest speed-up of a compressed model within 1 % of its dense parent's RMSE: `gt-gtsp-0.5`, 2.00x lower "
        "latency (30.0 ms p50) at RMSE 2.01, 0.5 % above its dense parent's." in text
    )
    assert "MAE" not in text


@pytest.mark.parametrize(("metric", "better"), [("mae", "lower"), ("rmse", "lower"), ("accuracy", "higher")])
def test_the_pareto_plot_names_the_datasets_metric(metric: str, better: str, tmp_path, monkeypatch) -> None:
    """pareto.png was titled "Accuracy vs latency" over an MAE axis, where lower is better."""
    import matplotlib.pyplot as plt

    from gtcompress.pipeline.report import write_report

    figures: list = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (figures.append(fig), real_close(fig)))
    write_report(_mae_report(0.5, {"gt-gtsp-0.5": 0.6}, metric), tmp_path)
    assert (tmp_path / "pareto.png").stat().st_size > 1000
    (ax,) = figures[0].axes
    assert ax.get_title() == f"Test {metric} vs latency: what compression bought"
    assert ax.get_ylabel() == f"test {metric} ({better} is better, from the ONNX model)"


def test_an_undefined_test_metric_is_not_called_a_drop() -> None:
    """With a test split of one class every ROC-AUC is NaN: nothing can be served (NaN is within no
    tolerance), but report.md said "No compressed model stayed within 1 point of its dense parent"."""
    from gtcompress.pipeline.report import choose_for_serving, markdown

    rep = _mae_report(math.nan, {"gt-gtsp-0.5": math.nan}, "rocauc")
    assert choose_for_serving(rep, 1.0) is None
    text = markdown(rep)
    assert "No compressed model stayed" not in text
    assert (
        "The test rocauc is undefined (NaN) for `gt-dense`, `gt-gtsp-0.5`: ROC-AUC needs both classes among the "
        "test labels, and a NaN among a model's test outputs leaves it undefined too; a model without a defined "
        "metric, or whose dense parent has none, is never compared, picked or served." in text
    )


def test_an_undefined_accuracy_names_the_nan_outputs() -> None:
    """Accuracy is undefined only where a model's outputs hold a NaN (train.metrics.compute_metric)."""
    from gtcompress.pipeline.report import markdown

    text = markdown(_mae_report(50.0, {"gt-gtsp-0.5": math.nan}, "accuracy"))
    assert (
        "The test accuracy is undefined (NaN) for `gt-gtsp-0.5`: a NaN among a model's test outputs leaves it " in text
    )


def test_speed_ups_are_against_the_fastest_dense_export_and_no_loss_reads_minus_zero() -> None:
    """With the dense model exported on two lowerings, the last one taken was the baseline: a 48 ms model read
    2.50x against the 120 ms scatter export where the dense one took 68 ms (1.42x). And the dense rows' own
    Δ vs dense (-0.0) printed as -0.00, a loss where there is none."""
    from gtcompress.pipeline.report import build_report, markdown

    def row(model: str, method: str, lowering: str, p50: float, test: float) -> dict:
        return {"model": model, "arch": "gt", "method": method, "budget": None, "lowering": lowering,
                "file": f"{model}.onnx", "max_abs_err": 1e-5, "metric": "accuracy", "test": test, "file_mb": 1.0,
                "latency_ms_p50": p50, "latency_ms_mean": p50, "latency_ms_p90": p50, "prep_ms_p50": 1.0,
                "timed_batches": 8, "graphs_per_batch": 32, "threads": 1}  # fmt: skip

    rows = [
        row("gt-dense", "dense", "dense", 68.0, 60.0),
        row("gt-dense", "dense", "scatter", 120.0, 60.0),
        row("gt-gtsp-0.5", "gtsp", "dense", 48.0, 59.999),
    ]
    rep = build_report(rows, {"data": {"name": "CLUSTER", "size": "small"}}, "n/a", Path("/tmp/run"))
    assert rep["rows"][2]["speedup_vs_dense"] == pytest.approx(68.0 / 48.0)
    assert rep["rows"][1]["speedup_vs_dense"] == pytest.approx(68.0 / 120.0)
    text = markdown(rep)
    assert "| gt-dense | dense | 60.00 | – | +0.00 | 68.0 | 1.00x |" in text
    assert "| gt-gtsp-0.5 | dense | 60.00 | – | +0.00 | 48.0 | 1.42x |" in text  # -0.001 rounds to no loss
    assert "1.42x lower latency (48.0 ms p50) at +0.00 points." in text
    assert "-0.00" not in text


def test_the_closing_table_shows_the_reports_digits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``gtc pipeline``'s closing table printed every float to 4 decimals, the dense rows' Δ as -0.0000,
    and a speed-up without its x: it shows report.md's cells now, each on one line at 80 columns."""
    from typer.testing import CliRunner

    import gtcompress.pipeline
    from cli.main import app
    from gtcompress.pipeline.report import markdown

    rep = _mae_report(55.6523, {"gt-gtsp-0.5": 58.9803}, "class_avg_acc")
    monkeypatch.setattr(gtcompress.pipeline, "run_pipeline", lambda cfg, out, log: rep)
    res = CliRunner().invoke(app, ["pipeline", "--out", str(tmp_path / "run")])  # 80 columns: nothing folds
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("│")]
    assert [[c.strip() for c in line.split("│")[1:-1]] for line in lines] == [
        ["gt-dense", "dense", "55.65", "–", "+0.00", "60.0", "1.00x"],
        ["gt-gtsp-0.5", "dense", "58.98", "–", "+3.33", "30.0", "2.00x"],
    ]
    assert "| gt-gtsp-0.5 | dense | 58.98 | – | +3.33 | 30.0 | 2.00x | 1.0 | 1.0e-05 | 1.00 |" in markdown(rep)
    assert "(test: class_avg_acc)" in res.output


def test_the_closing_table_is_followed_by_a_profile_that_is_incomplete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A profile measurement that failed is logged as it fails, minutes before the run ends; the closing
    table, the last thing on the screen, is followed by a line saying the profile is incomplete."""
    from typer.testing import CliRunner

    import gtcompress.pipeline
    from cli.main import app

    rep = _mae_report(55.6523, {"gt-gtsp-0.5": 58.9803}, "class_avg_acc")
    failed = ["gt-gtsp-0.5 · 1T: 16×1 not measured: RuntimeError: out of memory"]
    rep["profile"] = {"dir": None, "models": ["gt-dense", "gt-gtsp-0.5"], "avg_degree": 4.0, "failed": failed}
    monkeypatch.setattr(gtcompress.pipeline, "run_pipeline", lambda cfg, out, log: rep)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["pipeline", "--out", str(out)])
    assert res.exit_code == 0, res.output
    last = "".join(res.output.split("┘")[-1].split())  # as printed, folded at 80 columns where the path is long
    said = f"profile incomplete: 1 measurement failed, named in {out}/report.md; the next run measures it again"
    assert last == "".join(said.split())
    rep["profile"].pop("failed")
    res = CliRunner().invoke(app, ["pipeline", "--out", str(out)])
    assert "profile incomplete" not in res.output


def test_the_closing_table_is_followed_by_what_the_int8_search_kept(tmp_path: Path, monkeypatch) -> None:
    """The int8 rows whose search kept blocks float32, or found no file within the bound, are named under
    the closing table as in report.md (a row within it in all-int8 is not)."""
    from typer.testing import CliRunner

    import gtcompress.pipeline
    from cli.main import app

    rep = _mae_report(
        55.6523, {"gt-gtsp-0.5-int8": 58.9, "gt-gtsp-0.3-int8": 58.0, "gt-gtsp-0.2-int8": 57.0}, "class_avg_acc"
    )
    search = {"max_drop": 1.0, "blocks": 3, "evaluations": 4, "val_float32": 50.0}
    for row, q in zip(
        rep["rows"][1:],
        [
            {"within": True, "float32_blocks": ["layers.0.ffn"], "val_drop": 0.4},
            {"within": False, "float32_blocks": [], "val_drop": 2.5},
            {"within": True, "float32_blocks": [], "val_drop": 0.1},
        ],
        strict=True,
    ):
        row["quantized"] = {**search, **q}
    monkeypatch.setattr(gtcompress.pipeline, "run_pipeline", lambda cfg, out, log: rep)
    res = CliRunner().invoke(app, ["pipeline", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    after = " ".join(res.output.split("┘")[-1].split())
    assert after == (
        "gt-gtsp-0.5-int8 keeps layers.0.ffn float32 (1 of its 3 blocks), the fewest that bring it within "
        "export.quantize_max_drop of its float32 file on the val split: 0.40 points below it (4 int8 files "
        "evaluated). gt-gtsp-0.3-int8: no int8 file came within export.quantize_max_drop (1.00 points) of its "
        "float32 file on the val split; the row is the closest, every block in int8, 2.50 points below it (4 "
        "int8 files evaluated)."
    )
