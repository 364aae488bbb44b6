import dataclasses
import math

import pytest
import torch

from gtcompress.data import load_dataset
from gtcompress.data.base import DatasetInfo, FeatureSpec, GraphDataset
from gtcompress.errors import ConfigError
from gtcompress.models import ModelConfig, build_model
from gtcompress.train import TrainConfig, compute_metric, evaluate, task_loss, train
from gtcompress.train.loop import TrainingDivergedError, epochs_in_budget
from gtcompress.train.metrics import roc_auc


@pytest.fixture()
def tiny(tmp_path):
    return load_dataset("cluster", size="40,12,12", seed=1, cache_dir=tmp_path)


def _model(info):
    torch.manual_seed(0)
    return build_model(ModelConfig.for_dataset("gt", info, hidden=16, num_layers=1, heads=2))


def test_training_is_reproducible_and_restores_best_epoch(tiny) -> None:
    cfg = TrainConfig(epochs=3, batch_size=8, warmup_epochs=1, seed=5)
    a, b = _model(tiny.info), _model(tiny.info)
    ra = train(a, tiny, cfg, show_progress=False)
    rb = train(b, tiny, cfg, show_progress=False)
    assert ra.history == rb.history
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    best = max(ra.history, key=lambda r: r["val_class_avg_acc"])
    assert ra.best_epoch == best["epoch"]
    assert evaluate(a, tiny["val"], tiny.info)["class_avg_acc"] == pytest.approx(ra.val_metric)
    assert 0.0 <= ra.test_metric <= 1.0


def test_epochs_before_select_from_epoch_never_become_the_best(tiny) -> None:
    """``select_from_epoch``: earlier epochs are not candidates; a run that stops before it keeps its last."""
    cfg = TrainConfig(epochs=3, batch_size=8, warmup_epochs=1, seed=5)
    ref = train(_model(tiny.info), tiny, cfg, show_progress=False)
    m = _model(tiny.info)
    res = train(m, tiny, dataclasses.replace(cfg, select_from_epoch=2), show_progress=False)
    assert res.history == ref.history and res.best_epoch == 2
    assert evaluate(m, tiny["val"], tiny.info)["class_avg_acc"] == pytest.approx(res.history[2]["val_class_avg_acc"])
    m = _model(tiny.info)
    res = train(m, tiny, dataclasses.replace(cfg, select_from_epoch=5), show_progress=False)
    assert res.best_epoch == 2 and res.val_metric == res.history[2]["val_class_avg_acc"]  # the last epoch run
    assert evaluate(m, tiny["val"], tiny.info)["class_avg_acc"] == pytest.approx(res.val_metric)


def test_time_budget_stops_early(tiny) -> None:
    res = train(_model(tiny.info), tiny, TrainConfig(epochs=500, batch_size=8, time_budget_s=1e-6), show_progress=False)
    assert res.epochs_run == 1


def test_epochs_in_budget_recovers_from_a_slow_first_epoch() -> None:
    # steady 1 s epochs in 10 s: 10 epochs, and the plan stays put
    assert epochs_in_budget(10.0, [1.0], 500, 500) == 10
    assert epochs_in_budget(10.0, [1.0, 1.0, 1.0], 10, 500) == 10
    # a 5 s first epoch (busy machine) plans 4 of 20 s; fast epochs after it win the plan back
    assert epochs_in_budget(20.0, [5.0], 500, 500) == 4
    assert epochs_in_budget(20.0, [5.0, 1.0], 4, 500) == 2 + int(14.0 / 3.0)  # median 3 s
    assert epochs_in_budget(20.0, [5.0, 1.0, 1.0], 6, 500) == 3 + 13
    # slack: an estimate within 10 % of the plan keeps it (the LR schedule does not wobble)
    assert epochs_in_budget(10.0, [1.0, 1.05], 10, 500) == 10
    # slower epochs later shrink the plan so the cosine schedule still ends inside the budget
    assert epochs_in_budget(10.0, [1.0, 3.0, 3.0], 10, 500) == 3 + int(3.0 / 3.0)
    # the epoch cap and at least one epoch
    assert epochs_in_budget(1000.0, [1.0], 500, 50) == 50
    assert epochs_in_budget(1.0, [5.0], 500, 500) == 1


