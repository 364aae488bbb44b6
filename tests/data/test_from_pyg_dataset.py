"""``dataset_from_pyg``: a PyG model's own graphs as the dataset that prunes its import, checked against the model.

A PyG user's data is PyG ``Data`` objects; pruning the imported model needs them as a ``GraphDataset``, whose
``DatasetInfo`` by hand could disagree with the model (an ``IndexError`` in an embedding, a metric of the wrong
task). The graphs are laid out from the model and each checked, the error naming the split, graph and tensor."""

from __future__ import annotations

import re

import pytest
import torch
from torch import Tensor

pyg_nn = pytest.importorskip("torch_geometric.nn")
import torch_geometric.transforms as T  # noqa: E402
from torch_geometric.data import Data  # noqa: E402
from torch_geometric.loader import DataLoader  # noqa: E402

from gtcompress.data.base import FeatureSpec  # noqa: E402
from gtcompress.data.from_pyg import dataset_from_pyg  # noqa: E402
from gtcompress.errors import ConfigError  # noqa: E402
from gtcompress.models.config import ModelConfig  # noqa: E402
from gtcompress.models.from_pyg import from_pyg  # noqa: E402
from gtcompress.preprocess.pe import rwse  # noqa: E402
from tests.models.test_from_pyg import ExampleGPS, molecules, pyg_run, warm_up  # noqa: E402


def _zinc_like(sizes: list[int], seed: int) -> list[Data]:
    """Molecules with RWSE under ``pe`` (PyG's GPS example) and a regression target of shape [1], as ZINC's."""
    dedup, walk = T.RemoveDuplicatedEdges(reduce="max"), T.AddRandomWalkPE(20, attr_name="pe")
    g = torch.Generator().manual_seed(seed)
    out = []
    for d in molecules(sizes, seed=seed).to_data_list():
        d = walk(dedup(d))
        d.y = torch.randn(1, generator=g)
        out.append(d)
    return out


@pytest.fixture(scope="module")
def imported() -> tuple[ExampleGPS, object]:
    torch.manual_seed(0)
    src = ExampleGPS()
    warm_up(src, pyg_run)
    return src, from_pyg(src, readout="sum", pe_kind="rwse")


def test_a_pyg_models_graphs_score_its_import_as_they_score_it_and_prune_it(imported) -> None:
    """The dataset is the model's: its val MAE is the PyG model's own on the same graphs (so features,
    encodings and targets are laid out as the PyG model reads them), and it prunes the import from Python."""
    from gtcompress.compress.prune import PruneConfig, prune_model
    from gtcompress.train.loop import evaluate

    src, ours = imported
    train, val = _zinc_like([5, 7, 12, 3, 9, 6, 8, 10], 1), _zinc_like([6, 9, 4, 11, 7], 2)
    ds = dataset_from_pyg(ours, train, DataLoader(val, batch_size=2), test=val, name="my-molecules")
    info = ds.info
    assert (info.name, info.task_level, info.task, info.out_dim, info.metric) == (
        "my-molecules", "graph", "regression", 1, "mae")  # fmt: skip
    assert info.node_features == FeatureSpec("categorical", 1, [28]) and info.edge_features == ours.config.edge_features
    assert [len(ds[s]) for s in ("train", "val", "test")] == [8, 5, 5]  # the loader's batches split into graphs
    with torch.no_grad():
        want = torch.cat([pyg_run(src, b) for b in DataLoader(val, batch_size=5)]).reshape(-1)
    mae = float((want - torch.cat([d.y for d in val])).abs().mean())
    assert evaluate(ours, ds["val"], info)["mae"] == pytest.approx(mae, abs=1e-5)
    assert ds["test"][0].y.shape == (1, 1) and set(val[0].keys()) == {"x", "edge_index", "edge_attr", "pe", "y"}
    assert val[0].y.shape == (1,)  # PyG's objects untouched
    pruned = prune_model(ours, ds, PruneConfig(target_flops=0.6, epochs=1, finetune_epochs=0, cost_graphs=4))
    assert pruned.report["cost"]["flops_ratio"] < 0.7


def test_an_encoding_the_graph_lacks_is_computed_as_a_deployment_computes_it(imported) -> None:
    _, ours = imported
    graphs = _zinc_like([5, 7], 1)
    bare = Data(x=graphs[0].x, edge_index=graphs[0].edge_index, edge_attr=graphs[0].edge_attr, y=graphs[0].y)
    named = Data(**{k: v for k, v in bare.items()}, random_walk_pe=graphs[1].pe[:5])
    ds = dataset_from_pyg(ours, [bare, named], [graphs[1]])
    want = rwse(bare.edge_index.numpy(), [0, 5], 20)
    torch.testing.assert_close(ds["train"][0].pe["rwse"], torch.from_numpy(want).float())
    assert torch.equal(ds["train"][1].pe["rwse"], graphs[1].pe[:5])  # its own, PyG's name
    assert torch.equal(ds["val"][0].pe["rwse"], graphs[1].pe)  # its own, the example's unnamed 'pe'


def _classifier(out_dim: int, level: str = "graph") -> ModelConfig:
    return ModelConfig(arch="gt", node_features=FeatureSpec("float", 3), out_dim=out_dim, hidden=8, heads=2,
                       num_layers=1, task_level=level)  # fmt: skip


def _g(y: Tensor | None = None, x: Tensor | None = None) -> Data:
    """A 3-node path with 3 float features a node and graph label ``y`` (1 unless given)."""
    ei = torch.tensor([[0, 1], [1, 2]])
    return Data(x=torch.ones(3, 3) if x is None else x, edge_index=ei, y=torch.tensor([1]) if y is None else y)


