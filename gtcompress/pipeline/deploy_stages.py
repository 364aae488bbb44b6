"""The stages on deployable artifacts: ONNX export (verified), TensorRT engines where TensorRT
exists, the profile of dense vs compressed models, and the Triton model repository of the model
picked for serving.

They drive :mod:`exporters` and :mod:`runtime`, which import ``gtcompress``; so they are imported
here inside the stages only, never at module level (see :mod:`gtcompress.pipeline`).
"""

from __future__ import annotations

from typing import Any

from gtcompress.io import make_temp_dir, recover_dead_dir_swaps, remove_dir, remove_path, swap_dir_into_place
from gtcompress.pipeline.cache import stage_key
from gtcompress.pipeline.context import ModelArtifact, OnnxArtifact, RunContext
from gtcompress.pipeline.measure import read_spec, union_batches
from gtcompress.pipeline.report import choose_for_serving, is_parent, tolerance_drop

__all__ = ["export_stages", "profile_stage", "tensorrt_stages", "triton_stage"]

#: Methods whose models export with the dense lowering only: the plugin lowering is for GT's edge
#: attention, and token-pruned (or otherwise retrained) models are compared on the default lowering.
_DENSE_ONLY = ("gtsp", "random", "dense-ft")


def export_stages(ctx: RunContext, models: list[ModelArtifact]) -> list[OnnxArtifact]:
    """Every model in every ``export.lowerings`` that applies to it, each verified against PyTorch, and
    each of those files but the plugin's quantized by every ``export.quantize`` scheme."""
    ecfg = ctx.config["export"]
    exported = []
    for m in models:
        for lowering in ecfg["lowerings"]:
            if lowering == "plugin" and (m.arch != "gt" or m.method in _DENSE_ONLY):
                continue
            e = _export(ctx, m, lowering, ecfg["verify_batches"])
            exported.append(e)
            if e.lowering != "plugin":  # TensorRT's, which reads no int8 operator of ONNX Runtime
                exported += [_quantize(ctx, e, scheme) for scheme in ecfg["quantize"]]
    return exported


def _quantize(ctx: RunContext, e: OnnxArtifact, scheme: str) -> OnnxArtifact:
    """``e``'s file quantized and set against it on the val split (:func:`~gtcompress.pipeline.quantize.
    quantize_measured`, as a deployment runs both: TEDDY applied where the model takes it): where int8 falls
    more than ``export.quantize_max_drop`` below the float32 file, ``export.mixed`` keeps the fewest blocks
    float32 that bring it within, and the closest file it found where none does; the report says which. Its
    test metric and latency are then measured with every other file's, and the serving pick holds it to
    ``triton.max_metric_drop`` against its dense parent as any other row."""
    ecfg, batch_graphs = ctx.config["export"], ctx.config["profile"]["batch_graphs"]
    path = e.path.with_name(f"{e.path.stem}-{scheme}.onnx")
    settings = [ecfg[k] for k in ("verify_batches", "quantize_max_drop", "mixed")]
    key = stage_key(e.key, scheme, *settings, batch_graphs)

    def quantize() -> dict[str, Any]:
        from gtcompress.checkpoint import load_checkpoint
        from gtcompress.pipeline.quantize import quantize_measured

        def progress(done: int, at_most: int, what: str) -> None:
            if at_most > 1:  # the search's evaluations, seconds each
                ctx.log(f"[dim]  int8 file {done} of at most {at_most}: {what}[/]")

        model, _ = load_checkpoint(e.model.ckpt)
        q = quantize_measured(
            e.path,
            path,
            model,
            ctx.dataset_of_file(e.path),
            ecfg["quantize_max_drop"],
            verify_batches=ecfg["verify_batches"],
            batch_graphs=batch_graphs,
            mixed=ecfg["mixed"],
            teddy=e.model.teddy,
            keep_closest=True,
            progress=progress,
        )
        return {
            "max_abs_err": q.max_abs_err,
            "val_float32": q.float32,
            "val_int8": q.int8,
            "val_drop": q.drop,
            "max_drop": ecfg["quantize_max_drop"],
            "within": q.within,
            "float32_blocks": q.float32_blocks,
            "blocks": q.blocks,
            "evaluations": q.evaluations,
        }

    r = ctx.stage(f"quantize:{e.model.name}:{e.requested}:{scheme}", key, [path], quantize)
    made = {"stage": key, **{k: v for k, v in r.items() if k != "max_abs_err"}}
    return OnnxArtifact(e.model, e.requested, e.lowering, path, r["max_abs_err"], scheme, made)