def test_class_average_accuracy_and_weighted_loss() -> None:
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    y = torch.tensor([0, 0, 0, 0])
    assert compute_metric("class_avg_acc", logits, torch.tensor([0, 0, 0, 1])) == pytest.approx(1.0)
    assert compute_metric("class_avg_acc", logits, torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)
    assert compute_metric("accuracy", logits, y) == pytest.approx(0.75)
    info = DatasetInfo("x", "node", "multiclass", 2, "class_avg_acc", FeatureSpec("float", 1), class_weighted_loss=True)
    # weights (V - n_c)/V: class 0 has 3 of 4 samples → 0.25, class 1 → 0.75
    target = torch.tensor([0, 0, 0, 1])
    expected = torch.nn.functional.cross_entropy(logits, target, weight=torch.tensor([0.25, 0.75]))
    assert task_loss(logits, target, info) == pytest.approx(float(expected))


def test_a_weighted_loss_over_a_batch_of_one_class_is_its_plain_loss() -> None:
    """Class weights (V - n_c)/V give the only class present weight 0, and the weighted mean 0/0 = NaN:
    training stopped as if it had diverged, telling the user to lower the learning rate."""
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.5, 0.0, 1.0], [0.0, 2.0, -1.0]], requires_grad=True)
    info = DatasetInfo("x", "node", "multiclass", 3, "class_avg_acc", FeatureSpec("float", 1), class_weighted_loss=True)
    target = torch.tensor([1, 1, 1])
    loss = task_loss(logits, target, info)
    assert loss.item() == pytest.approx(float(torch.nn.functional.cross_entropy(logits, target)))
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_roc_auc_matches_pairwise_definition() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (60,), generator=g).double().numpy()  # many ties
    labels = (torch.rand(60, generator=g) > 0.6).double().numpy()
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairs = [(1.0 if p > n else 0.5 if p == n else 0.0) for p in pos for n in neg]
    assert roc_auc(scores, labels) == pytest.approx(sum(pairs) / len(pairs))
    assert math.isnan(roc_auc(scores, labels * 0))


def test_binary_loss_ignores_missing_labels() -> None:
    info = DatasetInfo("m", "graph", "binary", 1, "rocauc", FeatureSpec("float", 1))
    logits = torch.tensor([[0.3], [5.0]])
    y = torch.tensor([[1.0], [float("nan")]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([0.3]), torch.tensor([1.0]))
    assert task_loss(logits, y, info) == pytest.approx(float(expected))


@pytest.mark.parametrize("budget", [-1.0, math.nan, math.inf])
def test_a_negative_or_non_finite_time_budget_is_refused(budget) -> None:
    """Each silently cut training to one epoch (and NaN was written into config.json)."""
    with pytest.raises(ConfigError) as err:
        TrainConfig(time_budget_s=budget)
    assert str(err.value) == f"--time-budget must be a finite number of seconds >= 0 (0 = no limit), got {budget!r}"


def test_a_non_finite_loss_stops_training_with_a_clear_error(tiny) -> None:
    """Instead of carrying on and returning (to be saved) NaN weights."""
    model = _model(tiny.info)
    nan_loss = lambda m, b, logits: logits.sum() * math.nan  # noqa: E731
    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.01)
    with pytest.raises(TrainingDivergedError) as err:
        train(model, tiny, cfg, extra_loss=nan_loss, show_progress=False, description="gt on cluster")
    assert str(err.value) == (
        "gt on cluster: the loss became nan at epoch 1, step 1 of 5; training diverged, "
        "so no weights were written: lower the learning rate (--lr, now 0.01)"
    )
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())  # no NaN step was taken


