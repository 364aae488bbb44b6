"""``from_pyg``'s positional encoding kind: never assumed, read from ``example=``'s batch or passed,
and checked against what the runtime computes for it."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

pyg_nn = pytest.importorskip("torch_geometric.nn")
import torch_geometric.transforms as T  # noqa: E402
from torch_geometric.data import Batch  # noqa: E402

from gtcompress.errors import UnsupportedModelError  # noqa: E402
from gtcompress.models.from_pyg import from_pyg  # noqa: E402
from gtcompress.preprocess.pe import rwse  # noqa: E402
from tests.models.test_from_pyg import (  # noqa: E402
    TOL,
    ExampleGPS,
    GinLapGPS,
    max_diff,
    molecules,
    ours_run,
    pyg_run,
    warm_up,
)


def encoded(b: Batch, transform: T.BaseTransform) -> Batch:
    """``b``'s graphs without repeated edges (the ring closure may repeat a tree edge), with their
    encoding computed by PyG's ``transform``."""
    dedup = T.RemoveDuplicatedEdges(reduce="max")
    return Batch.from_data_list([transform(dedup(d)) for d in b.to_data_list()])


def example_of(src: torch.nn.Module, b: Batch) -> tuple[Batch, Tensor]:
    src.eval()
    with torch.no_grad():
        return b, pyg_run(src, b)


def rwse_example() -> tuple[ExampleGPS, Batch]:
    torch.manual_seed(0)
    src = ExampleGPS()
    warm_up(src, pyg_run)
    return src, encoded(molecules([5, 1, 12, 3, 9]), T.AddRandomWalkPE(20, attr_name="pe"))


def lap_example() -> tuple[GinLapGPS, Batch]:
    torch.manual_seed(1)
    src = GinLapGPS(k=5)
    warm_up(src, pyg_run, float_x=7, k=5)
    b = molecules([6, 9, 12, 7], float_x=7, k=5)
    return src, encoded(b, T.AddLaplacianEigenvectorPE(5, attr_name="pe", is_undirected=True))


def test_a_pe_encoder_needs_its_kind() -> None:
    """The kind used to default to RWSE: a LapPE model imported so matched the PyG model on its own
    encodings, and was then served RWSE for every graph sent without one (11 off on MUTAG)."""
    with pytest.raises(ValueError) as info:
        from_pyg(GinLapGPS(k=5), readout="mean")
    assert str(info.value) == (
        "pe_kind is required for a model with a PE encoder (pe_lin, 5 columns in): the encoding is computed by a "
        "transform outside the model, and a deployment given a graph without it computes the model's kind from "
        "the edges; pass pe_kind='rwse' (AddRandomWalkPE) or pe_kind='lap' (AddLaplacianEigenvectorPE), or "
        "example=(batch, output) to read it from the batch"
    )


def test_the_example_says_rwse_and_the_import_matches_on_it() -> None:
    src, b = rwse_example()
    # the transform's encoding is the runtime's RWSE (PyG computes it in float32)
    ptr = b.ptr.numpy()
    assert float((b.pe - torch.from_numpy(rwse(b.edge_index.numpy(), ptr, 20))).abs().max()) <= 1e-5
    ours = from_pyg(src, readout="sum", example=example_of(src, b))
    assert ours.config.pe == {"rwse": 20}
    with torch.no_grad():
        assert max_diff(pyg_run(src, b), ours_run(ours, b)) <= TOL
    with pytest.raises(UnsupportedModelError) as info:
        from_pyg(src, readout="sum", pe_kind="lap", example=example_of(src, b))
    assert str(info.value) == (
        "pe_kind='lap': the example's encoding for pe_lin is RWSE (the runtime's, within 0.0001), not LapPE; "
        "pass pe_kind='rwse'"
    )


def test_an_rwse_example_with_repeated_edges_is_refused_saying_so() -> None:
    """PyG's AddRandomWalkPE counts a repeated edge in the degree but steps along it once; the runtime
    steps along it twice, so such a graph served without its encoding is answered otherwise."""
    src, _ = rwse_example()
    repeated = Batch.from_data_list(
        [T.AddRandomWalkPE(20, attr_name="pe")(d) for d in molecules([5, 1, 12, 3, 9]).to_data_list()]
    )
    with pytest.raises(UnsupportedModelError) as info:
        from_pyg(src, readout="sum", pe_kind="rwse", example=example_of(src, repeated))
    assert "; the batch repeats edges, which PyG's AddRandomWalkPE counts otherwise: remove them): " in str(info.value)


