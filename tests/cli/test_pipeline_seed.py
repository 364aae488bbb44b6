"""``train.seed`` is the pipeline run's seed: dense training, and the stages after it too.

It reached only dense training: the dense-ft control, TEDDY and pruning ran with their library
defaults (0, and 1 for dense-ft) whatever the seed, so a study over several seeds varied the dense
model alone, and with a given checkpoint (whose key does not hold the seed) a rerun with another seed
reused every stage of the first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gtcompress.pipeline import load_config
from gtcompress.pipeline.context import ModelArtifact


class _Stop(Exception):
    pass


def _stages(
    seed: int, monkeypatch: pytest.MonkeyPatch, batch_size: int = 32
) -> tuple[dict[str, int], dict[str, str], dict[str, int]]:
    """The seed each stage trains with, its cache key and its batch size, for a run with
    ``train.seed=seed`` and ``train.batch_size=batch_size``."""
    import gtcompress.checkpoint
    import gtcompress.compress.finetune
    import gtcompress.compress.prune
    import gtcompress.compress.teddy
    from gtcompress.data.base import FeatureSpec
    from gtcompress.models import ModelConfig, build_model
    from gtcompress.pipeline import model_stages

    model = build_model(ModelConfig(arch="gt", node_features=FeatureSpec("float", 3), out_dim=2, hidden=16, heads=2))
    seeds: dict[str, int] = {}
    keys: dict[str, str] = {}
    batches: dict[str, int] = {}

    def record(stage: str, seed: int, batch: int) -> Any:
        seeds[stage], batches[stage] = seed, batch
        raise _Stop

    monkeypatch.setattr(gtcompress.checkpoint, "load_checkpoint", lambda path: (model, {}))
    monkeypatch.setattr(
        gtcompress.compress.prune, "prune_model", lambda m, d, cfg: record("prune", cfg.seed, cfg.batch_size)
    )
    monkeypatch.setattr(
        gtcompress.compress.teddy, "sparsify_model", lambda m, d, cfg: record("teddy", cfg.seed, cfg.batch_size)
    )
    monkeypatch.setattr(
        gtcompress.compress.finetune,
        "finetune_dense",
        lambda m, d, e, **kw: record("dense-ft", kw["seed"], kw["batch_size"]),
    )

    class Context:
        config = load_config(None, [f"train.seed={seed}", f"train.batch_size={batch_size}"])
        out = Path("unused")

        def stage(self, name: str, key: str, outputs: list[Path], fn: Any) -> Any:
            keys[name.split(":")[0]] = key
            return fn()

        def dataset_for(self, config: Any) -> None:
            return None

    parent = ModelArtifact("gt-dense", Path("gt-dense"), "given-checkpoint-key", "gt", "dense", 1.0)
    for call in (
        lambda: model_stages._prune(Context(), parent, 0.5, "gtsp"),
        lambda: model_stages._sparsify(Context(), parent),
        lambda: model_stages._dense_ft(Context(), parent),
    ):
        with pytest.raises(_Stop):
            call()
    return seeds, keys, batches


def test_every_stage_after_training_takes_the_runs_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    default, default_keys, _ = _stages(0, monkeypatch)
    assert default == {"prune": 0, "teddy": 0, "dense-ft": 1}  # the default run trains as before
    other, other_keys, _ = _stages(5, monkeypatch)
    assert other == {"prune": 5, "teddy": 5, "dense-ft": 6}
    # the same parent (a given checkpoint): another seed is another stage, not the first seed's result
    assert all(default_keys[s] != other_keys[s] for s in ("prune", "sparsify", "control"))


def test_pruning_and_its_dense_ft_control_train_with_the_runs_batch_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dense-ft control took ``train.batch_size`` while pruning (and TEDDY) kept PruneConfig's
    (SparsifyConfig's) 32, so with ``--set train.batch_size=8`` the report's "delta vs dense-ft" compared
    models trained with different batch sizes, not the compression alone."""
    _, keys, batches = _stages(0, monkeypatch, batch_size=8)
    assert batches == {"prune": 8, "teddy": 8, "dense-ft": 8}
    _, default_keys, default_batches = _stages(0, monkeypatch)
    assert default_batches == {"prune": 32, "teddy": 32, "dense-ft": 32}
    assert all(keys[s] != default_keys[s] for s in ("prune", "sparsify", "control"))