def test_an_optimiser_step_too_large_for_float32_is_a_divergence_not_a_torch_error(tiny) -> None:
    """``gtc train --lr 1e38``: Adam's first step (ten times the rate) does not fit a float32, and
    torch's "value cannot be converted to type float without overflow" came out as a traceback."""
    model = _model(tiny.info)
    with pytest.raises(TrainingDivergedError) as err:
        train(model, tiny, TrainConfig(epochs=1, batch_size=8, lr=1e38), show_progress=False, description="gt")
    assert str(err.value) == (
        "gt: the optimiser step overflowed float32 at epoch 1, step 1 of 5; training diverged, "
        "so no weights were written: lower the learning rate (--lr, now 1e+38)"
    )


@pytest.mark.parametrize("split", ["train", "val"])
def test_an_empty_split_is_named_instead_of_torch_cat_failing(tiny, split) -> None:
    ds = GraphDataset(tiny.info, {**tiny.splits, split: []})
    with pytest.raises(ConfigError) as err:
        train(_model(tiny.info), ds, TrainConfig(epochs=1, batch_size=8), show_progress=False)
    assert str(err.value) == (f"dataset 'CLUSTER': the {split} split is empty; training needs graphs in train and val")
    with pytest.raises(ConfigError, match=r"^nothing to evaluate: the split holds no graphs$"):
        evaluate(_model(tiny.info), [], tiny.info)


def test_multi_task_roc_auc_is_the_mean_of_the_tasks() -> None:
    """The tasks were pooled into one ROC-AUC: two perfectly ranked tasks with offset scores gave 0.75
    (the gap between their base rates), OGB's evaluator 1.0. A single-class task is skipped."""
    logits = torch.tensor([[0.1, 5.0], [0.2, 6.0], [0.3, 7.0], [0.4, 8.0]])
    y = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, float("nan")], [1.0, 1.0]])
    assert compute_metric("rocauc", logits, y) == pytest.approx(1.0)
    y3 = torch.cat([y, torch.zeros(4, 1)], 1)  # a third task with one class: undefined, skipped
    assert compute_metric("rocauc", torch.cat([logits, torch.rand(4, 1)], 1), y3) == pytest.approx(1.0)
    assert math.isnan(compute_metric("rocauc", logits[:, :1], torch.zeros(4, 1)))


def test_a_batch_with_every_label_missing_adds_no_loss() -> None:
    """The mean over no labels is NaN, which stopped training as 'diverged'."""
    for task in ("binary", "regression"):
        info = DatasetInfo("m", "graph", task, 2, "rocauc" if task == "binary" else "mae", FeatureSpec("float", 1))
        logits = torch.randn(3, 2, requires_grad=True)
        loss = task_loss(logits, torch.full((3, 2), float("nan")), info)
        loss.backward()
        assert float(loss.detach()) == 0.0 and torch.equal(logits.grad, torch.zeros(3, 2))


def test_an_undefined_validation_metric_is_an_error_not_the_untrained_weights(tiny) -> None:
    """NaN is never better than -inf: train() returned the initial weights with best_epoch -1."""
    info = DatasetInfo("one-class", "graph", "binary", 1, "rocauc", tiny.info.node_features)
    graphs = {k: [dataclasses.replace(g, y=torch.zeros(1, 1)) for g in v] for k, v in tiny.splits.items()}
    ds = GraphDataset(info, graphs)
    torch.manual_seed(0)
    model = build_model(ModelConfig.for_dataset("gt", info, hidden=16, num_layers=1, heads=2))
    with pytest.raises(ConfigError) as err:
        train(model, ds, TrainConfig(epochs=2, batch_size=8), show_progress=False)
    assert str(err.value) == (
        "dataset 'one-class': the val rocauc is undefined (NaN) at epoch 0, so no best epoch can be chosen: "
        "ROC-AUC needs both classes among a task's val labels"
    )


