"""OGB molecule featurisation (hand-checked rows, OGB's own examples) and the molhiv loader."""

from __future__ import annotations

import gzip
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from gtcompress.data import molecules
from gtcompress.data.molecules import (
    ALLOWABLE_FEATURES,
    ATOM_FEATURE_DIMS,
    BOND_FEATURE_DIMS,
    load_molhiv,
    molhiv_files,
    smiles_to_graph,
    smiles_to_graphs,
)
from gtcompress.data.split_files import read_split_ids, split_paths
from gtcompress.errors import DataFormatError, GTCompressError

pytest.importorskip("rdkit", reason="molecule featurisation needs rdkit (pip install 'gtcompress[chem]')")


def _data_root() -> Path:
    """``$GTCOMPRESS_DATA`` or ``<repo>/../shared/data``."""
    env = os.environ.get("GTCOMPRESS_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="module")
def hiv_root() -> Path:
    root = _data_root() / "ogbg_molhiv"
    if not (root / "HIV.csv.gz").is_file():
        pytest.skip(f"ogbg-molhiv data not found at {root} (set GTCOMPRESS_DATA)")
    return root


def test_feature_dims_match_ogb() -> None:
    assert ATOM_FEATURE_DIMS == [119, 5, 12, 12, 10, 6, 6, 2, 2]
    assert BOND_FEATURE_DIMS == [5, 6, 2]
    assert ALLOWABLE_FEATURES["possible_hybridization_list"] == ["SP", "SP2", "SP3", "SP3D", "SP3D2", "misc"]


def test_benzene() -> None:
    g = smiles_to_graph("c1ccccc1")
    assert g.num_nodes == 6 and g.num_edges == 12
    assert g.x.dtype == torch.int64 and g.x.shape == (6, 9)
    assert bool((g.x[:, 0] == 5).all())  # atomic number 6 -> index 5
    assert bool((g.x[:, 7] == 1).all()) and bool((g.x[:, 8] == 1).all())  # aromatic, in ring
    assert g.x[0].tolist() == [5, 0, 3, 5, 1, 0, 1, 1, 1]  # degree 3 (2 C + H), 1 H, SP2
    assert g.edge_attr.shape == (12, 3) and g.edge_attr.tolist() == [[3, 0, 1]] * 12  # aromatic, conjugated
    # Each bond is a directed pair (i, j), (j, i) next to each other.
    assert torch.equal(g.edge_index[:, 0::2], g.edge_index[:, 1::2].flip(0))
    g.validate()


def test_ethanol_hand_checked() -> None:
    g = smiles_to_graph("CCO")
    # [atomic-1, chirality, total degree, charge+5, total H, radicals, hybridization, aromatic, ring]
    assert g.x.tolist() == [
        [5, 0, 4, 5, 3, 0, 2, 0, 0],  # CH3: degree 4 (1 C + 3 H), SP3 -> 2
        [5, 0, 4, 5, 2, 0, 2, 0, 0],  # CH2
        [7, 0, 2, 5, 1, 0, 2, 0, 0],  # OH: atomic number 8 -> 7
    ]
    assert g.edge_index.tolist() == [[0, 1, 1, 2], [1, 0, 2, 1]]
    assert g.edge_attr.tolist() == [[0, 0, 0]] * 4  # single, no stereo, not conjugated


def test_ogb_docstring_example() -> None:
    """The example in ogb/utils/features.py: chiral carbon and an E double bond."""
    g = smiles_to_graph("Cl[C@H](/C=C/C)Br")
    assert g.x[1].tolist() == [5, 2, 4, 5, 1, 0, 2, 0, 0]
    assert g.edge_attr[2 * 2].tolist() == [1, 2, 0]  # bond 2 -> directed edges 4 and 5


def test_charge_and_misc_buckets() -> None:
    g = smiles_to_graph("[NH4+].[Cl-]")
    assert g.num_edges == 0 and g.edge_index.shape == (2, 0) and g.edge_attr.shape == (0, 3)
    assert g.x[0, 3].item() == 6 and g.x[1, 3].item() == 4  # +1 -> 6, -1 -> 4
    assert smiles_to_graph("[Og]").x[0, 0].item() == 117  # atomic number 118, the last real index


def test_unparsable_smiles_names_it() -> None:
    with pytest.raises(DataFormatError, match=r"unparsable SMILES 'C1CC\(\('$"):
        smiles_to_graph("C1CC((")
    with pytest.raises(DataFormatError, match="has no atoms"):
        smiles_to_graph("")
    with pytest.raises(DataFormatError, match=r"cannot be sanitised"):
        smiles_to_graph("c1cccc1")  # five aromatic carbons: cannot be kekulised


def test_valence_failure_uses_partial_sanitisation() -> None:
    """HIV row 137: an Al complex modern RDKit rejects; featurised, not dropped."""
    smi = "O=C1O[Al]23(OC1=O)(OC(=O)C(=O)O2)OC(=O)C(=O)O3"
    g = smiles_to_graph(smi)
    assert g.num_nodes == 19 and g.x[3, 0].item() == 12  # Al: atomic number 13
    graphs, partial = smiles_to_graphs(["CCO", smi])
    assert partial == [1] and len(graphs) == 2


def test_batch_equals_single() -> None:
    smiles = ["CCO", "c1ccccc1O", "CC(=O)[O-].[Na+]", "C#N"]
    graphs, partial = smiles_to_graphs(smiles, chunk=3)
    assert partial == []
    for smi, g in zip(smiles, graphs, strict=True):
        h = smiles_to_graph(smi)
        assert torch.equal(g.x, h.x) and torch.equal(g.edge_index, h.edge_index)
        assert torch.equal(g.edge_attr, h.edge_attr)
    with pytest.raises(DataFormatError, match=r"^row 7: unparsable SMILES"):
        smiles_to_graphs(["CCO", "xyz("], where=lambda i: f"row {i + 6}")


def test_missing_rdkit_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rdkit", None)
    with pytest.raises(GTCompressError, match=r"pip install 'gtcompress\[chem\]'"):
        smiles_to_graph("CCO")


# ------------------------------------------------------------------------------ molhiv
def _write_gz(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))


