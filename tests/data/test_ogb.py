"""OGB on-disk loader: official molbace/molesol statistics, OGB's inverse edges, malformed files."""

from __future__ import annotations

import csv
import gzip
import math
import os
from pathlib import Path

import pytest
import torch

from gtcompress.data.molecules import ATOM_FEATURE_DIMS, BOND_FEATURE_DIMS
from gtcompress.data.ogb import load_ogb
from gtcompress.errors import DataFormatError


def _data_root() -> Path:
    """``$GTCOMPRESS_DATA`` or ``<repo>/../shared/data``."""
    env = os.environ.get("GTCOMPRESS_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="module")
def ogb_root() -> Path:
    root = _data_root() / "ogb"
    if not (root / "ogbg_molbace" / "raw").is_dir():
        pytest.skip(f"OGB data not found at {root} (set GTCOMPRESS_DATA)")
    return root


# ------------------------------------------------------------------------------ real datasets
def test_molbace(ogb_root: Path) -> None:
    ds = load_ogb(ogb_root / "ogbg_molbace")
    assert [len(ds[k]) for k in ("train", "val", "test")] == [1210, 151, 152]
    info = ds.info
    assert (info.name, info.task, info.out_dim, info.metric) == ("ogbg-molbace", "binary", 1, "rocauc")
    assert info.node_features.cardinalities == ATOM_FEATURE_DIMS
    assert info.edge_features is not None and info.edge_features.cardinalities == BOND_FEATURE_DIMS
    graphs = [g for v in ds.splits.values() for g in v]
    assert len(graphs) == 1513
    for g in graphs:
        ei = g.edge_index
        # OGB's add_inverse_edge: edge 2k+1 is edge 2k reversed, with the same features.
        assert torch.equal(ei[:, 1::2], ei[:, 0::2].flip(0))
        assert torch.equal(g.edge_attr[1::2], g.edge_attr[0::2])
        assert g.x.shape[1] == 9 and g.edge_attr.shape[1] == 3
        assert g.y.shape == (1, 1) and g.y.dtype == torch.float32
        g.validate()
    # Symmetric as a set too.
    g = graphs[0]
    pairs = set(map(tuple, g.edge_index.t().tolist()))
    assert pairs == {(d, s) for s, d in pairs}


def test_molesol_regression(ogb_root: Path) -> None:
    ds = load_ogb(ogb_root / "ogbg_molesol")
    assert [len(ds[k]) for k in ("train", "val", "test")] == [902, 113, 113]
    assert (ds.info.task, ds.info.metric, ds.info.out_dim) == ("regression", "rmse", 1)
    assert ds["train"][0].y.dtype == torch.float32
    assert any(float(g.y) < -1.0 for g in ds["train"])  # log-solubilities, not 0/1 labels


def test_data_root_and_name(ogb_root: Path) -> None:
    """``load_dataset("ogb:ogbg-molbace")`` passes the data root and the dashed name."""
    ds = load_ogb(ogb_root.parent, "ogbg-molbace")
    assert ds.info.name == "ogbg-molbace" and len(ds["train"]) == 1210


def test_raw_graphs_equal_smiles_featurisation(ogb_root: Path) -> None:
    """OGB's stored features are what our featuriser computes from the mapping SMILES."""
    pytest.importorskip("rdkit")
    from gtcompress.data.molecules import smiles_to_graph

    root = ogb_root / "ogbg_molbace"
    ds = load_ogb(root)
    with gzip.open(root / "split" / "scaffold" / "train.csv.gz", "rt") as fh:
        train_ids = [int(line) for line in fh if line.strip()]
    with gzip.open(root / "mapping" / "mol.csv.gz", "rt") as fh:
        smiles = [row["smiles"] for row in csv.DictReader(fh)]
    for gid, g in list(zip(train_ids, ds["train"], strict=True))[:100]:
        h = smiles_to_graph(smiles[gid])
        assert torch.equal(g.x, h.x), gid
        assert torch.equal(g.edge_index, h.edge_index), gid
        assert torch.equal(g.edge_attr, h.edge_attr), gid


# ------------------------------------------------------------------------------ synthetic layout
def _gz(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode()))


def _toy(root: Path, labels: str = "1,\n0,1\n", edges: str = "0,1\n0,1\n1,2\n") -> Path:
    """Two molecules (2 and 3 atoms, 1 and 2 bonds), two tasks with one missing label; ``labels``
    and ``edges`` are theirs. A third, the first again, fills the test split (an empty one is an error)."""
    raw = root / "raw"
    _gz(raw / "edge.csv.gz", edges + "0,1\n")
    _gz(raw / "edge-feat.csv.gz", "0,0,0\n1,0,0\n0,0,1\n0,0,0\n")
    _gz(raw / "node-feat.csv.gz", "5,0,1,5,3,0,2,0,0\n" * 2 + "7,0,2,5,1,0,2,0,0\n" * 3 + "5,0,1,5,3,0,2,0,0\n" * 2)
    _gz(raw / "num-node-list.csv.gz", "2\n3\n2\n")
    _gz(raw / "num-edge-list.csv.gz", "1\n2\n1\n")
    _gz(raw / "graph-label.csv.gz", labels + "1,1\n")
    for name, ids in (("train", "0\n"), ("valid", "1\n"), ("test", "2\n")):
        _gz(root / "split" / "scaffold" / f"{name}.csv.gz", ids)
    return root


