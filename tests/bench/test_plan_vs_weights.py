"""bench/plan_vs_weights.py: every cell's plan is cut from a model it can be materialised from."""

from pathlib import Path

import pytest
import torch

from bench.plan_vs_weights import CELLS, _start
from gtcompress.compress.plan_choice import fit_budget, random_scores
from gtcompress.compress.prune import PruneConfig, PruneRun
from tests.compress.conftest import tiny_dataset, tiny_model


def test_dense_start_with_the_tokens_axis_is_materialised() -> None:
    """GPS on a graph-level task prunes tokens by default (bench's gps:tu:NCI1): the dense-start cells
    cut a plan keeping 0.8 of the tokens from the plain dense model, which has no token scorer, and
    the run died with ``ValueError: plan layer 0 keeps 0.8 of the tokens but ... has no token scorer``."""
    ds = tiny_dataset("graph")
    model = tiny_model("gps", ds.info, num_layers=2)
    cfg = PruneConfig(target_flops=0.6, token_keep=0.8, epochs=0, finetune_epochs=0, batch_size=8, cost_graphs=8)
    run = PruneRun.start("gtsp", model, ds, cfg, show_progress=False)
    assert "tokens" in run.cfg.axes
    dense_weights = model.state_dict()
    for plan, start in CELLS:
        src = _start(start, plan, run.student, model, run.cfg)
        if start == "dense":  # the dense weights, whatever was trained in the student
            state = src.state_dict()
            assert all(torch.equal(state[k], v) for k, v in dense_weights.items())
        scores = random_scores(run.cost_model, 0)
        fit = fit_budget(src, scores, run.cost_model, run.ref, run.axes, 0.6, run.cfg.tolerance)
        assert fit.ratio == pytest.approx(0.6, rel=run.cfg.tolerance)
        assert all(s.token_keep == 0.8 for s in fit.model.config.layers if s.heads)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "gt:nope"], "--model gt:nope: expected one of gt:cluster, gps:cluster, gt:tu:NCI1, gps:tu:NCI1"),
        (["--model", "gt:cluster"], "run bench/compression.py --only gt:cluster first"),
        # these passed argparse and failed once the dense model, data and teacher were loaded (a
        # ConfigError traceback from PruneConfig, or after the first mask training from fit_budget)
        (["--budget", "1.5"], "argument --budget: must lie in (0, 1), got 1.5"),
        (["--minutes", "-1"], "argument --minutes: must lie in (0, inf), got -1"),
        (["--mask-share", "0"], "argument --mask-share: must lie in (0, 1), got 0"),
    ],
)
def test_a_mistake_is_one_error_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both were sys.exit(message): exit 1 and no 'error:' prefix, unlike every other bench script."""
    from bench import plan_vs_weights

    with pytest.raises(SystemExit) as exit_:
        plan_vs_weights.main([*args, "--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "r.json")])
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert ": error: " in last and last.endswith(message)
    assert list(tmp_path.iterdir()) == []


def test_a_run_stopped_part_way_leaves_the_previous_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The result was rewritten after every cell with this run's rows so far, and the PNG drawn only at
    the end: a run stopped in its second seed replaced the last complete result with its first seed's cells."""
    import json

    import gtcompress.compress.prune as prune_module
    from bench import plan_vs_weights
    from gtcompress.checkpoint import save_checkpoint

    ds = tiny_dataset("graph")
    save_checkpoint(tmp_path / "w" / "full" / "gt-tu-NCI1", tiny_model("gt", ds.info))
    monkeypatch.setattr(plan_vs_weights, "_load", lambda *a, **k: (None, ds))
    real, calls = prune_module.mask_training, []

    def mask_training(run):  # the second seed's: stopped
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(run)

    monkeypatch.setattr(prune_module, "mask_training", mask_training)
    out = tmp_path / "r.json"
    out.write_text('{"rows": "the previous result"}')
    args = ["--seeds", "0", "1", "--minutes", "0.01", "--workdir", str(tmp_path / "w"), "--out", str(out)]
    with pytest.raises(KeyboardInterrupt):
        plan_vs_weights.main(args)
    assert len(calls) == 2  # seed 0's four cells were measured, then seed 1 stopped
    assert json.loads(out.read_text()) == {"rows": "the previous result"}
    assert not out.with_suffix(".png").exists()