@pytest.mark.parametrize(("epochs", "warmup"), [(3, 5), (1, 1), (2, 2)])
def test_a_run_no_longer_than_its_warm_up_still_ends_decayed(epochs: int, warmup: int) -> None:
    """gtc train --epochs 3 with 5 warm-up epochs ended at 0.6 x lr, never peaking or decaying."""
    from gtcompress.train.loop import _Schedule

    steps = 4
    sched = _Schedule(warmup * steps, epochs * steps)
    factors = [sched(s) for s in range(epochs * steps)]
    assert max(factors) == pytest.approx(1.0) and factors[-1] < 0.26  # the last step: decayed, not at the peak


def test_a_model_whose_training_cannot_fit_in_memory_is_refused_before_it_is_built(monkeypatch) -> None:
    """``gtc train --hidden 100000000`` was torch's "DefaultCPUAllocator: can't allocate memory"
    traceback; a size that fits just barely took the machine's memory. Counted on the meta device."""
    import gtcompress.models.model
    import gtcompress.train.recipe as recipe
    from gtcompress.train.recipe import DataSpec, fit

    monkeypatch.setattr(recipe, "machine_memory", lambda: 2**30)
    build = gtcompress.models.model.build_model

    def build_on_meta_only(config: ModelConfig):  # type: ignore[no-untyped-def]
        if config.hidden > 1000 and torch.empty(0).device.type != "meta":
            pytest.fail("the model was built (allocated)")
        return build(config)

    monkeypatch.setattr(recipe, "build_model", build_on_meta_only)
    ds = load_dataset("cluster", size="12,6,6", seed=0)
    with pytest.raises(ConfigError) as err:
        fit(DataSpec("cluster", size="12,6,6"), "gt", {"hidden": 8192, "num_layers": 1, "heads": 1, "pe": {}},
            dataset=ds, show_progress=False)  # fmt: skip
    assert str(err.value) == (
        "gt with hidden 8192, 1 layer: 570,601,478 weights, which take 8.5 GiB to train (16 bytes a weight: the "
        "weight, its gradient and AdamW's two moments), more than this machine's 1.0 GiB of memory; 536,961,024 of "
        "them are the transformer layers (hidden 8192, heads 1, head_dim 8192, ffn_dim 16384): choose a smaller "
        "hidden size or fewer layers"
    )
    fit(DataSpec("cluster", size="12,6,6"), "gt", {"hidden": 16, "num_layers": 1, "heads": 1, "pe": {}},
        TrainConfig(epochs=1), dataset=ds, show_progress=False)  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "advice"),
    [
        (
            {"hidden": 2**64},
            "the largest size is hidden 18446744073709551616: choose a smaller hidden size or fewer layers",
        ),
        (
            {"hidden": 16, "ffn_dim": 2**64},
            "the largest size is ffn_dim 18446744073709551616: choose a smaller ffn_dim",
        ),
    ],
)
def test_a_model_dimension_past_int64_is_refused_as_too_large_not_a_traceback(
    monkeypatch, overrides: dict, advice: str
) -> None:
    """The memory check counted the weights by building the model on the meta device and took a failing
    build (RuntimeError) for a count past int64; a dimension past int64 fails earlier, a TypeError in
    torch ("Overflow when unpacking long long"), which ``gtc train --hidden 100000000000000000000`` printed
    as a traceback."""
    import gtcompress.train.recipe as recipe
    from gtcompress.train.recipe import DataSpec, fit

    monkeypatch.setattr(recipe, "machine_memory", lambda: 2**30)
    ds = load_dataset("cluster", size="12,6,6", seed=0)
    with pytest.raises(ConfigError) as err:
        fit(DataSpec("cluster", size="12,6,6"), "gt", {"num_layers": 1, "heads": 1, "pe": {}, **overrides},
            dataset=ds, show_progress=False)  # fmt: skip
    assert str(err.value) == (
        f"gt with hidden {overrides['hidden']}, 1 layer: more weights than int64 counts (16 bytes a weight: the "
        f"weight, its gradient and AdamW's two moments), more than this machine's 1.0 GiB of memory; {advice}"
    )


