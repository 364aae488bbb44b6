"""``gtc info`` on a global TEDDY checkpoint: what share of each split's edges its threshold drops."""

from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from cli.main import app

#: What ``gtc sparsify --global --edges 0.3`` recorded on MUTAG: the threshold drops 29.5 % of the
#: training edges, 33.3 % of the validation ones and 30.7 % of the test ones.
MUTAG_COUNTS = {
    "train": {"before": 5802, "after": 4088},
    "val": {"before": 872, "after": 582},
    "test": {"before": 768, "after": 532},
}


def _info_line(tmp_path: Path, counts: Any) -> str:
    from gtcompress.checkpoint import save_checkpoint
    from gtcompress.data.base import FeatureSpec
    from gtcompress.models import ModelConfig, build_model

    cfg = ModelConfig(arch="gt", node_features=FeatureSpec("float", 3), out_dim=2, hidden=16, heads=2, num_layers=1)
    teddy = {"edges": 0.3, "per_graph": False, "threshold": 0.064}
    report = {"method": "teddy", "removed": {"edges": {"ratio": 0.3, "per_graph": False, "counts": counts}}}
    save_checkpoint(tmp_path / "g", build_model(cfg).eval(), {"teddy": teddy, "compression": report})
    res = CliRunner().invoke(app, ["info", str(tmp_path / "g")])
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())  # the line as one, wherever the terminal width folded it
    start = flat.index("compressed:")
    return flat[start : flat.index(" layers ", start)]  # the layers table follows it


def test_info_shows_the_share_of_each_split_the_threshold_dropped(tmp_path: Path) -> None:
    """The ratio is the training split's target only: one threshold drops other shares elsewhere, and
    a user reading "30%" expected it of the graphs they serve."""
    assert _info_line(tmp_path, MUTAG_COUNTS) == (
        "compressed: teddy (inputs lose their edges scoring below a TEDDY threshold, set to drop 30% of the "
        "training split's edges; dropped: 29.5% of train, 33.3% of val, 30.7% of test)"
    )


def test_info_without_usable_counts_names_the_training_split_only(tmp_path: Path) -> None:
    """Counts that are not what gtc sparsify writes give no figure rather than a wrong one."""
    assert _info_line(tmp_path, {"train": {"before": 0, "after": 0}}) == (
        "compressed: teddy (inputs lose their edges scoring below a TEDDY threshold (30% of the training "
        "split's edges))"
    )