def test_the_task_and_metric_follow_the_targets_and_the_model() -> None:
    multi = dataset_from_pyg(_classifier(3), [_g(y=torch.tensor([2]))], [_g(y=torch.tensor([0]))])
    assert (multi.info.task, multi.info.metric, multi["train"][0].y.tolist()) == ("multiclass", "accuracy", [2])
    binary = dataset_from_pyg(_classifier(1), [_g(y=torch.tensor([[1]]))], [_g(y=torch.tensor([[0]]))])
    assert (binary.info.task, binary.info.metric, binary["train"][0].y.tolist()) == ("binary", "rocauc", [[1.0]])
    tasks = dataset_from_pyg(_classifier(2), [_g(y=torch.tensor([[1, 0]]))], [_g(y=torch.tensor([[0, 1]]))])
    assert tasks.info.task == "binary"  # two 0/1 labels a graph: two binary tasks, not one of two classes
    nodes = dataset_from_pyg(_classifier(2, "node"), [_g(y=torch.tensor([0, 1, 1]))], [_g(y=torch.tensor([1, 0, 0]))])
    assert (nodes.info.task_level, nodes.info.task, nodes["val"][0].y.tolist()) == ("node", "multiclass", [1, 0, 0])
    given = dataset_from_pyg(_classifier(1), [_g(y=torch.tensor([0.0]))], [_g(y=torch.tensor([1.0]))], task="binary",
                             metric="ap")  # fmt: skip
    assert (given.info.task, given.info.metric) == ("binary", "ap")


@pytest.mark.parametrize(
    ("config", "train", "kw", "message"),
    [
        (_classifier(3), [_g(), _g(y=torch.tensor([3]))], {},
         "train[1]: y holds class 3; the model has 3 outputs (classes 0 to 2)"),
        (_classifier(3), [_g(y=torch.tensor([1, 0, 2]))], {},
         "train[0]: y has shape [3]; a graph-level multiclass task takes one class id a graph (1 here)"),
        (_classifier(1), [_g(y=torch.tensor([0.0, 1.0]))], {},
         "task: the targets are floats that are all 0, 1 (or missing): a binary classification or a regression? say "
         "which with task='binary' or task='regression'"),
        (_classifier(1), [_g(y=torch.tensor([0.5]))], {"task": "binary"},
         "train[0]: y holds 0.5; binary labels are 0, 1 or NaN (missing); for numeric targets pass task='regression'"),
        (_classifier(1), [_g(y=torch.tensor([3]))], {},
         "train[0]: y holds 3; binary labels are 0, 1 or NaN (missing); for numeric targets pass task='regression'"),
        (_classifier(3), [Data(x=torch.ones(2, 3), y=torch.tensor([1]))], {}, "train[0]: no edge_index"),
        (_classifier(1), [_g(y=torch.tensor([0.5]))], {"metric": "accuracy"},
         "metric 'accuracy' does not score a regression task; expected one of mae, rmse"),
        (_classifier(3), [Data(x=torch.ones(3, 2), edge_index=torch.tensor([[0], [1]]), y=torch.tensor([1]))], {},
         "train[0]: x has shape [3, 2]; the model takes float, 3 columns"),
        (_classifier(3), [_g(), Data(x=torch.ones(2, 3), edge_index=torch.tensor([[0], [1]]))], {},
         "train[1]: no targets y"),
        (_classifier(3), [_g(x=torch.full((3, 3), float("nan")))], {},
         "train[0].x: contains NaN or Inf (first at node 0)"),
        (_classifier(3), [], {}, "train: no graphs; training needs graphs in train and val"),
        (_classifier(3, "node"), [Data(x=torch.ones(3, 3), edge_index=torch.tensor([[0], [1]]),
                                       y=torch.tensor([0, 1, 2]), train_mask=torch.tensor([True, True, False]))], {},
         "train[0] carries train_mask: a split of one graph's nodes, which a gtcompress dataset (split by graphs, "
         "every node of a graph in its split) does not hold; pass the graphs of each split"),
        (_classifier(3), [_g()], {"task": "ranking"}, "task 'ranking': expected one of multiclass, binary, regression"),
    ],
)  # fmt: skip
def test_a_graph_the_model_cannot_read_is_refused_by_name(config, train, kw, message) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        dataset_from_pyg(config, train, [_g(y=torch.tensor([0]))], **kw)


def test_a_graph_in_two_splits_is_refused() -> None:
    """A node-level dataset of one graph passed as train and val scored the model on what it trained on."""
    graphs = [_g(), _g(y=torch.tensor([0]))]
    with pytest.raises(ConfigError) as e:
        dataset_from_pyg(_classifier(3), graphs, [_g(), graphs[1]])
    assert str(e.value) == (
        "val[1] is train[1], the same graph: each split needs graphs of its own, or its metric scores what the "
        "model trained on"
    )


def test_features_are_checked_against_the_models_embeddings(imported) -> None:
    _, ours = imported
    good = _zinc_like([4], 3)[0]
    cases = {
        "train[0]: x column 0 holds 30; the model embeds ids 0 to 27 there (categorical, cardinalities [28])":
            {"x": torch.tensor([[1], [30], [2], [0]])},
        "train[0]: x has dtype torch.float32; the model takes categorical, cardinalities [28] (integer category "
        "ids, each column embedded)": {"x": torch.ones(4, 1)},
        "train[0]: no edge_attr, and the model reads edge features (categorical, cardinalities [4])":
            {"edge_attr": None},
        "train[0]: its pe has shape [4, 8]; the model takes rwse encodings of width 20, [4, 20] here":
            {"pe": torch.zeros(4, 8)},
    }  # fmt: skip
    for message, change in cases.items():
        bad = good.clone()
        for k, v in change.items():
            bad[k] = v
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
            dataset_from_pyg(ours, [bad], [good])