def test_synthetic_inverse_edges_and_nan_labels(tmp_path: Path) -> None:
    ds = load_ogb(_toy(tmp_path / "ogbg_moltoy"))
    assert ds.info.name == "ogbg-moltoy"
    assert (ds.info.task, ds.info.out_dim) == ("binary", 2)  # unknown name: inferred from 0/1 labels
    (g0,), (g1,) = ds["train"], ds["val"]
    assert len(ds["test"]) == 1
    assert g0.edge_index.tolist() == [[0, 1], [1, 0]]
    assert g1.edge_index.tolist() == [[0, 1, 1, 2], [1, 0, 2, 1]]
    assert g1.edge_attr.tolist() == [[1, 0, 0], [1, 0, 0], [0, 0, 1], [0, 0, 1]]
    assert g0.y[0, 0].item() == 1.0 and math.isnan(g0.y[0, 1].item())
    assert g1.y.tolist() == [[0.0, 1.0]]


def test_synthetic_regression_inferred(tmp_path: Path) -> None:
    ds = load_ogb(_toy(tmp_path / "toy", labels="0.5,1\n-2.25,0\n"))
    assert (ds.info.task, ds.info.metric) == ("regression", "rmse")


def test_synthetic_errors(tmp_path: Path) -> None:
    root = _toy(tmp_path / "a", edges="0,1\n0,1\n1,3\n")
    with pytest.raises(DataFormatError, match=r"edge\.csv\.gz, line 3: edge \[1, 3\] of graph 1 outside its 3 nodes"):
        load_ogb(root)
    root = _toy(tmp_path / "b")
    _gz(root / "raw" / "node-feat.csv.gz", "5,0,1,5,3,0,2,0,0\n" * 4 + "5,9,1,5,3,0,2,0,0\n" * 3)
    with pytest.raises(DataFormatError, match=r"node-feat\.csv\.gz, line 5: .* outside the OGB feature cardinalities"):
        load_ogb(root)
    root = _toy(tmp_path / "c")
    _gz(root / "raw" / "num-node-list.csv.gz", "2\nx\n")
    with pytest.raises(DataFormatError, match=r"num-node-list\.csv\.gz, line 2: 'x' is not an integer"):
        load_ogb(root)
    root = _toy(tmp_path / "d")
    (root / "raw" / "edge-feat.csv.gz").unlink()
    with pytest.raises(DataFormatError, match=r"missing file: .*edge-feat\.csv\.gz"):
        load_ogb(root)
    with pytest.raises(DataFormatError, match="not found"):
        load_ogb(tmp_path / "nowhere")
    with pytest.raises(DataFormatError, match="not found"):
        load_ogb(tmp_path, "ogbg-molnothing")


def test_errors_name_the_line_even_after_blank_lines(tmp_path: Path) -> None:
    """A row index was reported as the line: off by the empty lines above it."""
    root = _toy(tmp_path / "a", edges="0,1\n\n0,1\n\n1,3\n")
    with pytest.raises(DataFormatError, match=r"edge\.csv\.gz, line 5: edge \[1, 3\] of graph 1 outside its 3 nodes"):
        load_ogb(root)
    root = _toy(tmp_path / "b")
    split = root / "split" / "scaffold" / "test.csv.gz"
    _gz(split, "\n\n7\n")
    with pytest.raises(DataFormatError) as err:
        load_ogb(root)
    assert str(err.value) == f"{split}, line 3: graph id 7 outside 0..2"


def test_an_infinite_label_is_refused(tmp_path: Path) -> None:
    """An empty field is a missing label (NaN, masked by the loss and metrics); "inf" was read as a
    target too, and scored as an infinite MAE."""
    root = _toy(tmp_path / "a", labels="0.5,1\n-inf,0\n")
    path = root / "raw" / "graph-label.csv.gz"
    with pytest.raises(DataFormatError) as err:
        load_ogb(root)
    assert str(err.value) == f"{path}, line 2: label [-inf, 0.0] is infinite"


def test_a_graph_without_nodes_is_refused(tmp_path: Path) -> None:
    """TU files and SMILES without atoms are refused, and so is such a graph at serving; from OGB
    files it was loaded, trained on and scored as its readout's bias."""
    root = _toy(tmp_path / "toy")
    _gz(root / "raw" / "num-node-list.csv.gz", "2\n3\n0\n")
    _gz(root / "raw" / "num-edge-list.csv.gz", "1\n2\n0\n")
    _gz(root / "raw" / "edge.csv.gz", "0,1\n0,1\n1,2\n")
    _gz(root / "raw" / "edge-feat.csv.gz", "0,0,0\n1,0,0\n0,0,1\n")
    _gz(root / "raw" / "node-feat.csv.gz", "5,0,1,5,3,0,2,0,0\n" * 5)
    path = root / "raw" / "num-node-list.csv.gz"
    with pytest.raises(DataFormatError) as err:
        load_ogb(root)
    assert str(err.value) == f"{path}, line 3: graph 2 has no nodes; every graph needs at least one"


