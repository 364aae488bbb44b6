"""``gtc pipeline``: trained GT → sparsified / pruned → exported → verified → profiled → served.

Each stage writes its artifacts into the run directory (atomically) and records in
``manifest.json`` a key of everything it depends on (its settings and the keys of its inputs).
Re-running skips every stage whose key is unchanged and whose outputs exist, so an interrupted
run (Ctrl-C, kill) resumes where it stopped and a changed setting re-runs only what it affects.
Every key also holds a fingerprint of gtcompress's own source: a run directory made by other code
(an upgrade, a changed default such as the axes ``auto`` picks) is redone, not silently reused.

The accuracy reported for every model is measured on the *exported ONNX file* run by ONNX
Runtime on the test split, and its latency on the same real test batches, side by side.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from gtcompress.errors import ConfigError
from gtcompress.io import write_atomic, write_json

DEFAULTS: dict[str, Any] = {
    "data": {"name": "cluster", "root": None, "size": "small", "seed": 0},
    "train": {
        "archs": ["gt", "gps"],
        "checkpoint": None,
        "hidden": 64,
        "layers": 4,
        "heads": 4,
        "epochs": 15,
        "batch_size": 32,
        "lr": 1e-3,
        "seed": 0,
    },
    # dense-ft: the dense model trained as many extra epochs as the compressed ones get (prune epochs +
    # fine-tuning), with the same distillation recipe; every delta in the report is also against it
    "control": {"dense_ft": True},
    "sparsify": {"enabled": True, "edges": 0.3, "epochs": 2},
    "prune": {
        "budgets": [0.5, 0.3, 0.2],  # a budget out of an architecture's reach is skipped with a note
        "epochs": 2,
        "finetune_epochs": 12,
        "lr": 1e-3,
        "axes": "auto",
        "token_keep": 0.8,
        "random_baseline": True,
    },
    "export": {"lowerings": ["auto", "plugin"], "verify_batches": 4},
    "tensorrt": {"enabled": True, "fp16": False},
    "profile": {
        "threads": 1,  # measured: 2 ONNX Runtime threads are slower than 1 on these batches (68.8 vs 63.7 ms)
        "batch_graphs": 32,
        "batches": 8,
        "warmup": 2,
        "repeat": 3,
        "max_seconds": 10.0,
        "graph_sizes": [32, 128, 512],  # the size sweep and per-op breakdown of dense vs compressed
        "sweep_iterations": 10,
    },
    "triton": {"enabled": True, "max_metric_drop": 1.0},
}


def load_config(path: Path | None, overrides: list[str]) -> dict[str, Any]:
    """Defaults, then the YAML/TOML file, then ``section.key=value`` overrides (values parsed as YAML)."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        text = path.read_text()
        try:
            doc = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
        except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
            raise ConfigError(f"{path}: cannot parse ({' '.join(str(e).split())})") from e
        if doc is not None and not isinstance(doc, dict):
            raise ConfigError(f"{path}: expected a mapping of sections ({', '.join(cfg)}), got a {type(doc).__name__}")
        for section, values in (doc or {}).items():
            _merge(cfg, section, values, str(path))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. prune.budgets=[0.5,0.3]")
        section, name = key.split(".", 1)
        _merge(cfg, section, {name: yaml.safe_load(raw)}, f"--set {item}")
    return cfg


