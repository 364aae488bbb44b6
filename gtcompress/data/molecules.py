"""Molecules as graphs with OGB's atom and bond features, and the ogbg-molhiv loader.

The featurisation reproduces ``ogb.utils.features`` (``atom_to_feature_vector``,
``bond_to_feature_vector``, ``smiles2graph``) value for value, so models embed atoms exactly as
OGB's ``AtomEncoder``/``BondEncoder`` do and results compare with the OGB leaderboards. We do not
import ``ogb`` itself: it pulls pandas and scikit-learn and checks its version over the network
at import time.

Atoms get 9 categorical columns, bonds 3; a value outside OGB's list falls into the list's last
("misc") entry, as OGB's ``safe_index`` does. Each bond becomes two directed edges ``(i, j), (j, i)``
next to each other with the same features, the order ``smiles2graph`` produces.

Two deliberate deviations, both for molecules OGB's own code would crash on:

- RDKit chirality tags newer than OGB (``CHI_TETRAHEDRAL``, ``CHI_SQUAREPLANAR``, ...) map to
  "misc", and bond stereo ``STEREOATROPCW/CCW`` to the last stereo value (``STEREOANY``; the stereo
  list has no misc entry);
- a SMILES that parses but fails RDKit's valence check (7 Al/B/Ge complexes in HIV that modern
  RDKit rejects; older RDKit, with which OGB was built, accepted them) is featurised from a
  partially sanitised molecule: every sanitisation step except the valence check.

The molhiv loader stays beside the featurisation because its cache is keyed on the featurisation's
version (``_HIV_VERSION``) and its tests reach both; the two together run a little past 500 lines.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import gzip
import hashlib
import io
import warnings
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gtcompress.data.base import DatasetInfo, FeatureSpec, GraphDataset
from gtcompress.data.cache import cached
from gtcompress.data.split_files import read_split_ids, split_paths
from gtcompress.errors import DataFormatError, GTCompressError
from gtcompress.graph import GraphBatch

__all__ = [
    "ALLOWABLE_FEATURES",
    "ATOM_FEATURE_DIMS",
    "BOND_FEATURE_DIMS",
    "atom_feature_spec",
    "bond_feature_spec",
    "featurise_smiles",
    "load_molhiv",
    "smiles_to_graph",
    "smiles_to_graphs",
]

# ogb.utils.features.allowable_features, verbatim (list order defines the category index).
ALLOWABLE_FEATURES: dict[str, list[Any]] = {
    "possible_atomic_num_list": [*range(1, 119), "misc"],
    "possible_chirality_list": [
        "CHI_UNSPECIFIED",
        "CHI_TETRAHEDRAL_CW",
        "CHI_TETRAHEDRAL_CCW",
        "CHI_OTHER",
        "misc",
    ],
    "possible_degree_list": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, "misc"],
    "possible_formal_charge_list": [-5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, "misc"],
    "possible_numH_list": [0, 1, 2, 3, 4, 5, 6, 7, 8, "misc"],
    "possible_number_radical_e_list": [0, 1, 2, 3, 4, "misc"],
    "possible_hybridization_list": ["SP", "SP2", "SP3", "SP3D", "SP3D2", "misc"],
    "possible_is_aromatic_list": [False, True],
    "possible_is_in_ring_list": [False, True],
    "possible_bond_type_list": ["SINGLE", "DOUBLE", "TRIPLE", "AROMATIC", "misc"],
    "possible_bond_stereo_list": [
        "STEREONONE",
        "STEREOZ",
        "STEREOE",
        "STEREOCIS",
        "STEREOTRANS",
        "STEREOANY",
    ],
    "possible_is_conjugated_list": [False, True],
}
_ATOM_LISTS = (
    "possible_atomic_num_list",
    "possible_chirality_list",
    "possible_degree_list",
    "possible_formal_charge_list",
    "possible_numH_list",
    "possible_number_radical_e_list",
    "possible_hybridization_list",
    "possible_is_aromatic_list",
    "possible_is_in_ring_list",
)
_BOND_LISTS = ("possible_bond_type_list", "possible_bond_stereo_list", "possible_is_conjugated_list")
ATOM_FEATURE_DIMS: list[int] = [len(ALLOWABLE_FEATURES[k]) for k in _ATOM_LISTS]  # [119,5,12,12,10,6,6,2,2]
BOND_FEATURE_DIMS: list[int] = [len(ALLOWABLE_FEATURES[k]) for k in _BOND_LISTS]  # [5, 6, 2]

_HIV_FILES = ("HIV.csv.gz", "HIV.csv")
_HIV_VERSION = 1  # bump when the featurisation changes: it is part of the cache key


def atom_feature_spec() -> FeatureSpec:
    """The node :class:`FeatureSpec` of OGB molecule graphs (9 categorical columns)."""
    return FeatureSpec("categorical", len(ATOM_FEATURE_DIMS), list(ATOM_FEATURE_DIMS))


def bond_feature_spec() -> FeatureSpec:
    """The edge :class:`FeatureSpec` of OGB molecule graphs (3 categorical columns)."""
    return FeatureSpec("categorical", len(BOND_FEATURE_DIMS), list(BOND_FEATURE_DIMS))


# ---------------------------------------------------------------------------------------- rdkit
def _rdkit() -> Any:
    """``rdkit.Chem``, imported on first use so that gtcompress works without the chem extra."""
    try:
        from rdkit import Chem
    except ImportError as exc:
        raise GTCompressError(
            "molecule datasets need RDKit, which is not installed: pip install 'gtcompress[chem]'"
        ) from exc
    return Chem


def _rdkit_version() -> str:
    _rdkit()
    from rdkit import rdBase

    return str(rdBase.rdkitVersion)


def _safe_index(values: list[Any], value: Any) -> int:
    return values.index(value) if value in values else len(values) - 1


@functools.cache
def _enum_tables() -> dict[str, np.ndarray]:
    """RDKit enum int -> OGB index, built from the enum *names* that OGB compares against.

    Names, not ints, because RDKit renumbers (``SP2D`` was inserted before ``SP3D``).
    """
    from rdkit.Chem import rdchem

    def table(enum: Any, key: str) -> np.ndarray:
        values = dict(enum.values)
        # One extra slot, misc: enum values added by a future RDKit clip onto it (see _lookup).
        out = np.full(max(values) + 2, len(ALLOWABLE_FEATURES[key]) - 1, dtype=np.int64)
        for i, member in values.items():
            out[i] = _safe_index(ALLOWABLE_FEATURES[key], str(member).rsplit(".", 1)[-1])
        return out

    return {
        "chirality": table(rdchem.ChiralType, "possible_chirality_list"),
        "hybridization": table(rdchem.HybridizationType, "possible_hybridization_list"),
        "bond_type": table(rdchem.BondType, "possible_bond_type_list"),
        "bond_stereo": table(rdchem.BondStereo, "possible_bond_stereo_list"),
    }


def _lookup(table: np.ndarray, values: np.ndarray) -> np.ndarray:
    """OGB index of RDKit enum ints; unknown (larger) ints hit the table's trailing misc slot."""
    return table[np.minimum(values, len(table) - 1)]


