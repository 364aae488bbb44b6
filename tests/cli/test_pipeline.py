"""End to end: the pipeline on a tiny config, its artifacts, resumption and interruption."""

import json
import re
import shutil
from pathlib import Path

import onnx
import pytest

from exporters.onnx import read_metadata
from gtcompress.errors import ConfigError
from gtcompress.pipeline import load_config, run_pipeline
from gtcompress.pipeline import run as pipeline

TINY = [
    "data.size=40,12,12",
    "train.archs=[gt]",
    "train.hidden=16",
    "train.layers=2",
    "train.heads=2",
    "train.epochs=1",
    "sparsify.epochs=1",
    "prune.budgets=[0.5]",
    "prune.epochs=1",
    "prune.finetune_epochs=1",
    "export.lowerings=[auto, plugin]",
    "export.verify_batches=2",
    "profile.batches=2",
    "profile.repeat=1",
    "profile.batch_graphs=6",
    "profile.graph_sizes=[16, 32]",
    "profile.sweep_iterations=2",
]


#: every pipeline of this module caches in a folder of its own (tests/cli/conftest.py)
pytestmark = pytest.mark.usefixtures("module_cache")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipe") / "run"
    out.mkdir()  # an empty folder given as --out takes a run as a new one would
    report = run_pipeline(load_config(None, TINY), out, log=lambda _: None)
    shutil.copytree(out, out.parent / "pristine")  # for tests that need TINY's run as it ended (see below)
    return out, report


@pytest.fixture
def pristine_run(run, tmp_path) -> Path:
    """A copy of the module's run as TINY left it, before other tests ran other settings into it."""
    out = tmp_path / "run"
    shutil.copytree(run[0].parent / "pristine", out)
    return out


def test_every_artifact_exists_and_is_consistent(run) -> None:
    out, report = run
    assert json.loads((out / "report.json").read_text())["rows"] == json.loads(json.dumps(report["rows"]))
    assert (out / "report.md").read_text().startswith("# gtcompress pipeline report")
    assert (out / "pareto.png").stat().st_size > 1000
    prof = json.loads((out / "profile" / "report.json").read_text())
    assert [m["name"] for m in prof["models"]] == report["profile"]["models"]
    assert "gt-dense" in report["profile"]["models"] and len(report["profile"]["models"]) == 2
    for png in ("latency_vs_size.png", "op_breakdown.png"):
        assert (out / "profile" / png).stat().st_size > 1000
    models = {r["model"] for r in report["rows"]}
    floats = {"gt-dense", "gt-dense-ft", "gt-teddy", "gt-gtsp-0.5", "gt-random-0.5"}
    assert models == floats | {f"{m}-int8" for m in floats}  # export.quantize: [int8] by default
    # the dense-ft control: the dense model with the compressed models' extra epochs; deltas against it
    control = next(r for r in report["rows"] if r["model"] == "gt-dense-ft")
    assert control["method"] == "dense-ft" and control["delta_vs_dense_ft"] == 0.0
    dense = next(r for r in report["rows"] if r["model"] == "gt-dense")
    for r in report["rows"]:  # int8 rows, the dense ones too, are set against the float32 parents
        assert r["precision"] == ("int8" if r["model"].endswith("-int8") else "float32")
        assert r["metric_drop"] == pytest.approx(dense["test"] - r["test"])
        assert r["speedup_vs_dense"] == pytest.approx(dense["latency_ms_p50"] / r["latency_ms_p50"])
    for r in report["rows"]:
        assert r["delta_vs_dense_ft"] == pytest.approx(r["test"] - control["test"])
    ft_meta = json.loads(read_metadata(out / control["file"])["compression"])
    assert ft_meta["method"] == "dense-ft" and ft_meta["epochs_run"] == 2  # prune.epochs + finetune_epochs
    assert "| model | lowering | test | Δ vs dense-ft | Δ vs dense |" in (out / "report.md").read_text()
    for r in report["rows"]:
        path = out / r["file"]
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
        spec = json.loads(read_metadata(path)["input_spec"])
        assert spec["lowering"] == r["lowering"]
        quantized = read_metadata(path).get("quantization")
        assert (quantized is not None) == (r["precision"] == "int8")
        assert r["max_abs_err"] <= (1.0 if quantized else 1e-4)  # int8's error is the scheme's
        if quantized:
            parent = next(p for p in report["rows"] if p["file"] == r["file"].replace("-int8.onnx", ".onnx"))
            assert r["lowering"] == parent["lowering"] and r["file_mb"] < parent["file_mb"]
            q = r["quantized"]  # set against the float32 file on the val split, searched within the default bound
            assert q["max_drop"] == 1.0 and q["within"] == (q["val_drop"] <= 1.0) and q["evaluations"] >= 1
            assert json.loads(quantized).get("float32_blocks", []) == q["float32_blocks"]
        else:
            assert "quantized" not in r
        assert 0 <= r["test"] <= 100 and r["latency_ms_p50"] > 0
    teddy = next(r for r in report["rows"] if r["model"] == "gt-teddy")
    assert json.loads(read_metadata(out / teddy["file"])["teddy"])["edges"] == 0.3
    pruned = next(r for r in report["rows"] if r["model"] == "gt-gtsp-0.5")
    comp = json.loads(read_metadata(out / pruned["file"])["compression"])
    assert comp["method"] == "gtsp" and abs(comp["cost"]["flops_ratio"] - 0.5) <= 0.5 * 0.03 + 1e-9
    assert report["triton"] is not None
    assert (Path(report["triton"]["repository"]) / report["triton"]["model"] / "config.pbtxt").is_file()