def _merge(cfg: dict[str, Any], section: str, values: Any, where: str) -> None:
    if section not in cfg or not isinstance(values, dict):
        raise ConfigError(f"{where}: unknown section {section!r}; expected one of {', '.join(cfg)}")
    for k, v in values.items():
        if k not in cfg[section]:
            raise ConfigError(f"{where}: unknown key {section}.{k}; expected one of {', '.join(cfg[section])}")
        cfg[section][k] = v


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@functools.cache
def code_fingerprint() -> str:
    """Hash of the source of every package the stages run, this one included."""
    import cli
    import exporters
    import gtcompress
    import runtime
    import trt_plugins

    h = hashlib.sha256()
    for pkg in (gtcompress, exporters, trt_plugins, runtime, cli):
        root = Path(pkg.__file__).parent
        for f in sorted(root.rglob("*.py")):
            h.update(f.relative_to(root.parent).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


@dataclass
class Runner:
    """Runs stages with manifest-based skipping; ``log`` reports each stage's fate."""

    root: Path
    log: Callable[[str], None] = print
    manifest: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "manifest.json"
        if path.exists():
            try:
                self.manifest = json.loads(path.read_text())
            except json.JSONDecodeError:
                self.manifest = {}

    def stage(self, name: str, key: str, outputs: list[Path], fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        entry = self.manifest.get(name)
        if entry and entry.get("key") == key and all(p.exists() for p in outputs):
            self.log(f"[dim]✓ {name} (cached)[/]")
            return entry["result"]
        t = time.perf_counter()
        self.log(f"▶ {name}")
        result = fn()
        self.manifest[name] = {
            "key": key,
            "outputs": [str(p) for p in outputs],
            "result": result,
            "seconds": time.perf_counter() - t,
        }
        write_json(self.root / "manifest.json", self.manifest)
        self.log(f"[green]✓ {name}[/] ({time.perf_counter() - t:.1f} s)")
        return result


def run_pipeline(cfg: dict[str, Any], out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) every stage; returns the report also written to ``out/report.json``."""
    from exporters.onnx import export_onnx
    from gtcompress.checkpoint import load_checkpoint, save_checkpoint
    from gtcompress.compress.budget import BudgetError
    from gtcompress.compress.teddy import SparsifyConfig, sparsify_model
    from gtcompress.train.loop import TrainConfig
    from gtcompress.train.recipe import DataSpec, default_pe, fit

    run = Runner(out, log)
    dcfg = cfg["data"]
    spec = DataSpec(dcfg["name"], dcfg["root"], dcfg["size"], dcfg["seed"])
    tcfg = cfg["train"]
    data_key = _key(spec.to_dict(), code_fingerprint())
    datasets: dict[str, Any] = {}

    def dataset(pe: dict[str, int]) -> Any:
        k = json.dumps(pe, sort_keys=True)
        if k not in datasets:
            datasets[k] = spec.load(pe)
        return datasets[k]

    models: dict[str, dict[str, Any]] = {}  # name -> {"ckpt", "key", "arch", "method", "teddy"}
    archs = tcfg["archs"] if not tcfg["checkpoint"] else ["given"]
    for arch in archs:
        ckpt = out / "models" / f"{arch}-dense"
        if tcfg["checkpoint"]:
            src = Path(tcfg["checkpoint"])
            key = _key("given", str(src.resolve()), src.stat().st_mtime if src.exists() else 0, data_key)

            def given(src: Path = src, ckpt: Path = ckpt) -> dict[str, Any]:
                model, meta = load_checkpoint(src)
                save_checkpoint(ckpt, model, meta)
                return {"arch": model.config.arch}

            arch = run.stage("train:given", key, [ckpt], given)["arch"]
        else:
            key = _key(data_key, arch, tcfg)

            def train_one(arch: str = arch, ckpt: Path = ckpt) -> dict[str, Any]:
                overrides = {
                    "hidden": tcfg["hidden"],
                    "num_layers": tcfg["layers"],
                    "heads": tcfg["heads"],
                    "pe": default_pe(spec.name),
                }
                tc = TrainConfig(
                    epochs=tcfg["epochs"],
                    batch_size=tcfg["batch_size"],
                    lr=tcfg["lr"],
                    seed=tcfg["seed"],
                    warmup_epochs=min(2, tcfg["epochs"]),
                )
                res = fit(spec, arch, overrides, tc, dataset=dataset(overrides["pe"]))
                save_checkpoint(ckpt, res.model, res.meta)
                return {"val": res.result.val_metric, "test": res.result.test_metric}

            run.stage(f"train:{arch}", key, [ckpt], train_one)
        models[f"{arch}-dense"] = {"ckpt": ckpt, "key": key, "arch": arch, "method": "dense", "budget": 1.0}

    scfg, pcfg = cfg["sparsify"], cfg["prune"]
    skipped: list[str] = []
    for m in list(models.values()):
        arch, parent_key = m["arch"], m["key"]
        if cfg["control"]["dense_ft"]:
            models.update(_dense_ft_stage(run, out, m, pcfg, tcfg, dataset))
        if scfg["enabled"]:
            ckpt = out / "models" / f"{arch}-teddy"
            key = _key(parent_key, scfg)

            def teddy(parent: Path = m["ckpt"], ckpt: Path = ckpt) -> dict[str, Any]:
                model, meta = load_checkpoint(parent)
                sc = SparsifyConfig(edges=scfg["edges"], epochs=scfg["epochs"])
                res = sparsify_model(model, dataset(model.config.pe), sc)
                save_checkpoint(
                    ckpt,
                    res.model,
                    {**meta, "compression": res.report, "teddy": {"edges": sc.edges, "per_graph": sc.per_graph}},
                )
                return {"flops_kept": res.report["cost"]["flops_ratio"]}

            run.stage(f"sparsify:{arch}", key, [ckpt], teddy)
            models[f"{arch}-teddy"] = {
                "ckpt": ckpt,
                "key": key,
                "arch": arch,
                "method": "teddy",
                "budget": None,
                "teddy": {"edges": scfg["edges"], "per_graph": True},
            }
        done: list[float] = []
        for b in sorted(pcfg["budgets"], reverse=True):
            try:
                models.update(_prune_stage(run, out, m, pcfg, b, "gtsp", dataset))
            except BudgetError as e:  # out of reach for this architecture: so is every smaller budget
                skipped.append(f"{arch} at {b:g} of the FLOPs: {e}")
                run.log(f"[yellow]skipped {arch}-gtsp-{b:g}: {e}[/]")
                break
            done.append(b)
        if pcfg["random_baseline"] and done:
            models.update(_prune_stage(run, out, m, pcfg, min(done), "random", dataset))

    # ---------------------------------------------------------------- export + verify
    ecfg = cfg["export"]
    exported: list[dict[str, Any]] = []
    for name, m in models.items():
        for lowering in ecfg["lowerings"]:
            if lowering == "plugin" and (m["arch"] != "gt" or m["method"] in ("gtsp", "random", "dense-ft")):
                continue  # the plugin is for GT's edge attention; token-pruned models export dense
            path = out / "onnx" / f"{name}-{lowering}.onnx"
            key = _key(m["key"], lowering, ecfg["verify_batches"])

            def export(m: dict[str, Any] = m, path: Path = path, lowering: str = lowering) -> dict[str, Any]:
                model, meta = load_checkpoint(m["ckpt"])
                profile = None
                if lowering == "auto" and model.config.arch == "gt":
                    profile = _batches(dataset(model.config.pe)["val"], cfg["profile"]["batch_graphs"], 1)[0]
                keep = {k: meta[k] for k in ("dataset", "metrics", "compression", "teddy") if k in meta}
                res = export_onnx(
                    model, path, lowering, profile=profile, metadata=keep, verify_batches=ecfg["verify_batches"]
                )
                return {
                    "lowering": res.lowering,
                    "max_abs_err": res.max_abs_err,
                    "batches": res.batches_checked,
                    "tensorrt_problems": res.tensorrt_problems,
                }

            r = run.stage(f"export:{name}:{lowering}", key, [path], export)
            exported.append({"model": name, "requested": lowering, "path": path, "key": key, **m, **r})

    # ---------------------------------------------------------------- TensorRT (where it exists)
    trt_note = _tensorrt_stage(run, cfg, exported, out)

    # ---------------------------------------------------------------- accuracy (per file) + latency (side by side)
    pcfg2 = cfg["profile"]

    def data_for(e: dict[str, Any]) -> Any:
        return dataset(json.loads(_meta(e["path"])["input_spec"])["pe"])

    rows = []
    for e in exported:
        key = _key(e["key"], pcfg2["threads"], pcfg2["batch_graphs"])
        r = run.stage(
            f"evaluate:{e['model']}:{e['requested']}",
            key,
            [e["path"]],
            lambda e=e: evaluate_onnx(e["path"], data_for(e), pcfg2, e.get("teddy")),
        )
        rows.append(
            {
                "model": e["model"],
                "arch": e["arch"],
                "method": e["method"],
                "budget": e["budget"],
                "lowering": e["lowering"],
                "file": str(e["path"].relative_to(out)),
                "max_abs_err": e["max_abs_err"],
                **r,
            }
        )
    timings = run.stage(
        "latency",
        _key([e["key"] for e in exported], pcfg2),
        [e["path"] for e in exported],
        lambda: {"rows": time_side_by_side([(e["path"], data_for(e), e.get("teddy")) for e in exported], pcfg2)},
    )["rows"]
    for row, t in zip(rows, timings, strict=True):
        row.update(t)

    report = _report(rows, cfg, trt_note, out)
    report["skipped"] = skipped
    test = data_for(exported[0])["test"] if exported else []
    degree = float(np.mean([g.num_edges / max(g.num_nodes, 1) for g in test])) if test else 4.0
    report["profile"] = _profile_stage(run, cfg, report, out, {e["model"]: e["key"] for e in exported}, degree)
    _triton_stage(run, cfg, report, out)
    write_json(out / "report.json", report)
    write_atomic(out / "report.md", lambda p: p.write_text(_markdown(report)))
    _plots(report, out)
    return report


def _prune_stage(
    run: Runner, out: Path, parent: dict[str, Any], pcfg: dict[str, Any], b: float, method: str, dataset: Any
) -> dict[str, dict[str, Any]]:
    """GTSP (or the random baseline) at ``b`` of the FLOPs, as a resumable stage."""
    from gtcompress.checkpoint import load_checkpoint, save_checkpoint
    from gtcompress.compress.prune import PruneConfig, prune_model, random_prune

    arch = parent["arch"]
    ckpt = out / "models" / f"{arch}-{method}-{b}"
    key = _key(parent["key"], pcfg, b, method)

    def prune() -> dict[str, Any]:
        model, meta = load_checkpoint(parent["ckpt"])
        pc = PruneConfig(
            target_flops=b,
            axes=pcfg["axes"],
            token_keep=pcfg["token_keep"],
            epochs=pcfg["epochs"],
            finetune_epochs=pcfg["finetune_epochs"],
            lr=pcfg["lr"],
        )
        res = (prune_model if method == "gtsp" else random_prune)(model, dataset(model.config.pe), pc)
        save_checkpoint(ckpt, res.model, {**meta, "compression": res.report})
        return {"flops_kept": res.report["cost"]["flops_ratio"]}

    run.stage(f"prune:{arch}:{method}:{b}", key, [ckpt], prune)
    return {f"{arch}-{method}-{b}": {"ckpt": ckpt, "key": key, "arch": arch, "method": method, "budget": b}}


def _dense_ft_stage(
    run: Runner, out: Path, parent: dict[str, Any], pcfg: dict[str, Any], tcfg: dict[str, Any], dataset: Any
) -> dict[str, dict[str, Any]]:
    """The dense-ft control (:mod:`gtcompress.compress.finetune`): the dense model trained for the
    epochs a pruned model gets after it (mask training + fine-tuning), as a resumable stage."""
    from gtcompress.checkpoint import load_checkpoint, save_checkpoint
    from gtcompress.compress.finetune import finetune_dense

    arch = parent["arch"]
    ckpt = out / "models" / f"{arch}-dense-ft"
    epochs = pcfg["epochs"] + pcfg["finetune_epochs"]
    key = _key(parent["key"], "dense-ft", epochs, pcfg["lr"], tcfg["batch_size"])

    def finetune() -> dict[str, Any]:
        model, meta = load_checkpoint(parent["ckpt"])
        res = finetune_dense(model, dataset(model.config.pe), epochs, lr=pcfg["lr"], batch_size=tcfg["batch_size"])
        save_checkpoint(ckpt, res.model, {**meta, "compression": res.report})
        return {"epochs": res.report["epochs_run"]}

    run.stage(f"control:{arch}:dense-ft", key, [ckpt], finetune)
    return {f"{arch}-dense-ft": {"ckpt": ckpt, "key": key, "arch": arch, "method": "dense-ft", "budget": 1.0}}


def _meta(path: Path) -> dict[str, str]:
    from exporters.onnx import read_metadata

    return read_metadata(path)


def _batches(graphs: list[Any], size: int, count: int) -> list[Any]:
    from gtcompress.preprocess import union_graphs

    return [
        union_graphs([g.to_numpy() for g in graphs[i : i + size]])
        for i in range(0, size * count, size)
        if graphs[i : i + size]
    ]


def _ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _request_graphs(ds: Any, teddy: dict[str, Any] | None, limit: int | None = None) -> list[Any]:
    """(The first ``limit``) test graphs as a deployment receives them: no stored PE (computed per
    request), TEDDY applied."""
    graphs = [g.to_numpy() for g in ds["test"][:limit]]
    for g in graphs:
        g.pe = {}
    if teddy:
        from gtcompress.preprocess.teddy import teddy_sparsify

        graphs = [teddy_sparsify(g, teddy["edges"], teddy.get("per_graph", True)) for g in graphs]
    return graphs


def evaluate_onnx(path: Path, ds: Any, pcfg: dict[str, Any], teddy: dict[str, Any] | None) -> dict[str, Any]:
    """Test metric of the ONNX file under ONNX Runtime (pre-processing as on a deployment)."""
    import torch

    from gtcompress.preprocess import union_graphs
    from gtcompress.preprocess.inputs import build_inputs
    from gtcompress.train.metrics import compute_metric

    spec = json.loads(_meta(path)["input_spec"])
    sess = _ort_session(path, pcfg["threads"])
    graphs = _request_graphs(ds, teddy)
    size = pcfg["batch_graphs"]
    outs = [
        sess.run(None, build_inputs(union_graphs(graphs[i : i + size]), spec))[0] for i in range(0, len(graphs), size)
    ]
    test = ds["test"]
    y = torch.cat([g.y.reshape(-1) if spec["task_level"] == "node" else g.y.reshape(1, -1) for g in test])
    metric = compute_metric(ds.info.metric, torch.from_numpy(np.concatenate(outs)), y)
    return {
        "metric": ds.info.metric,
        "test": metric * (1 if ds.info.metric == "mae" else 100),
        "file_mb": path.stat().st_size / 1e6,
    }


def time_side_by_side(
    models: list[tuple[Path, Any, dict[str, Any] | None]], pcfg: dict[str, Any]
) -> list[dict[str, Any]]:
    """Latency of every ONNX file on the same real test batches, round-robin (batch by batch across
    models), so drifting background load on a shared machine hits every model alike and the
    speed-ups are measured side by side. Each entry: (path, dataset, TEDDY settings or None).
    Every model gets ``warmup`` batches, then at least one full pass; further passes (up to
    ``repeat``) while the whole measurement stays under ``max_seconds``."""
    from gtcompress.preprocess import union_graphs
    from gtcompress.preprocess.inputs import build_inputs

    size = pcfg["batch_graphs"]
    shared: dict[tuple[int, str], list[Any]] = {}  # models on the same data share the batch objects
    runs = []
    for path, ds, teddy in models:
        key = (id(ds), json.dumps(teddy, sort_keys=True))
        if key not in shared:
            graphs = _request_graphs(ds, teddy, size * pcfg["batches"])
            shared[key] = [union_graphs(graphs[i : i + size]) for i in range(0, len(graphs), size)]
        batches = shared[key]
        sess = _ort_session(path, pcfg["threads"])
        spec = json.loads(_meta(path)["input_spec"])
        for b in batches[: pcfg["warmup"]]:
            sess.run(None, build_inputs(b, spec))
        runs.append((sess, spec, batches, [], []))
    start = time.perf_counter()
    for r in range(pcfg["repeat"]):
        if r and time.perf_counter() - start > pcfg["max_seconds"]:
            break
        for i in range(max(len(b) for _, _, b, _, _ in runs)):
            for sess, spec, batches, lat, prep in runs:
                if i < len(batches):
                    t0 = time.perf_counter()
                    inputs = build_inputs(batches[i], spec)
                    t1 = time.perf_counter()
                    sess.run(None, inputs)
                    prep.append((t1 - t0) * 1e3)
                    lat.append((time.perf_counter() - t0) * 1e3)
    return [
        {
            "latency_ms_p50": float(np.median(lat)),
            "latency_ms_mean": float(np.mean(lat)),
            "latency_ms_p90": float(np.percentile(lat, 90)),
            "prep_ms_p50": float(np.median(prep)),
            "timed_batches": len(lat),
            "graphs_per_batch": size,
            "threads": pcfg["threads"],
        }
        for _, _, _, lat, prep in runs
    ]


def _tensorrt_stage(run: Runner, cfg: dict[str, Any], exported: list[dict[str, Any]], out: Path) -> str:
    if not cfg["tensorrt"]["enabled"]:
        return "disabled in the config"
    try:
        from trt_plugins.tensorrt_plugin import tensorrt_available
    except ImportError:
        return "trt_plugins unavailable"
    if not tensorrt_available():
        note = "skipped: TensorRT is not installed on this machine (no engines built; ONNX Runtime numbers only)"
        run.log(f"[yellow]TensorRT {note}[/]")
        return note
    from exporters.tensorrt import GraphSize, build_engine

    for e in exported:
        plan = e["path"].with_suffix(".plan")
        key = _key(e["key"], cfg["tensorrt"])
        run.stage(
            f"tensorrt:{e['model']}:{e['requested']}",
            key,
            [plan],
            lambda e=e, plan=plan: {
                "engine": str(
                    build_engine(
                        e["path"],
                        plan,
                        GraphSize(1, 1, 1),
                        GraphSize(4096, 65536, 32, 256, 256),
                        GraphSize(65536, 1 << 20, 1024, 512, 512),
                        fp16=cfg["tensorrt"]["fp16"],
                    )
                )
            },
        )
    return "built"


def _report(rows: list[dict[str, Any]], cfg: dict[str, Any], trt_note: str, out: Path) -> dict[str, Any]:
    import platform

    from runtime.profile import machine_info

    dense = {r["arch"]: r for r in rows if r["method"] == "dense" and r["lowering"] != "plugin"}
    control = {r["arch"]: r for r in rows if r["method"] == "dense-ft"}
    for r in rows:
        sign = -1 if r["metric"] == "mae" else 1
        d, c = dense.get(r["arch"]), control.get(r["arch"])
        if d:
            r["metric_drop"] = sign * (d["test"] - r["test"])
            r["speedup_vs_dense"] = d["latency_ms_p50"] / r["latency_ms_p50"]
        if c:  # what compression cost, with the extra training of the compressed models taken out
            r["delta_vs_dense_ft"] = sign * (r["test"] - c["test"])
    return {
        "config": cfg,
        "rows": rows,
        "tensorrt": trt_note,
        "machine": machine_info(),
        "python": platform.python_version(),
        "run_dir": str(out),
    }


def choose_for_serving(report: dict[str, Any], max_drop: float) -> dict[str, Any] | None:
    """The fastest exported model whose test metric is within ``max_drop`` points of its dense parent."""
    ok = [r for r in report["rows"] if r.get("metric_drop", 0.0) <= max_drop and r["lowering"] != "plugin"]
    return min(ok, key=lambda r: r["latency_ms_p50"]) if ok else None


def _profile_stage(
    run: Runner, cfg: dict[str, Any], report: dict[str, Any], out: Path, keys: dict[str, str], degree: float
) -> dict[str, Any] | None:
    """``gtc profile`` on each dense model and its best compressed one (the fastest within the
    serving drop, else the fastest GTSP): latency vs graph size, distribution, per-op breakdown."""
    from runtime.profile import profile_models, write_report

    pcfg = cfg["profile"]
    if not pcfg["graph_sizes"]:
        return None
    rows = [r for r in report["rows"] if r["lowering"] != "plugin"]
    picked = []
    for arch in sorted({r["arch"] for r in rows}):
        mine = [r for r in rows if r["arch"] == arch]
        dense = [r for r in mine if r["method"] == "dense"]
        small = [
            r for r in mine if r["method"] != "dense" and r.get("metric_drop", 0.0) <= cfg["triton"]["max_metric_drop"]
        ]
        small = small or [r for r in mine if r["method"] == "gtsp"]
        picked += dense[:1] + sorted(small, key=lambda r: r["latency_ms_p50"])[:1]
    if not picked:
        return None
    settings = {
        "graph_sizes": pcfg["graph_sizes"],
        "batch_sizes": sorted({1, min(8, pcfg["batch_graphs"])}),
        "threads": [pcfg["threads"]],
        "iterations": pcfg["sweep_iterations"],
        "avg_degree": degree,
    }
    target = out / "profile"

    def profile() -> dict[str, Any]:
        rep = profile_models(
            [out / r["file"] for r in picked],
            warmup=2,
            isolate=False,
            names=[r["model"] for r in picked],
            **settings,
        )
        write_report(rep, target)
        return {"dir": str(target), "models": [r["model"] for r in picked], "avg_degree": degree}

    return run.stage("profile", _key([keys[r["model"]] for r in picked], settings), [target / "report.json"], profile)


def _triton_stage(run: Runner, cfg: dict[str, Any], report: dict[str, Any], out: Path) -> None:
    if not cfg["triton"]["enabled"]:
        return
    from exporters.triton_repo import write_model_repository

    best = choose_for_serving(report, cfg["triton"]["max_metric_drop"])
    if best is None:
        report["triton"] = None
        return
    src = out / best["file"]
    spec = json.loads(_meta(src)["input_spec"])
    name = best["model"].replace(".", "_")
    key = _key(best["file"], src.stat().st_mtime)
    run.stage(
        "triton-repo",
        key,
        [out / "triton" / name / "config.pbtxt"],
        lambda: {"path": str(write_model_repository(out / "triton", name, src, spec))},
    )
    report["triton"] = {"model": name, "repository": str(out / "triton"), "source": best["file"]}


def _markdown(report: dict[str, Any]) -> str:
    rows = report["rows"]
    metric = rows[0]["metric"] if rows else "metric"
    lines = [
        "# gtcompress pipeline report",
        "",
        f"Dataset: `{report['config']['data']['name']}` ({report['config']['data']['size']}). "
        f"Metric: {metric} on the test split, computed from the **exported ONNX model** under ONNX Runtime. "
        f"Latency: ONNX Runtime CPU, {rows[0]['threads'] if rows else '?'} threads, batches of "
        f"{rows[0]['graphs_per_batch'] if rows else '?'} test graphs, pre-processing "
        "(positional encodings, layouts) included; p50 of all models timed round-robin on the same batches.",
        "",
        "Δ vs dense-ft compares with the dense model trained for the same extra epochs, with the same "
        "distillation, as the compressed models (the `dense-ft` row): it is what compression cost; Δ vs dense "
        "also counts that extra training.",
        "",
        "| model | lowering | test | Δ vs dense-ft | Δ vs dense | latency p50 (ms) | speed-up | prep (ms) "
        "| max abs err | MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ft = f"{r['delta_vs_dense_ft']:+.2f}" if "delta_vs_dense_ft" in r else "–"
        lines.append(
            f"| {r['model']} | {r['lowering']} | {r['test']:.2f} | {ft} | {-r.get('metric_drop', 0.0):+.2f} | "
            f"{r['latency_ms_p50']:.1f} | {r.get('speedup_vs_dense', 1.0):.2f}x | {r['prep_ms_p50']:.1f} | "
            f"{r['max_abs_err']:.1e} | {r['file_mb']:.2f} |"
        )
    m = report["machine"]
    lines += [
        "",
        *(f"Skipped: {note}." for note in report.get("skipped", [])),
        f"TensorRT: {report['tensorrt']}.",
        f"Machine: {m.get('cpu', '?')}, {m.get('logical_cores', '?')} cores, onnxruntime {m.get('onnxruntime', '?')}.",
    ]
    if report.get("triton"):
        t = report["triton"]
        lines.append(f"Triton model repository: `{t['repository']}` (model `{t['model']}` from `{t['source']}`).")
    best = [
        r
        for r in rows
        if r["method"] not in ("dense", "dense-ft") and r["lowering"] != "plugin" and r.get("metric_drop", 9e9) <= 1.0
    ]
    if best:
        b = max(best, key=lambda r: r["speedup_vs_dense"])
        vs_ft = f" ({b['delta_vs_dense_ft']:+.2f} vs dense-ft)" if "delta_vs_dense_ft" in b else ""
        lines.append(
            f"Fastest compressed model within 1 point of its dense parent: `{b['model']}`, "
            f"{b['speedup_vs_dense']:.2f}x lower latency at {-b['metric_drop']:+.2f} points{vs_ft}."
        )
    else:
        lines.append("No compressed model stayed within 1 point of its dense parent.")
    lines += ["", "![Pareto front](pareto.png)", ""]
    if report.get("profile"):
        lines += [
            f"Profiled side by side ({', '.join(report['profile']['models'])}; random graphs with the test set's "
            f"mean degree {report['profile']['avg_degree']:.1f}, `profile/report.json`):",
            "",
            "![Latency vs graph size](profile/latency_vs_size.png)",
            "![Per-op breakdown](profile/op_breakdown.png)",
            "",
        ]
    return "\n".join(lines) + "\n"


def _plots(report: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gtcompress.io import write_atomic

    rows = [r for r in report["rows"] if r["lowering"] != "plugin"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = {"dense": "o", "dense-ft": "D", "teddy": "s", "gtsp": "^", "random": "x"}
    for arch in sorted({r["arch"] for r in rows}):
        for method, marker in markers.items():
            pts = [r for r in rows if r["arch"] == arch and r["method"] == method]
            if pts:
                ax.scatter(
                    [p["latency_ms_p50"] for p in pts],
                    [p["test"] for p in pts],
                    marker=marker,
                    s=60,
                    label=f"{arch} {method}",
                )
                for p in pts:
                    ax.annotate(str(p["budget"] or ""), (p["latency_ms_p50"], p["test"]), fontsize=7)
    ax.set_xlabel("ONNX Runtime CPU latency p50 (ms, lower is better)")
    ax.set_ylabel(f"test {rows[0]['metric'] if rows else ''} (from the ONNX model)")
    ax.set_title("Accuracy vs latency: what compression bought")
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_atomic(out / "pareto.png", lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)