def _bucket(values: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Index in ``[lo..hi, misc]``: ``v - lo`` inside the range, ``hi - lo + 1`` outside."""
    return np.where((values >= lo) & (values <= hi), values - lo, hi - lo + 1)


def _parse(smiles: str) -> tuple[Any, bool]:
    """(molecule, partially_sanitised); raise DataFormatError if it cannot be featurised."""
    chem = _rdkit()
    from rdkit import rdBase

    with rdBase.BlockLogs():  # RDKit logs every failure to stderr; we raise our own error
        mol = chem.MolFromSmiles(smiles)
        if mol is not None:
            return mol, False
        mol = chem.MolFromSmiles(smiles, sanitize=False)
        if mol is None:
            raise DataFormatError(f"unparsable SMILES {smiles!r}")
        try:
            mol.UpdatePropertyCache(strict=False)
            failed = chem.SanitizeMol(
                mol,
                chem.SanitizeFlags.SANITIZE_ALL ^ chem.SanitizeFlags.SANITIZE_PROPERTIES,
                catchErrors=True,
            )
        except Exception as exc:  # RDKit raises its own exception types
            raise DataFormatError(f"SMILES {smiles!r} cannot be sanitised: {exc}") from exc
        if failed != chem.SanitizeFlags.SANITIZE_NONE:
            raise DataFormatError(f"SMILES {smiles!r} cannot be sanitised (step {failed} failed)")
    return mol, True


_AtomRow = tuple[int, int, int, int, int, int, int, bool, bool]
_BondRow = tuple[int, int, int, int, bool]


def _raw_rows(mol: Any) -> tuple[list[_AtomRow], list[_BondRow]]:
    """The RDKit values OGB's features are made of, one tuple per atom / bond (the slow part:
    one Python call per value, so nothing else is done per atom)."""
    atoms = [
        (
            a.GetAtomicNum(),
            int(a.GetChiralTag()),
            a.GetTotalDegree(),
            a.GetFormalCharge(),
            a.GetTotalNumHs(),
            a.GetNumRadicalElectrons(),
            int(a.GetHybridization()),
            a.GetIsAromatic(),
            a.IsInRing(),
        )
        for a in mol.GetAtoms()
    ]
    bonds = [
        (
            b.GetBeginAtomIdx(),
            b.GetEndAtomIdx(),
            int(b.GetBondType()),
            int(b.GetStereo()),
            b.GetIsConjugated(),
        )
        for b in mol.GetBonds()
    ]
    return atoms, bonds


def _encode(atoms: list[_AtomRow], bonds: list[_BondRow]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw rows (of one molecule or many, concatenated) -> OGB indices, vectorised.

    Returns x ``[N, 9]``, the bond endpoints interleaved as directed edges ``[2, 2B]`` (ids as
    given: local to each molecule) and edge_attr ``[2B, 3]``, all int64.
    """
    t = _enum_tables()
    raw = np.array(atoms, dtype=np.int64).reshape(-1, 9)
    x = np.stack(
        [
            _bucket(raw[:, 0], 1, 118),
            _lookup(t["chirality"], raw[:, 1]),
            _bucket(raw[:, 2], 0, 10),
            _bucket(raw[:, 3], -5, 5),
            _bucket(raw[:, 4], 0, 8),
            _bucket(raw[:, 5], 0, 4),
            _lookup(t["hybridization"], raw[:, 6]),
            raw[:, 7],
            raw[:, 8],
        ],
        axis=1,
    )
    rb = np.array(bonds, dtype=np.int64).reshape(-1, 5)
    feat = np.stack([_lookup(t["bond_type"], rb[:, 2]), _lookup(t["bond_stereo"], rb[:, 3]), rb[:, 4]], axis=1)
    edge_index = np.empty((2, 2 * len(rb)), dtype=np.int64)
    edge_index[0, 0::2], edge_index[1, 0::2] = rb[:, 0], rb[:, 1]
    edge_index[0, 1::2], edge_index[1, 1::2] = rb[:, 1], rb[:, 0]
    return x, edge_index, np.repeat(feat, 2, axis=0)