def test_split_overlap_is_an_error(tmp_path: Path) -> None:
    """Each error names the graph id (as ogbg-molhiv's reader of the same files did, now one reader)."""
    root = _toy(tmp_path / "toy")
    path = root / "split" / "scaffold" / "test.csv.gz"
    _gz(path, "0\n")
    with pytest.raises(DataFormatError) as err:
        load_ogb(root)
    assert str(err.value) == f"{path}: graph id 0 is also in another split"
    _gz(path, "2\n\n2\n")
    with pytest.raises(DataFormatError) as err:
        load_ogb(root)
    assert str(err.value) == f"{path}: lists graph id 2 more than once"


def test_a_split_file_without_rows_is_an_error(tmp_path: Path) -> None:
    """An empty split failed only in training, as ``torch.cat(): expected a non-empty list``."""
    root = _toy(tmp_path / "toy")
    _gz(root / "split" / "scaffold" / "valid.csv.gz", "")
    path = root / "split" / "scaffold" / "valid.csv.gz"
    with pytest.raises(DataFormatError) as err:
        load_ogb(root)
    assert str(err.value) == f"{path}: no graph ids, so the val split is empty; every split needs at least one"


def test_gzip_is_required_format(tmp_path: Path) -> None:
    root = _toy(tmp_path / "toy")
    (root / "raw" / "edge.csv.gz").write_bytes(b"not gzip")
    with pytest.raises(DataFormatError, match=r"edge\.csv\.gz: unreadable"):
        load_ogb(root)


def test_a_damaged_gzip_label_file_names_the_file(tmp_path: Path) -> None:
    """A broken deflate stream raises ``zlib.error`` (not an OSError): it escaped as a traceback."""
    root = _toy(tmp_path / "toy")
    data = bytearray(gzip.compress(b"1,\n0,1\n1,1\n", compresslevel=0))
    data[11] ^= 0xFF  # the first stored block's length no longer matches its complement
    (root / "raw" / "graph-label.csv.gz").write_bytes(bytes(data))
    with pytest.raises(DataFormatError, match=r"graph-label\.csv\.gz: unreadable \(.*invalid stored block lengths"):
        load_ogb(root)


def test_a_dataset_folder_of_another_known_dataset_is_refused(tmp_path: Path) -> None:
    """``--data ogb:ogbg_molbace --data-root .../ogbg_molbbbp`` trained and reported on BBBP's
    molecules under BACE's name: both binary, one task, nothing in the files tells them apart."""
    root = _toy(tmp_path / "ogbg_molbbbp", labels="1,0\n0,1\n")
    with pytest.raises(DataFormatError) as err:
        load_ogb(root, "ogbg-molbace")
    assert str(err.value) == (
        f"{root} holds ogbg-molbbbp, not the requested ogbg-molbace; point the data root at the ogbg-molbace folder"
    )
    assert load_ogb(root, "ogbg_molbbbp").info.name == "ogbg-molbbbp"  # its own name, either spelling


def test_a_known_binary_dataset_with_real_valued_labels_is_refused(tmp_path: Path) -> None:
    """ESOL's log-solubilities loaded as ogbg-molbace trained BCE on them and reported a ROC-AUC."""
    root = _toy(tmp_path / "mine", labels="-2.06,0\n0,1\n")
    with pytest.raises(DataFormatError) as err:
        load_ogb(root, "ogbg-molbace")
    assert str(err.value) == (
        f"{root / 'raw' / 'graph-label.csv.gz'}: label -2.06 is not 0 or 1, but ogbg-molbace is a binary "
        "classification dataset; is the data root the folder of another (regression) dataset?"
    )


def test_the_real_esol_folder_asked_for_as_molbace_is_refused(ogb_root: Path) -> None:
    with pytest.raises(DataFormatError, match=r"holds ogbg-molesol, not the requested ogbg-molbace"):
        load_ogb(ogb_root / "ogbg_molesol", "ogbg_molbace")


KNOWN_METRICS = [("ogbg_molpcba", "ap"), ("ogbg_molmuv", "ap"), ("ogbg_moltox21", "rocauc")]


@pytest.mark.parametrize(("folder", "metric"), KNOWN_METRICS)
def test_a_known_dataset_is_scored_by_ogbs_own_metric(tmp_path: Path, folder: str, metric: str) -> None:
    ds = load_ogb(_toy(tmp_path / folder))
    assert (ds.info.task, ds.info.metric) == ("binary", metric)
