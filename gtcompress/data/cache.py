"""On-disk cache of built datasets: generate once per (name, params), load in a fraction of the time.

A dataset is one file ``<name>-<hash>.pt`` where ``hash`` is a SHA-256 prefix of the JSON of
``params`` (keys sorted) and the cache format version. The file is a ``torch.save`` of plain
containers and tensors only, so it loads with ``torch.load(weights_only=True)`` (no pickled code
runs when reading a cache). Per split, the graphs are stored concatenated with pointer arrays::

    node_ptr [G+1], edge_ptr [G+1], y_ptr [G+1]     offsets of graph g's nodes / edges / targets
    x, edge_index (local node ids), edge_attr, y, pe[key]

Integer tensors are stored in the narrowest integer dtype that holds their values (SBM node ids
fit in ``uint8``: 8x less disk than int64) together with the dtype to restore.
Files are written atomically (:func:`gtcompress.io.atomic_path`); an unreadable, truncated or
mismatching file is rebuilt with a warning instead of failing the run. The payload carries the
SHA-256 of its own contents (``sha256``, see :func:`_digest`): ``torch.load`` does not check the zip
entries' CRCs, so a damaged byte inside a tensor (a bad disk, a file edited by hand) would otherwise
load as different data without a word.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gtcompress.data.base import DatasetInfo, GraphDataset
from gtcompress.graph import GraphBatch
from gtcompress.io import atomic_path

__all__ = ["CACHE_FORMAT", "cache_path", "cached", "default_cache_dir", "load_packed", "save_packed"]

CACHE_FORMAT = 2  # 2: the payload carries its SHA-256 (files of format 1 are not trusted)
_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def default_cache_dir() -> Path:
    """``$GTCOMPRESS_CACHE`` if set, else ``~/.cache/gtcompress``."""
    env = os.environ.get("GTCOMPRESS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gtcompress"


def _params_json(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def cache_path(name: str, params: dict[str, Any], cache_dir: Path | str | None = None) -> Path:
    """Where :func:`cached` keeps ``name`` built with ``params``."""
    digest = hashlib.sha256(f"{CACHE_FORMAT}\n{_params_json(params)}".encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "dataset"
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return directory / f"{safe}-{digest}.pt"


class CacheWriteWarning(RuntimeWarning):
    """A built dataset could not be written to the cache. A warning for whatever needed the data (it is
    in memory all the same); ``gtc data generate``, whose output the cache file is, turns it into an
    error (``warnings.simplefilter("error", CacheWriteWarning)``)."""


def cached(
    name: str,
    params: dict[str, Any],
    build: Callable[[], GraphDataset],
    cache_dir: Path | str | None = None,
) -> GraphDataset:
    """Load ``name``/``params`` from the cache, or ``build()`` it and store it for next time.

    ``params`` must determine the dataset completely (include a generator version), since equal
    params mean "same data". A corrupt cache file is regenerated with a ``RuntimeWarning``; a cache
    directory that cannot be written only warns.
    """
    path = cache_path(name, params, cache_dir)
    if path.exists():
        try:
            return load_packed(path, expect_name=name, expect_params=params)
        except Exception as exc:  # any unreadable file means "rebuild", never a crash
            warnings.warn(
                f"dataset cache {path} is unreadable ({type(exc).__name__}: {exc}); regenerating it",
                RuntimeWarning,
                stacklevel=2,
            )
    dataset = build()
    try:
        save_packed(dataset, path, name=name, params=params)
    except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as a RuntimeError
        warnings.warn(f"could not write dataset cache {path}: {exc}", CacheWriteWarning, stacklevel=2)
    return dataset


# ------------------------------------------------------------------------------------ file format
def _digest(obj: Any) -> str:
    """SHA-256 of a payload: its structure, plain values, and every tensor's dtype, shape and bytes."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    """Add ``obj`` to the hash ``h``, each item tagged with its kind so that no two payloads collide."""
    if isinstance(obj, Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())  # the raw bytes, without a copy
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)};".encode())
        for key in sorted(obj, key=repr):
            h.update(f"{key!r};".encode())
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)};".encode())
        for item in obj:
            _feed(h, item)
    else:
        h.update(f"V{obj!r};".encode())


def _narrow(t: Tensor) -> Tensor:
    """``t`` in the smallest integer dtype that holds its values (floats unchanged)."""
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool or t.numel() == 0:
        return t
    lo, hi = int(t.min()), int(t.max())
    for dtype in _INT_DTYPES:
        info = torch.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return t.to(dtype)
    return t


def _pack(t: Tensor) -> dict[str, Any]:
    return {"data": _narrow(t.detach().cpu().contiguous()), "dtype": str(t.dtype).removeprefix("torch.")}


def _unpack(d: dict[str, Any]) -> Tensor:
    dtype = getattr(torch, d["dtype"])
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {d['dtype']!r}")
    return d["data"].to(dtype)


