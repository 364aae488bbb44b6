import pytest
import torch

from gtcompress.errors import GraphValidationError
from gtcompress.graph import GraphBatch, collate, split


def _graph(n: int, e: int, seed: int, graph_y: bool = False) -> GraphBatch:
    g = torch.Generator().manual_seed(seed)
    return GraphBatch(
        x=torch.randn(n, 3, generator=g),
        edge_index=torch.randint(0, max(n, 1), (2, e), generator=g),
        edge_attr=torch.randn(e, 2, generator=g),
        y=torch.tensor([[1.0]]) if graph_y else torch.randint(0, 3, (n,), generator=g),
        pe={"rwse": torch.rand(n, 4, generator=g)},
    )


def test_collate_offsets_and_batch_vector() -> None:
    gs = [_graph(4, 6, 0), _graph(1, 0, 1), _graph(5, 9, 2)]
    b = collate(gs).validate()
    assert b.num_graphs == 3 and b.num_nodes == 10 and b.num_edges == 15
    assert b.batch.tolist() == [0] * 4 + [1] + [2] * 5
    assert torch.equal(b.edge_index[:, 6:], gs[2].edge_index + 5)
    assert b.ptr.tolist() == [0, 4, 5, 10]
    assert b.graph_sizes() == ([4, 1, 5], [6, 0, 9])
    back = split(b)
    for a, c in zip(gs, back, strict=True):
        assert torch.equal(a.x, c.x)
        assert torch.equal(a.edge_index, c.edge_index)
        assert torch.equal(a.edge_attr, c.edge_attr)
        assert torch.equal(a.y, c.y)
        assert torch.equal(a.pe["rwse"], c.pe["rwse"])


def test_graph_level_targets_collate() -> None:
    b = collate([_graph(3, 2, 0, graph_y=True), _graph(2, 2, 1, graph_y=True)])
    assert b.y.shape == (2, 1)


def test_pyg_round_trip() -> None:
    from torch_geometric.data import Batch

    gs = [_graph(4, 6, 0), _graph(3, 5, 1)]
    ours = collate(gs)
    pyg = ours.to_pyg()
    assert isinstance(pyg, Batch) and pyg.num_graphs == 2
    assert torch.equal(pyg.edge_index, ours.edge_index)
    assert torch.equal(pyg.random_walk_pe, ours.pe["rwse"])
    back = GraphBatch.from_pyg(pyg).validate()
    assert back.num_graphs == 2
    assert torch.equal(back.batch, ours.batch)
    assert torch.equal(back.x, ours.x)
    assert torch.equal(back.edge_attr, ours.edge_attr)
    assert torch.equal(back.pe["rwse"], ours.pe["rwse"])
    single = GraphBatch.from_pyg(gs[0].to_pyg())
    assert single.batch is None and torch.equal(single.edge_index, gs[0].edge_index)


def _ok() -> GraphBatch:
    return collate([_graph(4, 6, 0), _graph(3, 4, 1)])


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda g: setattr(g, "x", g.x[:, 0]), r"x: expected a 2-D tensor"),
        (lambda g: g.x.__setitem__((2, 1), float("nan")), r"x: contains NaN or Inf \(first at node 2\)"),
        (lambda g: g.x.__setitem__((0, 0), float("inf")), r"x: contains NaN or Inf"),
        (lambda g: setattr(g, "edge_index", g.edge_index.int()), r"edge_index: expected dtype int64"),
        (lambda g: setattr(g, "edge_index", g.edge_index[0]), r"edge_index: expected shape \[2, num_edges\]"),
        (lambda g: g.edge_index.__setitem__((0, 0), -1), r"edge_index: negative node index -1"),
        (lambda g: g.edge_index.__setitem__((1, 0), 7), r"node index 7 out of range for 7 nodes"),
        (lambda g: setattr(g, "edge_attr", g.edge_attr[:-1]), r"edge_attr: expected \[10, Fe\]"),
        (lambda g: setattr(g, "batch", g.batch.flip(0)), r"batch: must be sorted"),
        (lambda g: setattr(g, "batch", g.batch[:-1]), r"batch: expected shape \[7\]"),
        (lambda g: setattr(g, "batch", g.batch.int()), r"batch: expected dtype int64"),
        (lambda g: setattr(g, "num_graphs", 1), r"batch: graph ids must lie in \[0, 1\)"),
        (lambda g: g.edge_index.__setitem__((0, 0), 6), r"an edge connects two different graphs"),
        (lambda g: g.pe.__setitem__("rwse", g.pe["rwse"][:3]), r"pe\['rwse'\]: expected \[7, k\]"),
    ],
)
def test_validate_names_the_problem(mutate, match: str) -> None:
    g = _ok()
    mutate(g)
    with pytest.raises(GraphValidationError, match=match):
        g.validate()


def test_collate_rejects_mixed_inputs() -> None:
    a, b = _graph(3, 2, 0), _graph(3, 2, 1)
    b.edge_attr = None
    with pytest.raises(GraphValidationError, match="edge_attr"):
        collate([a, b])
    with pytest.raises(GraphValidationError, match="empty"):
        collate([])
    a, b = _graph(3, 2, 0), _graph(3, 2, 1)
    a.y = None  # the first graph unlabelled: b's label was dropped without a word
    with pytest.raises(GraphValidationError, match="some graphs have y and some do not"):
        collate([a, b])


def test_split_refuses_labels_it_cannot_place() -> None:
    """Graph sizes 3, 0, 0 with three labels: one per graph and one per node. Graph 0 got all three."""
    from gtcompress.graph import split

    a, e1, e2 = _graph(3, 2, 0), _graph(0, 0, 1), _graph(0, 0, 2)
    for g, label in ((a, 1.0), (e1, 2.0), (e2, 3.0)):
        g.y = torch.tensor([label])
    batch = collate([a, e1, e2])
    with pytest.raises(GraphValidationError) as info:
        split(batch)
    assert str(info.value) == "split: y has 3 rows, one per graph and one per node; pass y_per='graph' or 'node'"
    assert [float(g.y) for g in split(batch, y_per="graph")] == [1.0, 2.0, 3.0]
    assert [g.y.tolist() for g in split(batch, y_per="node")] == [[1.0, 2.0, 3.0], [], []]
