"""The compression benchmark: GTSP-vs-random verdicts by a paired t-test (not a count of standard
errors), and dense training by epochs, not wall time."""

import pytest
import torch
from scipy import stats

from bench.compression import _mask_share, _paired, _targets


def _rows(gtsp: list[float], random: list[float], budget: float = 0.5) -> list[dict]:
    return [
        {"method": m, "budget": budget, "seed": s, "test": t}
        for m, tests in (("gtsp", gtsp), ("random", random))
        for s, t in enumerate(tests)
    ]


def test_paired_p_value_is_the_paired_t_test() -> None:
    g, r = [80.0, 81.5, 79.0, 82.0], [82.0, 82.5, 81.5, 83.0]
    out = _paired(_rows(g, r))[0.5]
    assert out["n"] == 4
    assert out["mean"] == pytest.approx(-1.625)
    assert out["p"] == pytest.approx(stats.ttest_rel(g, r).pvalue)
    assert out["verdict"] == "behind"  # p ≈ 0.02


def test_two_standard_errors_with_three_seeds_is_level() -> None:
    # differences 1, 2, 3: mean 2, s.e. 0.577 (3.5 s.e.) but p ≈ 0.07 with 2 degrees of freedom
    out = _paired(_rows([81.0, 82.0, 83.0], [80.0, 80.0, 80.0]))[0.5]
    assert out["mean"] / out["se"] > 2
    assert 0.05 < out["p"] < 0.1
    assert out["verdict"] == "level"


def test_one_seed_has_no_verdict() -> None:
    out = _paired(_rows([85.0], [80.0]))[0.5]
    assert out["n"] == 1 and out["verdict"] == "level"


def test_equal_means_are_a_tie_not_a_win() -> None:
    # GT NCI1 at 0.60: 337/335/327 vs 332/328/339 of 411 test graphs right, stored as float32 accuracies;
    # the means are equal but their float sums are not
    def acc(k: int) -> float:
        return float(torch.tensor(k / 411, dtype=torch.float32)) * 100

    g, r = [acc(k) for k in (337, 335, 327)], [acc(k) for k in (332, 328, 339)]
    rows = [
        {**row, "arch": "gt", "dataset": "tu:NCI1", "val": 0.0, "drop": 0.0, "flops_ratio": 0.6, "within_budget": True}
        for row in _rows(g, r, budget=0.6)
    ]
    assert sum(g) / 3 != sum(r) / 3  # the trap: a raw comparison calls one of them ahead
    assert _targets(rows)["gt:tu:NCI1"]["beats_random_at_every_budget"] is False
    rows[0]["test"] = acc(338)  # one more graph right: a real win
    assert _targets(rows)["gt:tu:NCI1"]["beats_random_at_every_budget"] is True


def test_dense_training_is_a_fixed_epoch_count_without_a_wall_time_cap() -> None:
    from argparse import Namespace

    from bench.compression import _dense_config

    args = Namespace(dense_epochs=200, dense_minutes=None, minutes=2.0, quick=False)
    cfg = _dense_config(64, args)
    assert (cfg.epochs, cfg.time_budget_s, cfg.batch_size) == (200, 0.0, 64)
    assert _dense_config(64, Namespace(**{**vars(args), "dense_minutes": 10.0})).time_budget_s == 600.0
    assert _dense_config(64, Namespace(**{**vars(args), "quick": True})).time_budget_s == 120.0


def test_rows_from_another_dense_model_are_told_apart() -> None:
    from bench.compression import _same_dense

    now = {"test": 80.54, "val": 85.64, "weights_sha256": "a" * 64}
    assert _same_dense({**now}, now)
    assert not _same_dense({**now, "weights_sha256": "b" * 64}, now)
    # rows written before the hash was recorded: the same test score is not enough (GPS NCI1 retrained
    # to test 80.54 with validation 85.64 instead of 85.40)
    assert _same_dense({"test": 80.54, "val": 85.64}, now)
    assert not _same_dense({"test": 80.54, "val": 85.40}, now)


def test_rows_of_another_dense_model_are_refused_and_left_untouched() -> None:
    from bench.compression import _replace_dense

    def row(method: str, **kw: object) -> dict:
        return {"arch": "gps", "dataset": "tu:NCI1", "method": method, "test": 80.54, "val": 85.40, **kw}

    rows = [row("dense", weights_sha256="a" * 64), row("gtsp", seed=0), row("teddy"), {**row("dense"), "arch": "gt"}]
    before = [dict(r) for r in rows]
    with pytest.raises(SystemExit, match=r"out\.json: its gps on tu:NCI1 rows were made from another dense model"):
        _replace_dense(rows, row("dense", weights_sha256="b" * 64), "out.json", "runs/x")
    assert rows == before

    new = row("dense", weights_sha256="a" * 64, epochs=200)
    _replace_dense(rows, new, "out.json", "runs/x")
    assert [r["method"] for r in rows] == ["dense", "gtsp", "teddy", "dense"] and rows[0] is new
    assert rows[1:] == before[1:]  # the compressed rows stay until redone; another model's are never touched


def test_a_run_stopped_part_way_keeps_the_rows_it_had_not_redone() -> None:
    """The model's rows a run was to redo were dropped when its dense row went in, and the file saved right
    after: ``--only gt:cluster --methods gtsp --seeds 0 1`` stopped during seed 0's GTSP left only the dense
    row, both seeds' earlier GTSP rows lost. Each now stays until its new row takes its place."""
    from bench.compression import _put, _replace_dense

    def row(method: str, **kw: object) -> dict:
        return {"arch": "gt", "dataset": "cluster", "method": method, "test": 16.58, "val": 20.0, **kw}

    rows = [row("dense", weights_sha256="a" * 64), row("gtsp", budget=0.5, seed=0), row("gtsp", budget=0.5, seed=1)]
    _replace_dense(rows, row("dense", weights_sha256="a" * 64, epochs=1), "out.json", "runs/x")
    assert [(r["method"], r.get("seed")) for r in rows] == [("dense", None), ("gtsp", 0), ("gtsp", 1)]
    assert rows[0]["epochs"] == 1
    _put(rows, row("gtsp", budget=0.5, seed=0, test=15.0))  # seed 0 redone, then the run stops
    assert [(r["method"], r.get("seed"), r["test"]) for r in rows] == [
        ("dense", None, 16.58),
        ("gtsp", 0, 15.0),
        ("gtsp", 1, 16.58),
    ]
    _put(rows, row("gtsp", budget=0.3, seed=0))  # another budget: a new result
    _put(rows, row("gtsp", budget=0.5, seed=1, error="failed"))  # a failed redo is that result too
    assert [(r["budget"], r["seed"], "error" in r) for r in rows[1:]] == [
        (0.5, 0, False),
        (0.5, 1, True),
        (0.3, 0, False),
    ]


def test_mask_share_is_the_datasets_unless_given() -> None:
    """NCI1 adopted 0.15 (bench/HISTORY.md); every other dataset keeps a third; --mask-share overrides both."""
    assert _mask_share(None, "tu:NCI1") == 0.15
    assert _mask_share(None, "cluster") == pytest.approx(1 / 3)
    assert _mask_share(0.5, "tu:NCI1") == 0.5
    assert _mask_share(1 / 3, "tu:NCI1") == pytest.approx(1 / 3)