def _ptr(counts: list[int]) -> Tensor:
    return torch.tensor([0, *counts], dtype=torch.long).cumsum(0)


def _pack_split(graphs: list[GraphBatch]) -> dict[str, Any]:
    out: dict[str, Any] = {"num_graphs": len(graphs)}
    if not graphs:
        return out
    out["node_ptr"] = _ptr([g.num_nodes for g in graphs])
    out["edge_ptr"] = _ptr([g.num_edges for g in graphs])
    out["x"] = _pack(torch.cat([g.x for g in graphs]))
    out["edge_index"] = _pack(torch.cat([g.edge_index for g in graphs], dim=1))
    for key in ("edge_attr", "y"):
        values = [getattr(g, key) for g in graphs]
        if all(v is None for v in values):
            continue
        if any(v is None for v in values):
            raise ValueError(f"some graphs have {key} and some do not")
        if key == "y":
            values = [v.reshape(1) if v.dim() == 0 else v for v in values]
            out["y_ptr"] = _ptr([int(v.shape[0]) for v in values])
        out[key] = _pack(torch.cat(values))
    keys = set(graphs[0].pe)
    if any(set(g.pe) != keys for g in graphs):
        raise ValueError("graphs of one split carry different positional encodings")
    out["pe"] = {k: _pack(torch.cat([g.pe[k] for g in graphs])) for k in sorted(keys)}
    return out


def _unpack_split(d: dict[str, Any]) -> list[GraphBatch]:
    g_count = int(d["num_graphs"])
    if g_count == 0:
        return []
    node_ptr, edge_ptr = d["node_ptr"], d["edge_ptr"]
    x = _unpack(d["x"])
    edge_index = _unpack(d["edge_index"])
    if node_ptr.shape != (g_count + 1,) or edge_ptr.shape != (g_count + 1,):
        raise ValueError("pointer arrays do not match the graph count")
    if int(node_ptr[-1]) != x.shape[0] or int(edge_ptr[-1]) != edge_index.shape[1]:
        raise ValueError("pointer arrays do not match the stored tensors")
    n_counts, e_counts = node_ptr.diff().tolist(), edge_ptr.diff().tolist()
    xs = torch.split(x, n_counts)
    # Column slices of [2, E] are strided; give every graph its own contiguous edge_index.
    eis = [ei.contiguous() for ei in torch.split(edge_index, e_counts, dim=1)]
    attrs: tuple[Tensor | None, ...] = (None,) * g_count
    if "edge_attr" in d:
        attrs = torch.split(_unpack(d["edge_attr"]), e_counts)
    ys: tuple[Tensor | None, ...] = (None,) * g_count
    if "y" in d:
        y, y_ptr = _unpack(d["y"]), d["y_ptr"]
        if y_ptr.shape != (g_count + 1,) or int(y_ptr[-1]) != y.shape[0]:
            raise ValueError("y_ptr does not match the stored targets")
        ys = torch.split(y, y_ptr.diff().tolist())
    pes = {k: torch.split(_unpack(v), n_counts) for k, v in d.get("pe", {}).items()}
    return [
        GraphBatch(x=xs[i], edge_index=eis[i], edge_attr=attrs[i], y=ys[i], pe={k: v[i] for k, v in pes.items()})
        for i in range(g_count)
    ]


def save_packed(
    dataset: GraphDataset, path: Path | str, *, name: str = "", params: dict[str, Any] | None = None
) -> Path:
    """Write ``dataset`` to ``path`` atomically in the cache format (see module docstring)."""
    payload = {
        "format": CACHE_FORMAT,
        "name": name,
        "params": _params_json(params or {}),
        "info": dataset.info.to_dict(),
        "splits": {split: _pack_split(graphs) for split, graphs in dataset.splits.items()},
    }
    payload["sha256"] = _digest(payload)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_packed(
    path: Path | str, *, expect_name: str | None = None, expect_params: dict[str, Any] | None = None
) -> GraphDataset:
    """Read a file written by :func:`save_packed`; raise ``ValueError`` if it is not the one expected
    or its contents are not what was written."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT:
        raise ValueError(f"not a gtcompress dataset cache of format {CACHE_FORMAT}")
    recorded = payload.pop("sha256", None)
    if recorded != _digest(payload):
        raise ValueError("contents do not match the SHA-256 recorded when the file was written (a damaged file)")
    if expect_name is not None and payload["name"] != expect_name:
        raise ValueError(f"cache holds dataset {payload['name']!r}, expected {expect_name!r}")
    if expect_params is not None and payload["params"] != _params_json(expect_params):
        raise ValueError("cache was built with different parameters")
    info = DatasetInfo.from_dict(payload["info"])
    splits = {split: _unpack_split(d) for split, d in payload["splits"].items()}
    return GraphDataset(info=info, splits=splits)