def test_compressed_checkpoints_record_their_own_metrics(run) -> None:
    """The stages saved the dense parent's meta with the report added, so ``gtc info`` on a pruned
    checkpoint showed the dense model's params, val and test as its recorded metrics."""
    from gtcompress.checkpoint import load_checkpoint

    out, _ = run
    for name in ("gt-dense-ft", "gt-teddy", "gt-gtsp-0.5", "gt-random-0.5"):
        model, meta = load_checkpoint(out / "models" / name)
        m, rep = meta["metrics"], meta["compression"]
        assert m["params"] == sum(p.numel() for p in model.parameters()), name
        after = rep["metric"]["after"] if "cost" in rep else rep  # dense-ft's report holds val/test itself
        assert (m["val"], m["test"]) == (after["val"], after["test"]), name


def test_report_metric_matches_the_onnx_artifact(run) -> None:
    out, report = run
    from gtcompress.train.recipe import DataSpec

    row = next(r for r in report["rows"] if r["model"] == "gt-gtsp-0.5")
    spec = json.loads(read_metadata(out / row["file"])["input_spec"])
    ds = DataSpec("cluster", None, "40,12,12", 0).load(spec["pe"])
    again = pipeline.evaluate_onnx(out / row["file"], ds, report["config"]["profile"], None)
    assert again["test"] == pytest.approx(row["test"], abs=1e-6)


def test_rerun_skips_every_stage(run) -> None:
    out, _ = run
    before = {p: p.stat().st_mtime_ns for p in (out / "onnx").iterdir()}
    logs: list[str] = []
    run_pipeline(load_config(None, TINY), out, log=logs.append)
    ran = [line for line in logs if line.startswith("▶")]
    assert ran == []
    assert before == {p: p.stat().st_mtime_ns for p in (out / "onnx").iterdir()}


def test_a_run_made_by_other_code_is_redone(run, monkeypatch) -> None:
    """After an upgrade (or a changed default) the cached models are stale: training starts over."""
    out, _ = run
    import gtcompress.train.recipe as recipe

    class Retrained(Exception):
        pass

    def fit(*args, **kwargs):
        raise Retrained

    monkeypatch.setattr(pipeline, "code_fingerprint", lambda: "other code")
    monkeypatch.setattr(recipe, "fit", fit)
    logs: list[str] = []
    with pytest.raises(Retrained):
        run_pipeline(load_config(None, TINY), out, log=logs.append)
    assert [line for line in logs if line.startswith("▶")] == ["▶ train:gt"]