_FLOAT_NODES = FeatureSpec(kind="float", dim=9)


@pytest.mark.parametrize(
    ("overrides", "refusal"),
    [
        (  # a TU node label of 10**9: its column is embedded up to the largest label
            {"node_features": FeatureSpec(kind="categorical", dim=2, cardinalities=[4, 10**9 + 1])},
            "64,000,000,320 of them are the node feature encoder: hidden 64 for each of 1,000,000,005 categories "
            "(node_features.cardinalities [4, 1000000001], from the dataset): renumber the dataset's node labels "
            "densely from 0, or choose a smaller hidden size",
        ),
        (
            {"node_features": FeatureSpec(kind="float", dim=10**9)},
            "64,000,000,064 of them are the node feature encoder: hidden 64 for each of 1,000,000,000 input features "
            "(node_features.dim, from the dataset): give the dataset fewer node features, or choose a smaller hidden "
            "size",
        ),
        (
            {"edge_features": FeatureSpec(kind="categorical", dim=1, cardinalities=[10**8])},
            "6,400,000,000 of them are the edge feature encoder: hidden 64 for each of 100,000,000 categories "
            "(edge_features.cardinalities [100000000], from the dataset): renumber the dataset's edge labels densely "
            "from 0, or choose a smaller hidden size",
        ),
        (
            {"out_dim": 10**9},
            "33,000,002,080 of them are the prediction head (hidden 64 to out_dim 1000000000, head_layers 2): train "
            "on a dataset with fewer classes or targets (out_dim), or choose a smaller hidden size",
        ),
        (
            {"head_widths": [10**8]},
            "7,000,000,005 of them are the prediction head (hidden 64 to out_dim 5, head_layers 2, head_widths "
            "[100000000]): choose smaller head_widths",
        ),
        (
            {"ffn_dim": 10**8},
            "25,800,000,128 of them are the feed-forward blocks (ffn_dim 100000000, hidden 64): choose a smaller "
            "ffn_dim",
        ),
        (
            {"head_dim": 10**6},
            "2,072,033,792 of them are the transformer layers (hidden 64, heads 4, head_dim 1000000, ffn_dim 128): "
            "choose a smaller head_dim or fewer heads",
        ),
        (
            {"pe": {"lap": 10**8}},
            "6,400,000,064 of them are the positional-encoding projections (pe lap:100000000): choose fewer "
            "positional-encoding dimensions",
        ),
        (
            {"arch": "graphormer", "max_degree": 10**8},
            "12,800,000,128 of them are the degree embeddings (max_degree 100000000, hidden 64): choose a smaller "
            "max_degree",
        ),
    ],
)
def test_the_memory_refusal_advises_on_the_dimension_that_holds_the_weights(
    monkeypatch, overrides: dict, refusal: str
) -> None:
    """The advice was "choose a smaller hidden size or fewer layers" whatever held the weights: for a
    dataset whose node labels run to 10**9, fewer layers shrink nothing and the user was not told that
    the data made the model too large."""
    import gtcompress.train.recipe as recipe

    monkeypatch.setattr(recipe, "machine_memory", lambda: 2**30)
    config = ModelConfig(
        **{"arch": "gt", "node_features": _FLOAT_NODES, "out_dim": 5, "hidden": 64, "heads": 4, "num_layers": 2,
           **overrides}
    )  # fmt: skip
    with pytest.raises(ConfigError) as err:
        recipe.check_training_fits(config)
    assert str(err.value).split("GiB of memory; ")[1] == refusal


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_keep_start_returns_the_starting_weights_when_no_epoch_beats_them(tiny) -> None:
    """A fine-tune that makes things worse (lr 10) handed back its worse last epoch: the start never
    competed (a GPS dense-ft on NCI1 fell from val 77.62 to 65.69 in one epoch and returned that)."""
    start = _model(tiny.info)
    train(start, tiny, TrainConfig(epochs=8, batch_size=8, lr=3e-3, warmup_epochs=1), show_progress=False)
    before, start_val = _state(start), evaluate(start, tiny["val"], tiny.info)["class_avg_acc"]
    cfg = TrainConfig(epochs=2, batch_size=8, lr=10.0, warmup_epochs=1, seed=3)
    a, b = _model(tiny.info), _model(tiny.info)
    a.load_state_dict(before)
    b.load_state_dict(before)
    ref = train(a, tiny, cfg, show_progress=False)
    assert not _same_state(_state(a), before) and ref.val_metric < start_val  # what keep_start guards against
    res = train(b, tiny, cfg, show_progress=False, keep_start=True)
    assert res.history == ref.history  # the start's evaluation changes nothing of the training itself
    assert res.kept_start and res.start_val == start_val and res.val_metric == start_val
    assert _same_state(_state(b), before)  # bit for bit
    assert res.best_epoch == ref.best_epoch  # the best epoch trained, still named, with its own metric
    assert res.history[res.best_epoch]["val_class_avg_acc"] < start_val
    assert res.test_metric == evaluate(b, tiny["test"], tiny.info)["class_avg_acc"]


