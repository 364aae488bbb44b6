"""The list options that select a benchmark's rows (``--only``, ``--workloads``, ``--methods``) refuse a
name they do not know before any work starts: a mistyped one selected nothing, so the run exited 0
having trained nothing and written an empty result (``bench/train.py --only gps:NCI1``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import compression, export, train
from bench._common import unknown_names


def test_unknown_names_lists_the_unknown_and_the_known() -> None:
    assert unknown_names("--only", None, ["a"]) is None
    assert unknown_names("--only", ["a"], ["a", "b"]) is None
    assert unknown_names("--only", ["a", "x", "y"], ["a", "b"]) == "--only: 'x', 'y' not among a, b"


@pytest.mark.parametrize(
    ("main", "args", "message"),
    [
        (
            train.main,
            ["--only", "gps:NCI1"],
            "--only: 'gps:NCI1' not among gt:cluster, gps:cluster, gt:pattern, gps:pattern, gt:tu:NCI1, "
            "gps:tu:NCI1, gt:molhiv, gps:molhiv",
        ),
        (
            compression.main,
            ["--quick", "--only", "gt:nci1"],
            "--only: 'gt:nci1' not among gt:cluster, gps:cluster, gt:tu:NCI1, gps:tu:NCI1",
        ),
        (
            compression.main,
            ["--quick", "--methods", "gtsp", "teddy_attn"],
            "--methods: 'teddy_attn' not among gtsp, random, teddy, teddy-attn, dense-ft",
        ),
        (export.main, ["--quick", "--only", "gtx"], "--only: 'gtx' not among gt, gps"),
        (
            export.main,
            ["--quick", "--workloads", "sbm", "sparse-1000000"],  # --quick builds sparse graphs up to 10k edges
            "--workloads: 'sparse-1000000' not among sbm, molecules, sparse-1000, sparse-10000",
        ),
    ],
)
def test_a_mistyped_selection_is_one_error_before_any_work(
    main, args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "result.json"
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--out", str(out)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"error: {message}")
    assert list(tmp_path.iterdir()) == []  # no result, no plot


@pytest.mark.parametrize(
    ("main", "args", "message"),
    [
        # statistics.median([]) once the models were built: StatisticsError traceback
        (export.main, ["--quick", "--repeat", "0"], "argument --repeat: must be at least 1, got 0"),
        # torch.set_num_threads(-1): RuntimeError traceback
        (export.main, ["--quick", "--threads", "-1"], "argument --threads: must be at least 1, got -1"),
        (export.main, ["--quick", "--threads", "two"], "argument --threads: expected an integer, got 'two'"),
        (train.main, ["--threads", "-1"], "argument --threads: must be at least 0, got -1"),
        # TrainConfig's ConfigError traceback once the first dataset was loaded
        (train.main, ["--minutes", "-1"], "argument --minutes: must lie in (0, inf), got -1"),
        (train.main, ["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
        (compression.main, ["--quick", "--threads", "-2"], "argument --threads: must be at least 0, got -2"),
        # each of these trained the dense model, then recorded every GTSP/random row as failed (exit 0), in
        # place of the rows of those seeds and budgets already in --out
        (compression.main, ["--budgets", "0.5", "1.5"], "argument --budgets: must lie in (0, 1), got 1.5"),
        (compression.main, ["--minutes", "-1"], "argument --minutes: must lie in (0, inf), got -1"),
        (compression.main, ["--minutes", "nan"], "argument --minutes: must lie in (0, inf), got nan"),
        (compression.main, ["--mask-share", "1"], "argument --mask-share: must lie in (0, 1), got 1"),
        (compression.main, ["--token-keep", "0"], "argument --token-keep: must lie in (0, 1], got 0"),
        (compression.main, ["--teddy-edges", "1"], "argument --teddy-edges: must lie in [0, 1), got 1"),
        (compression.main, ["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
        # a budget of 0 is the trainer's "no limit": --minutes 0 trained every run to the 1000-epoch cap
        (compression.main, ["--minutes", "0"], "argument --minutes: must lie in (0, inf), got 0"),
        (compression.main, ["--budgets", "half"], "argument --budgets: expected a number, got 'half'"),
        # dict() of the items: ValueError traceback
        (compression.main, ["--checkpoint", "runs/gt"], "--checkpoint: expected ARCH:DATASET=PATH, got 'runs/gt'"),
        # an unknown model's checkpoint was never used: the dense model was trained instead
        (
            compression.main,
            ["--checkpoint", "gt:NCI1=runs/gt"],
            "--checkpoint: 'gt:NCI1' not among gt:cluster, gps:cluster, gt:tu:NCI1, gps:tu:NCI1",
        ),
    ],
)
def test_a_count_the_run_cannot_use_is_one_error_before_any_work(
    main, args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--out", str(tmp_path / "result.json")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"error: {message}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("main", [train.main, compression.main])
def test_a_clone_without_the_datasets_is_one_error_before_any_work(
    main, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside the project's folder (no ../shared/data) the TU run failed with a DataFormatError
    traceback once it reached that dataset."""
    monkeypatch.setenv("GTCOMPRESS_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(SystemExit) as exit_:
        main(["--only", "gt:tu:NCI1", "--out", str(tmp_path / "result.json")])
    assert exit_.value.code == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .endswith(
            f"error: dataset folder {tmp_path / 'nowhere' / 'TU'} not found: set GTCOMPRESS_DATA to the folder that "
            "holds the datasets (the project's shared/data, see its README)"
        )
    )
    assert list(tmp_path.iterdir()) == []