def test_interrupted_stage_leaves_nothing_half_written_and_resumes(run, monkeypatch) -> None:
    out, _ = run
    cfg = load_config(
        None,
        [
            *TINY,
            "prune.budgets=[0.55]",  # GT's own axes: a token-pruned export would take 3x as long, twice
            "prune.random_baseline=false",
            "export.quantize=[]",  # the int8 stages are the module run's to test
        ],
    )
    import exporters.onnx as onnx_mod

    real = onnx_mod.onnx.save

    def crash(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt  # killed after writing the temp file, before the rename

    monkeypatch.setattr(onnx_mod.onnx, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, out, log=lambda _: None)
    leftovers = [p.name for p in (out / "onnx").iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []
    assert not (out / "onnx" / "gt-gtsp-0.55-auto.onnx").exists()
    monkeypatch.setattr(onnx_mod.onnx, "save", real)
    logs: list[str] = []
    report = run_pipeline(cfg, out, log=logs.append)
    ran = {line.split()[1] for line in logs if line.startswith("▶")}
    assert "prune:gt:gtsp:0.55" not in ran  # finished before the interruption: not redone
    assert "export:gt-gtsp-0.55:auto" in ran
    assert any(r["model"] == "gt-gtsp-0.55" for r in report["rows"])


def test_unreachable_budget_is_skipped_with_a_note(run) -> None:
    out, _ = run
    cfg = load_config(None, [*TINY, "prune.budgets=[0.5, 0.001]", "export.quantize=[]"])
    report = run_pipeline(cfg, out, log=lambda _: None)
    assert len(report["skipped"]) == 1 and report["skipped"][0].startswith("gt at 0.001 of the FLOPs")
    models = {r["model"] for r in report["rows"]}
    assert {"gt-gtsp-0.5", "gt-random-0.5"} <= models  # the baseline moves to the smallest reached budget
    assert not any("0.001" in m for m in models)
    assert "Skipped: gt at 0.001 of the FLOPs" in (out / "report.md").read_text()


def test_triton_repository_holds_exactly_the_model_the_report_names(run, tmp_path) -> None:
    """A second run that picked another model (or none, or had triton disabled) left the earlier
    model in ``triton/``, where ``gtc tritonserver`` would serve it though the report named one."""
    import shutil

    from gtcompress.pipeline.cache import StageCache
    from gtcompress.pipeline.context import RunContext
    from gtcompress.pipeline.deploy_stages import triton_stage

    out, _ = run
    named = json.loads((out / "report.json").read_text())["triton"]["model"]  # the latest run's, on disk
    assert sorted(p.name for p in (out / "triton").iterdir()) == [named]
    (tmp_path / "onnx").mkdir()
    for name in ("gt-dense-auto.onnx", "gt-gtsp-0.5-auto.onnx"):
        shutil.copy(out / "onnx" / name, tmp_path / "onnx" / name)

    def stage(fast: str, dense_drop: float = 0.0, **triton) -> dict:
        rows = [
            {"model": m, "file": f"onnx/{m}-auto.onnx", "lowering": "auto", "metric_drop": drop}
            | {"latency_ms_p50": 1.0 if m == fast else 2.0}
            for m, drop in (("gt-dense", dense_drop), ("gt-gtsp-0.5", 0.5))
        ]
        cfg = load_config(None, [f"triton.{k}={v}" for k, v in triton.items()])
        rep = {"rows": rows}
        triton_stage(RunContext(cfg, tmp_path, StageCache(tmp_path, lambda _: None), "k"), rep)
        repo = tmp_path / "triton"
        held = sorted(p.name for p in repo.iterdir()) if repo.exists() else []
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp folder left
        return {"held": held, "triton": rep.get("triton", "absent")}

    assert stage("gt-dense")["held"] == ["gt-dense"]
    second = stage("gt-gtsp-0.5")
    assert second["held"] == ["gt-gtsp-0_5"] and second["triton"]["model"] == "gt-gtsp-0_5"
    assert second["triton"]["repository"] == str(tmp_path / "triton")
    assert stage("gt-gtsp-0.5", max_metric_drop=0.1)["held"] == ["gt-dense"]  # gtsp no longer qualifies
    assert stage("gt-dense", max_metric_drop=0.1)["held"] == ["gt-dense"]  # cached: the same repository
    assert stage("gt-dense", dense_drop=0.5, max_metric_drop=0.1) == {"held": [], "triton": None}  # none qualifies
    assert stage("gt-gtsp-0.5")["held"] == ["gt-gtsp-0_5"]
    assert stage("gt-gtsp-0.5", enabled="false") == {"held": [], "triton": "absent"}
    # a repository that other code left with an extra model is rebuilt, though the stage's key matches
    assert stage("gt-dense")["held"] == ["gt-dense"]
    (tmp_path / "triton" / "stale").mkdir()
    assert stage("gt-dense")["held"] == ["gt-dense"]


def test_side_by_side_latency_includes_teddy(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """TEDDY ran once while the batches were built, outside the timer: a TEDDY model's latency,
    speed-up and serving pick counted the sparsification a server pays per request as free. Now each
    timed call sparsifies the union (the same edges as per graph) before the model runs."""
    from pathlib import Path

    import gtcompress.pipeline.measure as measure
    import gtcompress.preprocess.inputs as inputs_mod
    import gtcompress.preprocess.teddy as teddy_mod
    from gtcompress.data import load_dataset

    ds = load_dataset("cluster", size="4,2,6", seed=0, cache_dir=tmp_path)
    seen: dict[str, list[int]] = {"dense.onnx": [], "teddy.onnx": []}
    calls = []

    class Session:
        def __init__(self, path: Path) -> None:
            self.name = path.name

        def run(self, outputs: object, inputs: dict[str, int]) -> None:
            seen[self.name].append(inputs["edges"])

    sparsify = teddy_mod.teddy_sparsify
    monkeypatch.setattr(measure, "_ort_session", lambda path, threads: Session(path))
    monkeypatch.setattr(measure, "read_spec", lambda path: None)
    monkeypatch.setattr(inputs_mod, "build_inputs", lambda b, spec: {"edges": b.num_edges})
    monkeypatch.setattr(teddy_mod, "teddy_sparsify", lambda *a, **k: calls.append(1) or sparsify(*a, **k))
    pcfg = {"batch_graphs": 3, "batches": 2, "warmup": 1, "repeat": 2, "max_seconds": 60, "threads": 1}
    rows = measure.time_side_by_side(
        [(Path("dense.onnx"), ds, None), (Path("teddy.onnx"), ds, {"edges": 0.3, "per_graph": True})], pcfg
    )
    assert [r["timed_batches"] for r in rows] == [4, 4]  # 2 batches x 2 passes each
    assert len(calls) == 1 + 4  # the warm-up batch and every timed one
    dense, teddy = seen["dense.onnx"], seen["teddy.onnx"]
    assert all(t < d for t, d in zip(teddy, dense, strict=True))
    graphs = [g.to_numpy() for g in ds["test"][:3]]
    want = sum(sparsify(g, 0.3, True).num_edges for g in graphs)  # as evaluate_onnx sparsifies: per graph
    assert teddy[1] == want


def test_latency_is_retimed_when_the_exported_files_change(pristine_run, monkeypatch) -> None:
    """The latency and profile keys held only the models' keys: with export.lowerings reordered, the
    cached timings were zipped onto the new row order (the auto files given the plugin files'
    latencies); with a lowering changed, the old files' timings were reported for the new ones.

    The timer is replaced by one whose "latency" is a digest of the file it was given, so each row
    must carry its own file's figure: no speed is compared, which a loaded machine would upset. A copy
    of the module's run is reordered, then put back: each time only the latency is measured again."""
    import hashlib

    def fingerprint(path: Path) -> float:
        return int(hashlib.sha256(path.name.encode() + path.read_bytes()).hexdigest()[:8], 16) / 1e6

    def timer(models: list, pcfg: dict) -> list[dict]:
        figures = {"latency_ms_mean": 1.0, "latency_ms_p90": 1.0, "prep_ms_p50": 0.1, "timed_batches": 1}
        return [{"latency_ms_p50": fingerprint(p), **figures, "graphs_per_batch": 1, "threads": 1} for p, *_ in models]

    monkeypatch.setattr(pipeline, "time_side_by_side", timer)
    out = pristine_run
    reports = []
    for lowerings in ("[plugin, auto]", "[auto, plugin]"):
        logs: list[str] = []
        reports.append(run_pipeline(load_config(None, [*TINY, f"export.lowerings={lowerings}"]), out, log=logs.append))
        ran = [line for line in logs if line.startswith("▶")]
        assert "▶ latency" in ran and not [r for r in ran if r.startswith(("▶ export", "▶ train", "▶ evaluate"))]
    plugin_first, auto_first = ([r["lowering"] == "plugin" for r in rep["rows"]] for rep in reports)
    assert plugin_first != auto_first  # the rows follow export.lowerings: each got its own file's figure
    for rep in reports:
        assert {r["lowering"] == "plugin" for r in rep["rows"]} == {True, False}
        assert [r["latency_ms_p50"] for r in rep["rows"]] == [fingerprint(out / r["file"]) for r in rep["rows"]]


def test_a_stage_killed_inside_leaves_no_old_key_over_its_new_outputs(tmp_path) -> None:
    """The manifest was rewritten only after a stage: killed between writing its outputs and that,
    the previous run's entry vouched for the new outputs, and going back to the old settings reused them."""
    from gtcompress.pipeline.cache import StageCache

    out = tmp_path / "model.txt"
    cache = StageCache(tmp_path, log=lambda _: None)
    cache.stage("train", "key-seed-0", [out], lambda: out.write_text("seed 0") and {})

    def killed() -> dict:
        out.write_text("seed 1")
        raise KeyboardInterrupt  # stands in for the kill

    with pytest.raises(KeyboardInterrupt):
        cache.stage("train", "key-seed-1", [out], killed)
    reread = StageCache(tmp_path, log=lambda _: None)
    assert "train" not in reread.manifest
    ran = []
    reread.stage("train", "key-seed-0", [out], lambda: ran.append(1) or {})
    assert ran == [1]  # redone, not "seed 0" cached over seed 1's file


def test_a_dataset_changed_on_disk_is_a_new_dataset(tmp_path, monkeypatch) -> None:
    """The data key held the name, root, size and seed only: MUTAG with every label flipped reused the
    cached models and metrics; so did another GTCOMPRESS_DATA with root unset."""
    import os

    from gtcompress.pipeline.run import _data_key

    for d in ("a", "b"):
        (tmp_path / d / "TU" / "FAKE").mkdir(parents=True)
        (tmp_path / d / "TU" / "FAKE" / "FAKE_graph_labels.txt").write_text("1\n0\n")
    monkeypatch.setenv("GTCOMPRESS_DATA", str(tmp_path / "a"))
    cfg = load_config(None, ["data.name=tu:FAKE"])
    before = _data_key(cfg)
    assert _data_key(cfg) == before  # stable while nothing changes
    labels = tmp_path / "a" / "TU" / "FAKE" / "FAKE_graph_labels.txt"
    stamp = labels.stat().st_mtime_ns
    labels.write_text("0\n1\n")
    os.utime(labels, ns=(stamp + 1_000_000, stamp + 1_000_000))
    assert _data_key(cfg) != before
    changed = _data_key(cfg)
    monkeypatch.setenv("GTCOMPRESS_DATA", str(tmp_path / "b"))
    assert _data_key(cfg) != changed
    assert _data_key(load_config(None, ["data.name=cluster"])) == _data_key(load_config(None, ["data.name=cluster"]))


def test_a_dataset_file_changed_with_its_size_and_mtime_kept_is_a_new_dataset(tmp_path, monkeypatch) -> None:
    """The data key held each file's size and mtime: labels flipped in place with the timestamp kept
    (``cp -p``, ``rsync -a``, ``tar x``, a coarse-mtime file system) reused the models and metrics of
    the old labels."""
    import os

    from gtcompress.pipeline.run import _data_key

    labels = tmp_path / "TU" / "FAKE" / "FAKE_graph_labels.txt"
    labels.parent.mkdir(parents=True)
    labels.write_text("1\n0\n")
    monkeypatch.setenv("GTCOMPRESS_DATA", str(tmp_path))
    cfg = load_config(None, ["data.name=tu:FAKE"])
    before = _data_key(cfg)
    stat = labels.stat()
    labels.write_text("0\n1\n")
    os.utime(labels, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (labels.stat().st_size, labels.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert _data_key(cfg) != before


def test_a_second_run_into_the_same_folder_is_refused(tmp_path) -> None:
    """Two runs into one --out would interleave stage files under one manifest: while one holds the
    folder's lock, another is refused before any stage, and leaves the folder as it was."""
    from filelock import FileLock

    out = tmp_path / "run"
    out.mkdir()
    with FileLock(out / pipeline.LOCK_NAME, timeout=0), pytest.raises(ConfigError) as e:
        run_pipeline(load_config(None, TINY), out, log=lambda _: None)
    assert str(e.value) == (
        f"--out {out}: another `gtc pipeline` is running into this folder; wait for it to finish, or give another --out"
    )
    assert sorted(p.name for p in out.iterdir()) == [pipeline.LOCK_NAME]


def test_the_lock_of_a_finished_run_does_not_block_the_next(run) -> None:
    from filelock import FileLock

    out, _ = run
    assert (out / pipeline.LOCK_NAME).exists()
    with FileLock(out / pipeline.LOCK_NAME, timeout=0):  # free: a next run takes it
        pass


def test_an_out_that_is_a_file_is_refused(tmp_path) -> None:
    (out := tmp_path / "run").write_text("mine")
    with pytest.raises(ConfigError) as e:
        run_pipeline(load_config(None, TINY), out, log=lambda _: None)
    assert str(e.value) == f"--out {out}: is a file; the pipeline writes its run into a folder"
    assert out.read_text() == "mine"


def _no_stage(ctx):
    raise AssertionError("a stage ran before the folder was refused")


def test_an_out_holding_someone_elses_files_is_refused(tmp_path, monkeypatch) -> None:
    """The run's stages were written beside the user's notes (``gtc train --out`` refuses such a folder)."""
    monkeypatch.setattr(pipeline, "dense_models", _no_stage)
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "data").mkdir()
    with pytest.raises(ConfigError) as e:
        run_pipeline(load_config(None, TINY), out, log=lambda _: None)
    assert str(e.value) == (
        f"--out {out}: exists and is not a pipeline run (a non-empty folder with no manifest.json or "
        ".pipeline.lock; it holds data, notes.txt); give a new or empty folder, or a previous run's folder to "
        "resume it"
    )
    assert sorted(p.name for p in out.iterdir()) == ["data", "notes.txt"] and not any((out / "data").iterdir())


def test_gtc_pipeline_into_someone_elses_folder_is_one_line(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    monkeypatch.setattr(pipeline, "dense_models", _no_stage)
    out = tmp_path / "run"
    out.mkdir()
    for name in ("a.txt", "b.txt", "c.txt", "notes.txt"):
        (out / name).write_text("mine")
    res = CliRunner().invoke(app, ["pipeline", "--out", str(out)])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1, res.output
    assert res.stderr.startswith(f"error: --out {out}: exists and is not a pipeline run"), res.stderr
    assert "it holds a.txt, b.txt, c.txt and 1 more" in " ".join(res.stderr.split())


def test_a_run_that_failed_before_its_first_stage_finished_resumes(tmp_path, monkeypatch) -> None:
    """A new run that fails leaves what it wrote and its lock, which marks the folder as a run: the next
    run resumes it rather than taking it for someone's folder. One that wrote nothing leaves nothing."""

    def fails(ctx):
        (ctx.out / "models").mkdir(parents=True, exist_ok=True)
        (ctx.out / "models" / "partial.txt").write_text("written")
        raise RuntimeError("stage failed")

    monkeypatch.setattr(pipeline, "dense_models", fails)
    out = tmp_path / "run"
    for _ in range(2):  # the second run gets past the folder check to the stage again
        with pytest.raises(RuntimeError, match="stage failed"):
            run_pipeline(load_config(None, TINY), out, log=lambda _: None)
        assert sorted(p.name for p in out.iterdir()) == [pipeline.LOCK_NAME, "models"]

    def fails_at_once(ctx):
        (ctx.out / "models").mkdir(parents=True, exist_ok=True)
        raise RuntimeError("stage failed")

    monkeypatch.setattr(pipeline, "dense_models", fails_at_once)
    with pytest.raises(RuntimeError, match="stage failed"):
        run_pipeline(load_config(None, TINY), tmp_path / "new", log=lambda _: None)
    assert not (tmp_path / "new").exists()


def test_a_model_tensorrt_cannot_build_leaves_the_other_engines(monkeypatch, tmp_path) -> None:
    """One export TensorRT refuses (an operator it lacks) stopped the whole run; it is now a note in the
    report and the other engines are built."""
    from types import SimpleNamespace

    import exporters.tensorrt
    import trt_plugins.tensorrt_plugin
    from gtcompress.errors import ModelFileError
    from gtcompress.pipeline.cache import StageCache
    from gtcompress.pipeline.deploy_stages import tensorrt_stages

    def build(onnx_path: Path, plan: Path, *args: object, **kwargs: object) -> Path:
        if onnx_path.stem == "bad":
            raise ModelFileError(f"{onnx_path}: TensorRT's ONNX parser failed: no importer for op Foo")
        plan.write_bytes(b"engine")
        return plan

    monkeypatch.setattr(trt_plugins.tensorrt_plugin, "tensorrt_available", lambda: True)
    monkeypatch.setattr(exporters.tensorrt, "build_engine", build)
    logs: list[str] = []
    cache = StageCache(tmp_path, logs.append)
    ctx = SimpleNamespace(config={"tensorrt": {"enabled": True, "fp16": False}}, log=logs.append, stage=cache.stage)
    exported = [
        SimpleNamespace(
            path=tmp_path / f"{n}.onnx", key=n, requested="auto", model=SimpleNamespace(name=n), precision=p
        )
        for n, p in (("bad", "float32"), ("good", "float32"), ("good-int8", "int8"))
    ]
    note = tensorrt_stages(ctx, exported)  # type: ignore[arg-type]
    assert note == (
        f"built 1 of 2 engines; not built: bad.onnx ({tmp_path / 'bad.onnx'}: TensorRT's ONNX parser failed: "
        "no importer for op Foo)"
    )
    assert (tmp_path / "good.plan").read_bytes() == b"engine" and not (tmp_path / "bad.plan").exists()
    assert not (tmp_path / "good-int8.plan").exists()  # a quantized file is not TensorRT's to build
    assert "tensorrt:bad:auto" not in cache.manifest and "tensorrt:good:auto" in cache.manifest


def test_a_profile_pass_that_fails_leaves_the_run_and_the_rows_measured(pristine_run, monkeypatch) -> None:
    """A profile pass failing (ONNX Runtime out of memory at the largest size) raised out of the pipeline:
    no report.json, no report.md, a run ending in a traceback after its models were made and measured. The
    run now ends, the profile keeps the other model's rows and names the failure, and the profile stage is
    not recorded as done, so the next run measures it again."""
    import runtime.profile as prof

    real = prof.measure_model

    def measure_model(path: str, *args, **kwargs):
        # every model but the dense one fails: the compressed model picked is the fastest within the drop,
        # gt-dense-ft among them when the machine's load has it measured fastest ("gt-dense-ft-auto.onnx")
        if not re.fullmatch(r"gt-dense-[a-z]+\.onnx", Path(path).name):
            raise RuntimeError("onnxruntime: Failed to allocate memory for requested buffer of size 1073741824")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(prof, "measure_model", measure_model)
    cfg = load_config(None, [*TINY, "profile.graph_sizes=[16, 24]"])  # a new profile key: the stage runs
    logs: list[str] = []
    report = run_pipeline(cfg, pristine_run, log=logs.append)
    summary = report["profile"]
    assert summary["dir"] == str(pristine_run / "profile") and summary["models"][0] == "gt-dense"
    picked = summary["models"][1]
    (line,) = summary["failed"]
    assert line == (
        f"{picked} · 1T: 16×1, 24×1, 16×6, 24×6 not measured: RuntimeError: "
        "onnxruntime: Failed to allocate memory for requested buffer of size 1073741824"
    )
    assert f"[yellow]profile: failed: {line}[/]" in logs
    prof_report = json.loads((pristine_run / "profile" / "report.json").read_text())
    rows = {m["name"]: m["results"] for m in prof_report["models"]}
    assert [(r["graph_nodes"], r["batch_size"]) for r in rows["gt-dense"]] == [(16, 1), (16, 6), (24, 1), (24, 6)]
    assert rows[picked] == [] and len(prof_report["failed"]) == 1
    assert json.loads((pristine_run / "report.json").read_text())["profile"]["failed"] == [line]
    md = (pristine_run / "report.md").read_text()
    assert f"- {line}\n" in md and "![Latency vs graph size](profile/latency_vs_size.png)" in md
    assert "profile" not in json.loads((pristine_run / "manifest.json").read_text())  # measured again next run

    monkeypatch.setattr(prof, "measure_model", lambda *args, **kwargs: (_ for _ in ()).throw(RuntimeError("no")))
    report = run_pipeline(cfg, pristine_run, log=lambda _: None)  # nothing measured: no plots of older rows
    assert report["profile"]["dir"] is None and len(report["profile"]["failed"]) == 2
    assert not (pristine_run / "profile").exists()
    md = (pristine_run / "report.md").read_text()
    assert "is incomplete: nothing was measured; 2 failed measurements" in md and "profile/latency_vs_size" not in md