def _export(ctx: RunContext, m: ModelArtifact, lowering: str, verify_batches: int) -> OnnxArtifact:
    path = ctx.out / "onnx" / f"{m.name}-{lowering}.onnx"
    batch_graphs = ctx.config["profile"]["batch_graphs"]
    # auto's rule reads a batch of that many val graphs: another size may pick another lowering
    key = stage_key(m.key, lowering, verify_batches, batch_graphs if lowering == "auto" else None)

    def export() -> dict[str, Any]:
        from exporters.onnx import export_onnx
        from gtcompress.checkpoint import load_checkpoint

        model, meta = load_checkpoint(m.ckpt)

        def profile() -> Any:  # real validation batches, loaded only if the lowering rule needs them
            return union_batches(ctx.dataset_for(model.config)["val"], batch_graphs, 1)[0]

        keep = {k: meta[k] for k in ("dataset", "metrics", "compression", "teddy") if k in meta}
        res = export_onnx(model, path, lowering, profile=profile, metadata=keep, verify_batches=verify_batches)
        return {
            "lowering": res.lowering,
            "max_abs_err": res.max_abs_err,
            "batches": res.batches_checked,
            "tensorrt_problems": res.tensorrt_problems,
        }

    r = ctx.stage(f"export:{m.name}:{lowering}", key, [path], export)
    return OnnxArtifact(m, lowering, str(r["lowering"]), path, r["max_abs_err"])


def tensorrt_stages(ctx: RunContext, exported: list[OnnxArtifact]) -> str:
    """An engine (``.plan`` next to the ONNX file) per export, where TensorRT is installed; returns
    the note the report prints."""
    tcfg = ctx.config["tensorrt"]
    if not tcfg["enabled"]:
        return "disabled in the config"
    try:
        from trt_plugins.tensorrt_plugin import tensorrt_available
    except ImportError:
        return "trt_plugins unavailable"
    if not tensorrt_available():
        note = "skipped: TensorRT is not installed on this machine (no engines built; ONNX Runtime numbers only)"
        ctx.log(f"[yellow]TensorRT {note}[/]")
        return note
    from exporters.tensorrt import GraphSize, build_engine
    from gtcompress.errors import ModelFileError

    failed: list[str] = []
    exported = [e for e in exported if e.precision == "float32"]  # TensorRT reads no quantized file
    for e in exported:
        plan = e.path.with_suffix(".plan")

        def build(e: OnnxArtifact = e, plan: Any = plan) -> dict[str, Any]:
            engine = build_engine(
                e.path,
                plan,
                GraphSize(1, 1, 1),
                GraphSize(4096, 65536, 32, 256, 256),
                GraphSize(65536, 1 << 20, 1024, 512, 512),
                fp16=tcfg["fp16"],
            )
            return {"engine": str(engine)}

        try:
            ctx.stage(f"tensorrt:{e.model.name}:{e.requested}", stage_key(e.key, tcfg), [plan], build)
        except ModelFileError as err:  # one model TensorRT cannot take does not stop the others
            failed.append(f"{e.path.name} ({err})")
            ctx.log(f"[yellow]TensorRT: no engine for {e.path.name}: {err}[/]")
    if failed:
        return f"built {len(exported) - len(failed)} of {len(exported)} engines; not built: {'; '.join(failed)}"
    return "built"