def _toy_hiv(root: Path, smiles: list[str], labels: list[int], splits: dict[str, list[int]]) -> Path:
    rows = ["smiles,activity,HIV_active"] + [f"{s},CI,{y}" for s, y in zip(smiles, labels, strict=True)]
    _write_gz(root / "HIV.csv.gz", rows)
    for name, idx in splits.items():
        _write_gz(root / "split_recomputed" / "scaffold" / f"{name}.csv.gz", [str(i) for i in idx])
    return root


def test_molhiv_synthetic(tmp_path: Path) -> None:
    smiles = ["CCO", "c1ccccc1", "CC(=O)O", "C#N", "CN", "O"]
    root = _toy_hiv(tmp_path / "hiv", smiles, [0, 1, 0, 0, 1, 0], {"train": [0, 1, 2], "valid": [3, 4], "test": [5]})
    ds = load_molhiv(root, cache=False)
    assert [len(ds[k]) for k in ("train", "val", "test")] == [3, 2, 1]
    assert ds["train"][1].num_nodes == 6
    assert ds["val"][1].y.tolist() == [[1.0]] and ds["val"][1].y.dtype == torch.float32
    info = ds.info
    assert (info.task, info.out_dim, info.metric) == ("binary", 1, "rocauc")
    assert info.node_features.cardinalities == ATOM_FEATURE_DIMS and info.edge_features is not None
    assert info.edge_features.cardinalities == BOND_FEATURE_DIMS


def test_molhiv_limit_keeps_a_positive(tmp_path: Path) -> None:
    smiles = ["C", "CC", "CCC", "CCCC", "CO", "CCO"]
    labels = [0, 0, 0, 0, 1, 0]
    root = _toy_hiv(tmp_path / "hiv", smiles, labels, {"train": [0], "valid": [1, 2, 3, 4], "test": [5]})
    ds = load_molhiv(root, limit=2, cache=False)
    assert [g.y.item() for g in ds["val"]] == [0.0, 1.0]  # rows 1 and 4 (the positive swapped in)
    assert [g.num_nodes for g in ds["val"]] == [2, 2]
    ds = load_molhiv(root, limit=(1, 1, 0), cache=False)  # per split; a single kept molecule stays
    assert [len(ds[k]) for k in ("train", "val", "test")] == [1, 1, 0]