def featurise_smiles(smiles: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Numpy ``(x, edge_index, edge_attr, partially_sanitised)`` of a SMILES (see module doc)."""
    mol, partial = _parse(smiles)
    if mol.GetNumAtoms() == 0:
        raise DataFormatError(f"SMILES {smiles!r} has no atoms")
    return (*_encode(*_raw_rows(mol)), partial)


def smiles_to_graph(smiles: str) -> GraphBatch:
    """One molecule as a :class:`GraphBatch` with OGB features (``x`` int64 ``[N, 9]``,
    ``edge_index`` both directions, ``edge_attr`` int64 ``[E, 3]``)."""
    x, edge_index, edge_attr, _ = featurise_smiles(smiles)
    return GraphBatch(
        x=torch.from_numpy(x), edge_index=torch.from_numpy(edge_index), edge_attr=torch.from_numpy(edge_attr)
    )


def smiles_to_graphs(
    smiles: list[str], where: Callable[[int], str] | None = None, chunk: int = 2048
) -> tuple[list[GraphBatch], list[int]]:
    """Featurise many SMILES: (graphs without ``y``, positions of partially sanitised ones).

    Faster than calling :func:`smiles_to_graph` in a loop: the numpy encoding runs once per
    ``chunk`` molecules (chunks bound the memory of the raw Python rows). ``where(i)`` prefixes
    the error of molecule ``i`` (e.g. file and row).
    """
    graphs: list[GraphBatch] = []
    partial: list[int] = []
    for start in range(0, len(smiles), chunk):
        atoms: list[_AtomRow] = []
        bonds: list[_BondRow] = []
        block = smiles[start : start + chunk]
        n_atoms = np.zeros(len(block), dtype=np.int64)
        n_bonds = np.zeros(len(block), dtype=np.int64)
        for j, smi in enumerate(block):
            try:
                mol, was_partial = _parse(smi)
                if mol.GetNumAtoms() == 0:
                    raise DataFormatError(f"SMILES {smi!r} has no atoms")
            except DataFormatError as exc:
                if where is None:
                    raise
                raise DataFormatError(f"{where(start + j)}: {exc}") from exc
            a, b = _raw_rows(mol)
            atoms += a
            bonds += b
            n_atoms[j], n_bonds[j] = len(a), len(b)
            if was_partial:
                partial.append(start + j)
        x, edge_index, edge_attr = _encode(atoms, bonds)
        node_cuts = np.cumsum(n_atoms)[:-1].tolist()
        edge_cuts = (2 * np.cumsum(n_bonds)[:-1]).tolist()
        xs = torch.tensor_split(torch.from_numpy(x), node_cuts)
        eis = torch.tensor_split(torch.from_numpy(edge_index), edge_cuts, dim=1)
        eas = torch.tensor_split(torch.from_numpy(edge_attr), edge_cuts)
        graphs += [
            GraphBatch(x=xs[j].clone(), edge_index=eis[j].clone(), edge_attr=eas[j].clone()) for j in range(len(block))
        ]
    return graphs, partial


# ---------------------------------------------------------------------------------------- molhiv
def _read_hiv_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """SMILES and the 0/1 ``HIV_active`` label of every row of MoleculeNet's HIV.csv(.gz)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    smiles: list[str] = []
    labels: list[int] = []
    try:
        with opener(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as fh:  # -sig: a BOM
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None or "smiles" not in header or "HIV_active" not in header:
                raise DataFormatError(f"{path}: expected columns smiles and HIV_active, header is {header}")
            i_smi, i_lab = header.index("smiles"), header.index("HIV_active")
            for lineno, row in enumerate(reader, start=2):
                if not row:
                    continue
                try:
                    smi, lab = row[i_smi], row[i_lab].strip()
                except IndexError:
                    msg = f"{path}, line {lineno}: expected {len(header)} columns, got {len(row)}"
                    raise DataFormatError(msg) from None
                if lab not in ("0", "1"):
                    raise DataFormatError(f"{path}, line {lineno}: HIV_active must be 0 or 1, got {lab!r}")
                smiles.append(smi)
                labels.append(int(lab))
    except (OSError, EOFError, UnicodeDecodeError, csv.Error, zlib.error) as exc:  # zlib: a damaged .gz
        raise DataFormatError(f"{path}: unreadable ({exc})") from exc
    return smiles, np.array(labels, dtype=np.int64)


def _limit_split(idx: np.ndarray, labels: np.ndarray, limit: int) -> np.ndarray:
    """The first ``limit`` indices, with the last one(s) swapped so both classes appear when the
    split has both: ROC-AUC on an all-negative val/test split (HIV is 3.5% positive) is undefined."""
    chosen = list(idx[:limit])
    if limit >= len(idx) or limit == 0:
        return np.asarray(chosen, dtype=np.int64)
    for cls in (1, 0):
        if not any(labels[i] == cls for i in chosen):
            candidates = idx[limit:][labels[idx[limit:]] == cls]
            other = [j for j, i in enumerate(chosen) if labels[i] != cls]
            if candidates.size and len(other) > 1:  # keep at least one of the other class
                chosen[other[-1]] = int(candidates[0])
    return np.sort(np.asarray(chosen, dtype=np.int64))


def _per_split_limits(limit: int | Sequence[int] | None) -> list[int] | None:
    if limit is None:
        return None
    limits = [int(limit)] * 3 if isinstance(limit, int | np.integer) else [int(n) for n in limit]
    if len(limits) != 3 or min(limits) < 0:
        raise ValueError(f"limit must be a count >= 0 or three counts (train, val, test), got {limit!r}")
    return limits


def _molhiv_folder(root: Path) -> Path:
    """The folder holding ``HIV.csv(.gz)``: ``root`` itself, or ``root/ogbg_molhiv`` when ``root``
    is a data root holding it. One rule for :func:`load_molhiv` and :func:`molhiv_files`, so that
    the files a run's cache key lists are the files the loader reads."""
    root = Path(root)
    if not any((root / f).is_file() for f in _HIV_FILES) and (root / "ogbg_molhiv").is_dir():
        return root / "ogbg_molhiv"
    return root


def molhiv_files(root: Path) -> list[Path]:
    """The files :func:`load_molhiv` reads under ``root``: the CSV and the scaffold split (what is there)."""
    root = _molhiv_folder(root)
    files = [root / f for f in _HIV_FILES if (root / f).is_file()][:1]
    with contextlib.suppress(DataFormatError):
        files += sorted(f for f in _find_split_dir(root).rglob("*") if f.is_file())
    return files


def _find_split_dir(root: Path) -> Path:
    for sub in ("split/scaffold", "split_recomputed/scaffold"):
        if (root / sub).is_dir():
            return root / sub
    raise DataFormatError(
        f"missing scaffold split: neither {root / 'split/scaffold'} nor {root / 'split_recomputed/scaffold'}"
    )


def _file_key(path: Path) -> list[Any]:
    """The part of the cache key one input file gives: its contents' SHA-256. Size and mtime are not
    enough: a file edited in place and given its old timestamp back (``cp -p``, ``rsync -a``, ``tar
    x``, a file system with coarse mtimes) keeps both, and the cache then served the old data. The
    files are small (HIV.csv.gz about 0.4 MB), so hashing them costs milliseconds."""
    with path.open("rb") as fh:
        return [path.name, hashlib.file_digest(fh, "sha256").hexdigest()]


def load_molhiv(
    root: Path,
    limit: int | Sequence[int] | None = None,
    *,
    cache: bool = True,
    cache_dir: Path | None = None,
) -> GraphDataset:
    """ogbg-molhiv from ``root/HIV.csv.gz`` (MoleculeNet order = OGB graph order) and the scaffold
    split in ``root/split/scaffold`` or, as shipped here, ``root/split_recomputed/scaffold``
    (``{train,valid,test}.csv.gz``, 0-based rows; named train/val/test here). ``root`` may also
    be a data root holding ``ogbg_molhiv/``.

    ``limit`` keeps the first ``limit`` molecules of each split for quick runs (or, as three
    counts, of train, val and test). In a split that has both classes, if the kept molecules are
    all negative (HIV is 3.5% positive), the last one is swapped for the split's first positive
    (and vice versa), so ROC-AUC stays defined. ``y`` is float32 ``[1, 1]`` per graph.

    The featurised dataset is cached with :func:`gtcompress.data.cache.cached` (key: the files'
    contents, the limits and the RDKit version); ``cache=False`` rebuilds it.
    """
    root = _molhiv_folder(root)
    csv_path = next((root / f for f in _HIV_FILES if (root / f).is_file()), root / "HIV.csv.gz")
    if not csv_path.is_file():
        raise DataFormatError(
            f"missing file: {csv_path}; the data root (--data-root, data.root) must hold ogbg_molhiv/ (as "
            "shared/data does) or HIV.csv.gz itself"
        )
    split_dir = _find_split_dir(root)
    paths = split_paths(split_dir)
    for p in paths.values():
        if not p.is_file():
            raise DataFormatError(f"missing file: {p}")
    limits = _per_split_limits(limit)

    def build(stacklevel: int = 4) -> GraphDataset:  # 4: warn at the caller of load_molhiv via cached
        smiles, labels = _read_hiv_csv(csv_path)
        splits = read_split_ids(paths, len(smiles), "row id", f" ({csv_path.name} has {len(smiles)} rows)")
        if limits is not None:
            splits = {k: _limit_split(v, labels, n) for (k, v), n in zip(splits.items(), limits, strict=True)}
        partial_rows: list[int] = []
        out: dict[str, list[GraphBatch]] = {}
        for name, rows in splits.items():
            row_list = rows.tolist()
            graphs, partial = smiles_to_graphs(
                [smiles[r] for r in row_list],
                where=lambda i, rl=row_list: f"{csv_path}, row {rl[i]} (line {rl[i] + 2})",
            )
            for g, r in zip(graphs, row_list, strict=True):
                g.y = torch.tensor([[float(labels[r])]], dtype=torch.float32)
            partial_rows += [row_list[i] for i in partial]
            out[name] = graphs
        if partial_rows:
            warnings.warn(
                f"{len(partial_rows)} HIV SMILES fail RDKit's valence check (rows {sorted(partial_rows)}); "
                "featurised them from partially sanitised molecules instead of dropping them",
                stacklevel=stacklevel,
            )
        info = DatasetInfo(
            name="ogbg-molhiv",
            task_level="graph",
            task="binary",
            out_dim=1,
            metric="rocauc",
            node_features=atom_feature_spec(),
            edge_features=bond_feature_spec(),
        )
        return GraphDataset(info=info, splits=out)

    if not cache:
        return build(stacklevel=3)
    params = {
        "version": _HIV_VERSION,
        "limit": limits,
        "rdkit": _rdkit_version(),
        "files": [_file_key(csv_path), *(_file_key(p) for p in paths.values())],
    }
    return cached("ogbg-molhiv", params, build, cache_dir)