def test_a_lap_example_is_not_taken_for_rwse() -> None:
    src, b = lap_example()
    ours = from_pyg(src, readout="mean", pe_kind="lap", example=example_of(src, b))
    assert ours.config.pe == {"lap": 5}
    with pytest.raises(UnsupportedModelError, match=r"^pe_kind='rwse': the example's encoding for pe_lin differs "):
        from_pyg(src, readout="mean", pe_kind="rwse", example=example_of(src, b))
    with pytest.raises(ValueError, match=r"^pe_kind: the example's encoding for pe_lin is not RWSE as the runtime "):
        from_pyg(src, readout="mean", example=example_of(src, b))
    # under PyG's own attribute name the encoding names its kind
    named = encoded(b, T.AddLaplacianEigenvectorPE(5, is_undirected=True))
    del named.pe
    with torch.no_grad():
        want = src(named.x, named.laplacian_eigenvector_pe, named.edge_index, named.edge_attr, named.batch)
    assert from_pyg(src, readout="mean", example=(named, want)).config.pe == {"lap": 5}


def test_an_example_without_the_encoders_input_is_refused_by_name() -> None:
    """An example whose encoding is narrower than the PE encoder used to fail inside BatchNorm
    ("running_mean should contain 8 elements not 20")."""
    src, b = rwse_example()
    example = example_of(src, b)
    narrow = b.clone()
    narrow.pe = narrow.pe[:, :8]
    with pytest.raises(UnsupportedModelError) as info:
        from_pyg(src, readout="sum", pe_kind="rwse", example=(narrow, example[1]))
    assert str(info.value) == "example=: the batch's encoding has shape [30, 8], the PE encoder pe_lin takes 20 columns"
    bare = b.clone()
    del bare.pe
    with pytest.raises(
        UnsupportedModelError, match=r"^example=: the batch carries no encoding for the PE encoder pe_lin"
    ):
        from_pyg(src, readout="sum", pe_kind="rwse", example=(bare, example[1]))


def test_an_example_with_both_kinds_names_the_one_the_encoder_takes_by_its_width() -> None:
    """A batch run through AddRandomWalkPE and AddLaplacianEigenvectorPE carries both; it was refused as
    carrying "no encoding for the PE encoder" (encodings by kind: lap, rwse)."""
    src, _ = rwse_example()
    both = T.Compose([T.AddRandomWalkPE(20), T.AddLaplacianEigenvectorPE(3, is_undirected=True)])
    b = encoded(molecules([5, 9, 12, 7]), both)
    del b.pe  # (molecules' own, unnamed)
    with torch.no_grad():
        want = src(b.x, b.random_walk_pe, b.edge_index, b.edge_attr, b.batch)
    assert from_pyg(src, readout="sum", example=(b, want)).config.pe == {"rwse": 20}
    same = encoded(molecules([5, 9, 12, 7]), T.Compose([T.AddRandomWalkPE(3), T.AddLaplacianEigenvectorPE(3)]))
    del same.pe
    src3 = GinLapGPS(k=3)
    with pytest.raises(ValueError) as info:
        from_pyg(src3, readout="mean", example=(same, torch.zeros(4)))
    assert str(info.value) == (
        "pe_kind: the example's batch carries encodings of several kinds (lap (3 columns), rwse (3 columns)) and "
        "the PE encoder pe_lin takes 3 columns; pass pe_kind='rwse' (AddRandomWalkPE) or pe_kind='lap' "
        "(AddLaplacianEigenvectorPE)"
    )


def test_an_rwse_example_walked_by_edge_weight_is_refused_saying_so() -> None:
    """PyG's AddRandomWalkPE weights its walks by ``edge_weight``; the runtime, given edges only, does not."""
    src, b = rwse_example()
    graphs = b.to_data_list()
    torch.manual_seed(3)
    for d in graphs:
        d.edge_weight = torch.rand(d.num_edges) + 0.5
    weighted = Batch.from_data_list([T.AddRandomWalkPE(20, attr_name="pe")(d) for d in graphs])
    with pytest.raises(UnsupportedModelError) as info:
        from_pyg(src, readout="sum", pe_kind="rwse", example=example_of(src, weighted))
    assert (
        "; the batch has edge_weight, by which PyG's AddRandomWalkPE weights its walks and the runtime does not): "
        in str(info.value)
    )