def test_keep_start_keeps_the_start_on_a_tie(tiny) -> None:
    """An epoch must be strictly better to replace the start (lr 0: every epoch validates as it)."""
    m = _model(tiny.info)
    before = _state(m)
    res = train(m, tiny, TrainConfig(epochs=1, batch_size=8, lr=0.0, weight_decay=0.0), show_progress=False,
                keep_start=True)  # fmt: skip
    assert res.history[0]["val_class_avg_acc"] == res.start_val and res.kept_start and res.best_epoch == 0
    assert _same_state(_state(m), before)


def test_keep_start_lets_an_epoch_that_beats_the_start_win(tiny) -> None:
    m = _model(tiny.info)
    before = _state(m)
    cfg = TrainConfig(
        epochs=3, batch_size=8, lr=1e-2, warmup_epochs=1, seed=5
    )  # val 0.165 (as the start), 0.257, 0.262
    ref = train(_model(tiny.info), tiny, cfg, show_progress=False)
    res = train(m, tiny, cfg, show_progress=False, keep_start=True)
    assert res.history == ref.history and res.best_epoch == ref.best_epoch and not res.kept_start
    assert res.start_val == evaluate(_model(tiny.info), tiny["val"], tiny.info)["class_avg_acc"]
    assert res.val_metric == res.history[res.best_epoch]["val_class_avg_acc"] > res.start_val
    assert not _same_state(_state(m), before)
    assert evaluate(m, tiny["val"], tiny.info)["class_avg_acc"] == pytest.approx(res.val_metric)


def test_without_keep_start_the_start_is_not_evaluated(tiny) -> None:
    res = train(_model(tiny.info), tiny, TrainConfig(epochs=1, batch_size=8), show_progress=False)
    assert res.start_val is None and not res.kept_start and res.best_epoch == 0


def test_an_undefined_validation_metric_of_the_start_is_an_error_before_training(tiny) -> None:
    info = DatasetInfo("one-class", "graph", "binary", 1, "rocauc", tiny.info.node_features)
    graphs = {k: [dataclasses.replace(g, y=torch.zeros(1, 1)) for g in v] for k, v in tiny.splits.items()}
    torch.manual_seed(0)
    model = build_model(ModelConfig.for_dataset("gt", info, hidden=16, num_layers=1, heads=2))
    with pytest.raises(ConfigError) as err:
        train(model, GraphDataset(info, graphs), TrainConfig(epochs=2, batch_size=8), show_progress=False,
              keep_start=True)  # fmt: skip
    assert str(err.value) == (
        "dataset 'one-class': the val rocauc is undefined (NaN) for the starting weights, so no best epoch can be "
        "chosen: ROC-AUC needs both classes among a task's val labels"
    )