def test_molhiv_csv_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """A CSV saved by Excel or Windows tools starts with a UTF-8 BOM: the header's first column read
    as '\\ufeffsmiles' and the file was refused as lacking a smiles column."""
    root = _toy_hiv(tmp_path / "hiv", ["C"], [0], {"train": [0, 1], "valid": [2], "test": [3]})
    (root / "HIV.csv.gz").unlink()
    text = "smiles,activity,HIV_active\nC,CI,0\nCC,CI,1\nCCC,CI,0\nCO,CI,1\n"
    (root / "HIV.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    ds = load_molhiv(root, cache=False)
    assert [g.y.item() for g in ds["train"]] == [0.0, 1.0] and ds["train"][1].num_nodes == 2


def test_molhiv_bad_smiles_names_row(tmp_path: Path) -> None:
    splits = {"train": [0, 1], "valid": [2], "test": [3]}  # no split empty: that is an error of its own
    root = _toy_hiv(tmp_path / "hiv", ["CCO", "C1CC((", "C", "CC"], [0, 1, 0, 1], splits)
    with pytest.raises(DataFormatError, match=r"HIV\.csv\.gz, row 1 \(line 3\): unparsable SMILES 'C1CC\(\('"):
        load_molhiv(root, cache=False)


def test_molhiv_bad_split_files(tmp_path: Path) -> None:
    root = _toy_hiv(tmp_path / "a", ["C", "CC"], [0, 1], {"train": [0], "valid": [0], "test": [1]})
    with pytest.raises(DataFormatError, match=r"valid\.csv\.gz: row id 0 is also in another split"):
        load_molhiv(root, cache=False)
    root = _toy_hiv(tmp_path / "b", ["C", "CC"], [0, 1], {"train": [0], "valid": [5], "test": [1]})
    with pytest.raises(
        DataFormatError, match=r"valid\.csv\.gz, line 1: row id 5 outside 0\.\.1 \(HIV\.csv\.gz has 2 rows\)"
    ):
        load_molhiv(root, cache=False)
    (root / "split_recomputed" / "scaffold" / "test.csv.gz").unlink()
    with pytest.raises(DataFormatError, match=r"missing file: .*test\.csv\.gz"):
        load_molhiv(root, cache=False)
    with pytest.raises(DataFormatError) as e:  # a data root of another dataset (TU/): say what it must hold
        load_molhiv(tmp_path / "nowhere")
    assert str(e.value) == (
        f"missing file: {tmp_path / 'nowhere' / 'HIV.csv.gz'}; the data root (--data-root, data.root) must hold "
        "ogbg_molhiv/ (as shared/data does) or HIV.csv.gz itself"
    )


def test_molhiv_damaged_gzip_names_the_file(tmp_path: Path) -> None:
    """A broken deflate stream raises ``zlib.error`` (not an OSError): it escaped as a traceback."""
    root = _toy_hiv(tmp_path / "hiv", ["C", "CC", "CCC"], [0, 1, 0], {"train": [0], "valid": [1], "test": [2]})
    data = bytearray(gzip.compress(b"smiles,activity,HIV_active\nC,CI,0\n", compresslevel=0))
    data[11] ^= 0xFF  # the first stored block's length no longer matches its complement
    (root / "HIV.csv.gz").write_bytes(bytes(data))
    with pytest.raises(DataFormatError, match=r"HIV\.csv\.gz: unreadable \(.*invalid stored block lengths"):
        load_molhiv(root, cache=False)


def test_molhiv_files_of_a_data_root_are_the_files_the_loader_reads(tmp_path: Path) -> None:
    """``load_molhiv(data_root)`` reads ``data_root/ogbg_molhiv``, but ``molhiv_files(data_root)``
    listed nothing there: ``gtc pipeline``'s cache key then held no molhiv file, and a changed CSV or
    split file reused the models and metrics of the old one."""
    folder = _toy_hiv(
        tmp_path / "ogbg_molhiv", ["C", "CC", "CCC"], [0, 1, 0], {"train": [0], "valid": [1], "test": [2]}
    )
    split = folder / "split_recomputed" / "scaffold"
    expected = [folder / "HIV.csv.gz", split / "test.csv.gz", split / "train.csv.gz", split / "valid.csv.gz"]
    assert molhiv_files(folder) == expected
    assert molhiv_files(tmp_path) == expected  # the data root, as load_molhiv takes it
    from gtcompress.pipeline.run import _data_files

    listed = [entry[0] for entry in _data_files("molhiv", str(tmp_path))[1:]]
    assert listed == [str(p) for p in expected]


def test_molhiv_split_file_without_rows_is_an_error(tmp_path: Path) -> None:
    """An empty split failed only in training, as ``torch.cat(): expected a non-empty list``."""
    root = _toy_hiv(tmp_path / "hiv", ["C", "CC"], [0, 1], {"train": [0], "valid": [], "test": [1]})
    with pytest.raises(DataFormatError) as err:
        load_molhiv(root, cache=False)
    path = root / "split_recomputed" / "scaffold" / "valid.csv.gz"
    assert str(err.value) == f"{path}: no row ids, so the val split is empty; every split needs at least one"


def test_molhiv_real_limit_and_cache(hiv_root: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    with pytest.warns(UserWarning, match=r"1 HIV SMILES fail RDKit's valence check \(rows \[137\]\)"):
        ds = load_molhiv(hiv_root, limit=50, cache_dir=cache_dir)
    assert [len(ds[k]) for k in ("train", "val", "test")] == [50, 50, 50]
    for split in ("val", "test"):
        assert any(g.y.item() == 1.0 for g in ds[split]), f"{split} lost its positives"
    assert len(list(cache_dir.glob("ogbg-molhiv-*.pt"))) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # served from the cache: no featurisation, no warning
        again = load_molhiv(hiv_root, limit=50, cache_dir=cache_dir)
    for split in ds.splits:
        for a, b in zip(ds[split], again[split], strict=True):
            assert torch.equal(a.x, b.x) and torch.equal(a.edge_index, b.edge_index) and torch.equal(a.y, b.y)
    # The split files are disjoint, and so are the limited selections drawn from them.
    smiles, labels = molecules._read_hiv_csv(hiv_root / "HIV.csv.gz")
    assert len(smiles) == 41127 and int(labels.sum()) == 1443
    paths = split_paths(hiv_root / "split_recomputed" / "scaffold")
    full = read_split_ids(paths, len(smiles), "row id")
    assert [len(v) for v in full.values()] == [32901, 4113, 4113]
    chosen = [set(molecules._limit_split(v, labels, 50).tolist()) for v in full.values()]
    assert not (chosen[0] & chosen[1] or chosen[0] & chosen[2] or chosen[1] & chosen[2])
    assert sum(int(labels[list(c)].sum()) for c in chosen) == int(
        sum(g.y.item() for v in ds.splits.values() for g in v)
    )
    assert np.all([g.x.shape[1] == 9 for g in ds["train"]])


def test_molhiv_cache_sees_a_changed_file_of_the_same_size_and_mtime(tmp_path: Path) -> None:
    """The cache was keyed on each file's size and mtime: a CSV with a label fixed in place and its
    timestamp kept (``cp -p``, ``rsync -a``, ``tar x``, or a coarse-mtime file system) loaded the old
    labels from the cache without a word. A cache hit must equal a fresh read."""
    root = _toy_hiv(tmp_path / "hiv", ["C"], [0], {"train": [0, 1], "valid": [2], "test": [3]})
    (root / "HIV.csv.gz").unlink()
    csv_path = root / "HIV.csv"  # plain text: the relabelled file keeps its size byte for byte
    csv_path.write_text("smiles,activity,HIV_active\nC,CI,0\nCC,CI,1\nCCC,CI,0\nCO,CI,1\n")
    cache_dir = tmp_path / "cache"
    assert [g.y.item() for g in load_molhiv(root, cache_dir=cache_dir)["train"]] == [0.0, 1.0]
    stat = csv_path.stat()
    csv_path.write_text("smiles,activity,HIV_active\nC,CI,1\nCC,CI,1\nCCC,CI,0\nCO,CI,1\n")
    os.utime(csv_path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (csv_path.stat().st_size, csv_path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert [g.y.item() for g in load_molhiv(root, cache_dir=cache_dir)["train"]] == [1.0, 1.0]
    assert len(list(cache_dir.glob("ogbg-molhiv-*.pt"))) == 2  # one file per content, none overwritten