def profile_stage(
    ctx: RunContext, report: dict[str, Any], keys: dict[str, str], degree: float
) -> dict[str, Any] | None:
    """``gtc profile`` on each dense model and its best compressed one (the fastest within the
    serving drop, else the fastest GTSP): latency vs graph size, distribution, per-op breakdown.
    ``keys``: each exported file's cache key (by its path in the run, as the rows name it);
    ``degree``: the test set's mean degree, for the random graphs."""
    from runtime.profile_failures import ProfileIncomplete, failure_line
    from runtime.profile_rounds import default_rounds

    pcfg, max_drop = ctx.config["profile"], ctx.config["triton"]["max_metric_drop"]
    if not pcfg["graph_sizes"]:
        return None
    rows = [r for r in report["rows"] if r["lowering"] != "plugin"]
    picked = []
    for arch in sorted({r["arch"] for r in rows}):
        mine = [r for r in rows if r["arch"] == arch]
        dense = [r for r in mine if is_parent(r, "dense")]
        small = [r for r in mine if not is_parent(r, "dense") and tolerance_drop(r) <= max_drop]
        small = small or [r for r in mine if r["method"] == "gtsp"]
        picked += dense[:1] + sorted(small, key=lambda r: r["latency_ms_p50"])[:1]
    if not picked:
        return None
    settings = {
        "graph_sizes": list(dict.fromkeys(pcfg["graph_sizes"])),  # profile_models refuses a size given twice
        "batch_sizes": sorted({1, min(8, pcfg["batch_graphs"])}),
        "threads": [pcfg["threads"]],
        "iterations": pcfg["sweep_iterations"],
        "rounds": default_rounds(pcfg["sweep_iterations"]),  # the models in turn (runtime.profile_rounds)
        "avg_degree": degree,
    }
    target = ctx.out / "profile"
    summary = {"dir": str(target), "models": [r["model"] for r in picked], "avg_degree": degree}

    def profile() -> dict[str, Any]:
        from runtime.profile import profile_models
        from runtime.profile_report import write_report

        try:
            rep = profile_models(
                [ctx.out / r["file"] for r in picked],
                warmup=2,
                isolate=False,
                names=[r["model"] for r in picked],
                **settings,
            )
        except ProfileIncomplete as e:
            if e.measured:  # the rows measured, with report.json's "failed"
                write_report(e.report, target)
            else:  # nothing of this run's: an older run's plots are not these models'
                remove_dir(target)
            raise
        write_report(rep, target)
        return summary

    key = stage_key([keys[r["file"]] for r in picked], settings)
    try:
        return ctx.stage("profile", key, [target / "report.json"], profile)
    except ProfileIncomplete as e:
        # The profile is a view of the models the run made and measured, not a product of the run: a pass
        # failing (ONNX Runtime out of memory at the largest size) loses neither the run nor the rows the
        # other passes measured. Not recorded as done, so the next run measures it again.
        failed = [failure_line(f) for f in e.report["failed"]]
        for line in failed:
            ctx.log(f"[yellow]profile: failed: {line}[/]")
        return {**summary, "dir": str(target) if e.measured else None, "failed": failed}


def triton_stage(ctx: RunContext, report: dict[str, Any]) -> None:
    """A Triton model repository (``triton/``) for the model :func:`choose_for_serving` picks;
    recorded in ``report["triton"]`` (``None`` when no model qualifies).

    The repository holds exactly the model the report names, and nothing when it names none
    (no model qualifies, or ``triton.enabled`` is false): ``gtc tritonserver`` serves every model
    in the folder, so a model left by an earlier run that picked another one would be served
    though the report no longer mentions it. Hence the repository is built whole in a temporary
    folder and swapped in as checkpoints are (:func:`gtcompress.io.swap_dir_into_place`), never
    updated model by model."""
    tcfg = ctx.config["triton"]
    repo = ctx.out / "triton"
    recover_dead_dir_swaps(repo)
    best = choose_for_serving(report, tcfg["max_metric_drop"]) if tcfg["enabled"] else None
    if best is None:
        remove_dir(repo)
        if tcfg["enabled"]:
            report["triton"] = None
        return
    src = ctx.out / best["file"]
    name = best["model"].replace(".", "_")
    if repo.exists() and sorted(p.name for p in repo.iterdir()) != [name]:
        remove_dir(repo)  # anything besides this model (e.g. left by older code): rebuilt, not kept

    def write() -> dict[str, Any]:
        from exporters.triton_repo import write_model_repository

        tmp = make_temp_dir(repo)
        try:
            root = write_model_repository(tmp, name, src, read_spec(src), backend=tcfg["backend"])
            backend = "python" if (root / "1" / "model.py").is_file() else "onnxruntime"
            swap_dir_into_place(tmp, repo)
        finally:
            remove_path(tmp)
        return {"path": str(repo / name), "backend": backend}

    key = stage_key(best["file"], src.stat().st_mtime, tcfg["backend"], "raw-graph-variant")
    made = ctx.stage("triton-repo", key, [repo / name / "config.pbtxt"], write)
    report["triton"] = {"model": name, "repository": str(repo), "source": best["file"], "backend": made.get("backend")}
