import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GTCOMPRESS_CACHE", str(tmp_path / "cache"))


def _run(*args: str):
    return runner.invoke(app, list(args))


def _leaf_commands(command: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every runnable command of the app (``data generate``, not the ``data`` group)."""
    sub = getattr(command, "commands", None)
    if sub is None:
        return [path]
    return [leaf for name, cmd in sub.items() for leaf in _leaf_commands(cmd, (*path, name))]


def test_help_lists_commands_with_examples() -> None:
    res = _run("--help")
    assert res.exit_code == 0
    for cmd in ("train", "eval", "info", "data", "pipeline"):
        assert cmd in res.output


def test_every_command_help_has_an_example() -> None:
    """README.md: "Every command has --help with an example" (gtc info had none)."""
    import typer.main

    leaves = _leaf_commands(typer.main.get_command(app))
    assert ("info",) in leaves and ("data", "generate") in leaves
    missing = []
    for leaf in leaves:
        res = _run(*leaf, "--help")
        assert res.exit_code == 0, res.output
        if f"Example: gtc {' '.join(leaf)} " not in " ".join(res.output.split()):
            missing.append(" ".join(leaf))
    assert not missing, f"--help without an example: {missing}"


def test_data_generate_size_help_names_only_what_it_generates() -> None:
    """Its --size help was gtc train's, "(generated datasets, molhiv)": molhiv is refused here."""
    help_text = " ".join(_run("data", "generate", "--help").output.split())
    assert "molhiv" not in help_text and "(csl: small or full, 150 graphs)" in help_text
    res = _run("data", "generate", "molhiv")
    assert res.exit_code == 2
    assert res.output.strip() == "error: unknown generated dataset 'molhiv'; expected pattern, cluster or csl"


def test_data_generate_that_cannot_write_its_cache_fails(tmp_path: Path) -> None:
    """The cache file is ``gtc data generate``'s only output: one it cannot write was a warning under the
    table and exit status 0. It is one error line naming the file and the system's reason, exit 2; the
    library (what gtc train reads the data through) still only warns (tests/data/test_cache.py)."""
    import subprocess
    import sys

    (blocker := tmp_path / "a-file").write_text("")
    env = {**os.environ, "GTCOMPRESS_CACHE": str(blocker / "cache"), "PYTHONPATH": str(Path(__file__).parents[2])}
    args = [sys.executable, "-m", "cli.main", "data", "generate", "cluster", "--size", "4,2,2"]
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and res.stdout == "", res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"error: could not write dataset cache {blocker / 'cache'}/cluster-"), res.stderr
    assert lines[0].endswith(
        f"[Errno 20] Not a directory: '{blocker / 'cache'}'; set GTCOMPRESS_CACHE to a folder that can be written"
    ), res.stderr


def test_generate_train_eval_info(tmp_path: Path) -> None:
    res = _run("data", "generate", "cluster", "--size", "30,10,10", "--seed", "3")
    assert res.exit_code == 0, res.output
    assert "train" in res.output and "30" in res.output

    ckpt = tmp_path / "ckpt"
    res = _run(
        "train",
        "--data",
        "cluster",
        "--size",
        "30,10,10",
        "--arch",
        "gps",
        "--hidden",
        "16",
        "--layers",
        "1",
        "--heads",
        "2",
        "--epochs",
        "2",
        "--pe",
        "rwse:4",
        "--out",
        str(ckpt),
    )
    assert res.exit_code == 0, res.output
    meta = json.loads((ckpt / "config.json").read_text())
    assert meta["model"]["arch"] == "gps" and meta["model"]["pe"] == {"rwse": 4}
    assert meta["dataset"]["name"] == "cluster" and len(meta["history"]) == 2

    res = _run("eval", str(ckpt), "--split", "val")
    assert res.exit_code == 0, res.output
    assert "class_avg_acc" in res.output

    res = _run("info", str(ckpt))
    assert res.exit_code == 0, res.output
    assert "gps" in res.output and "rwse:4" in res.output
    assert "non-zero" in res.output  # what a weight-sparsified checkpoint keeps, as the report counts it

    # a hand-edited metrics section that is no object: one error line, not gtc info's AttributeError
    meta["metrics"] = [0.8, 0.7]
    (ckpt / "config.json").write_text(json.dumps(meta))
    res = _run("info", str(ckpt))
    assert res.exit_code == 2, res.output
    assert "config.json: the 'metrics' section must be a JSON object, got an array" in res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("data", "generate", "mnist"), "unknown generated dataset 'mnist'"),
        (("data", "generate", "cluster", "--size", "big"), "size must be 'small', 'full'"),
        (("train", "--data", "nope", "--epochs", "1"), "nope"),
        (("train", "--pe", "lap8", "--epochs", "1"), "--pe: expected entries like 'lap:8'"),
        (("train", "--arch", "bert", "--size", "10,5,5", "--epochs", "1"), "unknown arch 'bert'"),
        (
            ("train", "--readout", "min", "--epochs", "1"),
            "'--readout': Value error, 'min' is not one of 'mean', 'sum', 'max'.",
        ),
        (("eval", "/nonexistent/ckpt"), "checkpoint directory does not exist"),
        (("info", "/tmp"), "config.json: missing"),
        (("train", "--data", "tu:NOPE", "--data-root", "/tmp", "--epochs", "1"), "NOPE"),
        (("pipeline", "--set", "prune.budget=0.5"), "unknown key prune.budget"),
        (("pipeline", "--config", "/nonexistent.yaml"), "config file not found"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    res = _run(*args)
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize(("load", "busy"), [(0.1, False), (0.8, True), (3.0, True)])
def test_passive_openmp_only_on_a_busy_machine(monkeypatch, load: float, busy: bool) -> None:
    import cli

    monkeypatch.setattr(cli.os, "getloadavg", lambda: (load, 0.0, 0.0))
    assert cli._busy_machine() is busy


def test_train_may_overwrite_a_checkpoint_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    """--out naming an existing checkpoint replaces it (as it always has); no ``.ckpt.old-PID`` or
    temporary directory is left next to it."""
    runs = tmp_path / "runs"
    args = ["train", "--size", "10,5,5", "--hidden", "16", "--layers", "1", "--heads", "2", "--epochs", "1"]
    for seed in ("0", "1"):
        res = _run(*args, "--seed", seed, "--out", str(runs / "ckpt"))
        assert res.exit_code == 0, res.output
    assert [p.name for p in runs.iterdir()] == ["ckpt"]
    assert json.loads((runs / "ckpt" / "config.json").read_text())["train"]["seed"] == 1


@pytest.mark.parametrize(("args", "listed"), [((), "pipeline"), (("data",), "generate")])
def test_no_arguments_still_print_the_help(args: tuple[str, ...], listed: str) -> None:
    """The one-line usage errors (cli.common.OneLineErrorsGroup) leave click's "no arguments: help" alone."""
    res = _run(*args)
    assert "Usage:" in res.output and listed in res.output
    assert "error:" not in res.output


def test_os_errors_naming_a_file_are_one_line_others_are_bugs() -> None:
    """Permission denied, not a directory, disk full on a named file: the user's to fix, one line.
    An OSError without a file name stays a traceback: nothing tells the user what to fix."""
    import typer

    from cli.common import user_errors

    mini = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @mini.command()
    @user_errors
    def write(named: bool = True) -> None:
        raise PermissionError(13, "Permission denied", "/srv/models/m.onnx") if named else OSError(5, "I/O error")

    res = runner.invoke(mini, [])
    assert res.exit_code == 2 and res.stderr == "error: /srv/models/m.onnx: Permission denied\n"
    res = runner.invoke(mini, ["--no-named"])
    assert res.exit_code == 1 and isinstance(res.exception, OSError)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("train", "--seed", "-1"), "error: Invalid value for '--seed'"),
        (("data", "generate", "cluster", "--seed", "-2"), "error: Invalid value for '--seed'"),
        (("sparsify", "ck", "--edges", "0.3", "--seed", "-1"), "error: Invalid value for '--seed'"),
        (("prune", "ck", "--seed", "-1"), "error: Invalid value for '--seed'"),
        (("profile", "m.onnx", "--seed", "-1"), "error: Invalid value for '--seed'"),
        (("train", "--time-budget", "nan"), "error: Invalid value for '--time-budget': nan is not a number of seconds"),
        (("train", "--time-budget", "-5"), "error: Invalid value for '--time-budget': -5.0 is not a number of seconds"),
        (("sparsify", "ck", "--time-budget", "-1"), "error: Invalid value for '--time-budget': -1.0 is not a number"),
        (("prune", "ck", "--time-budget", "nan"), "error: Invalid value for '--time-budget': nan is not a number"),
        (("prune", "ck", "--finetune-time-budget", "inf"), "error: Invalid value for '--finetune-time-budget': inf "),
        # --out /dev/null: were --lr inf let through, the command would stop there at once, not train
        (("train", "--lr", "inf", "--out", "/dev/null"), "error: Invalid value for '--lr': inf is not a learning rate"),
        (("sparsify", "ck", "--edges", "0.3", "--lr", "inf"), "error: Invalid value for '--lr': inf is not a learning"),
        (("prune", "ck", "--lr", "inf"), "error: Invalid value for '--lr': inf is not a learning rate"),
        (("prune", "ck", "--gate-lr", "inf"), "error: Invalid value for '--gate-lr': inf is not a learning rate"),
        # NaN was refused by min=/max= as "Input should be greater than or equal to 1", as if it were too small
        (
            ("train", "--lr", "nan"),
            "error: Invalid value for '--lr': nan is not a learning rate for training (a finite number > 0;",
        ),
        # at 0 AdamW moves no weight: training wrote its random initialisation as a checkpoint, exit 0
        (
            ("train", "--lr", "0", "--out", "/dev/null"),
            "error: Invalid value for '--lr': 0.0 is not a learning rate for training (a finite number > 0; at 0 no "
            "weight would change)",
        ),
        (("train", "--lr", "-1e-3"), "error: Invalid value for '--lr': -0.001 is not a learning rate for training"),
        (("prune", "ck", "--gate-lr", "nan"), "error: Invalid value for '--gate-lr': nan is not a learning rate"),
        (
            ("train", "--dropout", "nan"),
            "error: Invalid value for '--dropout': nan is not a finite number from 0 to 0.9",
        ),
        (
            ("profile", "m.onnx", "--degree", "nan"),
            "error: Invalid value for '--degree': nan is not a finite number >= 0",
        ),
        (
            ("serve", "m.onnx", "--max-pe-work", "nan"),
            "error: Invalid value for '--max-pe-work': nan is not a finite number >= 1",
        ),
        (
            ("serve", "m.onnx", "--max-delay-ms", "-inf"),
            "error: Invalid value for '--max-delay-ms': -inf is not a finite number from 0 to 60000",
        ),
        (
            ("serve", "m.onnx", "--body-timeout-s", "nan"),
            "error: Invalid value for '--body-timeout-s': nan is not a finite number >= 0.001",
        ),
        (
            ("serve", "m.onnx", "--max-body-mib", "0"),
            "error: Invalid value for '--max-body-mib': 0 is not a finite number >= 0.001",
        ),
        # an infinite --startup-timeout waited for ever on a server that hangs
        (
            ("tritonserver", "repo", "--startup-timeout", "inf"),
            "error: Invalid value for '--startup-timeout': inf is not a finite number >= 1",
        ),
        (("export", "ck", "--profile-graphs", "0"), "error: Invalid value for '--profile-graphs'"),
        (("export", "ck", "--profile-graphs", "-3"), "error: Invalid value for '--profile-graphs'"),
    ],
)
def test_out_of_range_options_are_refused_when_parsed(args: tuple[str, ...], message: str) -> None:
    """A negative seed was a ValueError traceback from numpy; a negative or NaN time budget cut
    training to one epoch without a word; an infinite learning rate (``min=0`` lets ``inf`` through)
    made every weight NaN, and a one-epoch run wrote that checkpoint and exited 0; --profile-graphs 0
    a traceback from union_graphs (and a negative count silently sliced the list). Refused before anything is loaded."""
    res = _run(*args)
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith(message) and res.stderr.count("\n") == 1, res.stderr


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """An untrained GT on CLUSTER (12,6,6 graphs, split seed 3) and its TEDDY sparsification (half
    the edges of every graph, no fine-tuning): enough to check which graphs a command reads."""
    import torch

    from gtcompress.checkpoint import save_checkpoint
    from gtcompress.compress.teddy import SparsifyConfig, sparsify_model
    from gtcompress.models import ModelConfig, build_model
    from gtcompress.train.recipe import DataSpec

    root = tmp_path_factory.mktemp("ckpts")
    mp = pytest.MonkeyPatch()
    mp.setenv("GTCOMPRESS_CACHE", str(root / "cache"))
    spec = DataSpec("cluster", size="12,6,6", seed=3)
    ds = spec.load({"rwse": 4})
    torch.manual_seed(0)
    model = build_model(ModelConfig.for_dataset("gt", ds.info, hidden=16, num_layers=1, heads=2, pe={"rwse": 4}))
    meta = {"dataset": {**spec.to_dict(), "info": ds.info.to_dict()}}
    save_checkpoint(root / "dense", model.eval(), meta)
    res = sparsify_model(model, ds, SparsifyConfig(edges=0.5, epochs=0, cost_graphs=2), show_progress=False)
    m = res.report["metric"]["after"]
    teddy_meta = {**meta, "metrics": {"val": m["val"], "test": m["test"]}, "compression": res.report}
    save_checkpoint(root / "teddy", res.model, {**teddy_meta, "teddy": res.transform.to_dict()})
    yield root
    mp.undo()


def _edges_evaluated(monkeypatch) -> list[int]:
    """The number of edges of the graphs each ``evaluate`` call gets."""
    import gtcompress.train.loop as loop

    seen: list[int] = []
    real = loop.evaluate

    def evaluate(model, graphs, info, *args, **kwargs):
        seen.append(sum(g.num_edges for g in graphs))
        return real(model, graphs, info, *args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", evaluate)
    return seen


def test_eval_of_a_teddy_checkpoint_reads_sparsified_graphs(ckpts: Path, monkeypatch) -> None:
    """The model was trained and measured on TEDDY-sparsified graphs (config.json ``teddy``): gtc
    eval feeds the same, so it reproduces the recorded metric (it read the original graphs)."""
    seen = _edges_evaluated(monkeypatch)
    res = _run("eval", str(ckpts / "teddy"))
    assert res.exit_code == 0, res.output
    meta = json.loads((ckpts / "teddy" / "config.json").read_text())
    assert seen == [meta["compression"]["removed"]["edges"]["counts"]["test"]["after"]]
    assert f"{meta['metrics']['test']:.4f}" in res.output


def _write_tiny_tu(root: Path) -> None:
    """``root/TINY``: ten graphs of two linked nodes (a split needs at least one graph)."""
    tu = root / "TINY"
    tu.mkdir(parents=True)
    lines = {
        "A": [f"{a}, {b}" for i in range(10) for a, b in ((2 * i + 1, 2 * i + 2), (2 * i + 2, 2 * i + 1))],
        "graph_indicator": [str(i + 1) for i in range(10) for _ in range(2)],
        "graph_labels": [str(i % 2) for i in range(10)],
        "node_labels": ["0", "1"] * 10,
    }
    for part, rows in lines.items():
        (tu / f"TINY_{part}.txt").write_text("\n".join(rows) + "\n")


def test_a_relative_data_root_is_recorded_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint recorded ``--data-root TU`` as typed, so ``gtc eval`` (prune, sparsify) from any other
    working directory looked for the files there. A compressed checkpoint records the root it was given,
    not its input's stale one."""
    _write_tiny_tu(tmp_path / "TU")
    monkeypatch.chdir(tmp_path)
    args = ("--layers", "1", "--hidden", "8", "--heads", "1", "--epochs", "1", "--pe", "none")
    res = _run("train", "--data", "tu:TINY", "--data-root", "TU", *args, "--out", "m")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "m" / "config.json").read_text())["dataset"]["root"] == str(tmp_path / "TU")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    res = _run("eval", "../m")
    assert res.exit_code == 0, res.output
    (tmp_path / "TU").rename(tmp_path / "moved")
    res = _run("sparsify", "../m", "--edges", "0.2", "--data-root", "../moved", "--out", "s")
    assert res.exit_code == 0, res.output
    recorded = json.loads((tmp_path / "elsewhere" / "s" / "config.json").read_text())["dataset"]["root"]
    assert recorded == str(tmp_path / "moved")


def test_eval_on_another_dataset_checks_the_models_inputs(ckpts: Path, tmp_path: Path) -> None:
    """--data naming another dataset: its own defaults (the recorded size 12,6,6 is not carried to
    a TU dataset, which refuses explicit sizes), and inputs the model cannot take are one line
    naming both sides instead of an IndexError or a shape error mid-evaluation."""
    _write_tiny_tu(tmp_path / "TU")
    res = _run("eval", str(ckpts / "dense"), "--data", "tu:TINY", "--data-root", str(tmp_path / "TU"))
    assert res.exit_code == 2, res.output
    assert res.stderr == (
        f"error: --data tu:TINY does not fit the model of {ckpts / 'dense'}: task level: the model takes node, "
        "TINY has graph\n"
    )


@pytest.mark.parametrize(
    "command", [("sparsify", "--edges", "0.5", "--epochs", "0"), ("prune", "--target-flops", "0.5", "--epochs", "0")]
)
def test_compressing_a_checkpoint_into_itself_is_refused(ckpts: Path, command: tuple[str, ...]) -> None:
    """``--out`` naming the input checkpoint (another spelling of it too) replaced the dense model
    by its compressed one, exit 0: the parent it is compared with and made from again was gone."""
    dense = ckpts / "dense"
    before = {f.name: f.read_bytes() for f in dense.iterdir()}
    for src, out in ((dense, dense), (dense, ckpts / "." / "dense" / ".." / "dense"), (dense / "config.json", dense)):
        res = _run(command[0], str(src), *command[1:], "--out", str(out))
        assert res.exit_code == 2, res.output
        assert res.stderr == (
            f"error: --out {out}: is the checkpoint being compressed; write the compressed one to another "
            "directory (replacing it would lose the model it is made from)\n"
        )
    assert {f.name: f.read_bytes() for f in dense.iterdir()} == before


def _tiny_ogb(folder: Path, labels: list[str]) -> None:
    """An OGB-layout dataset (raw CSVs and a scaffold split) of one two-atom molecule per label."""
    import gzip

    n = len(labels)
    files = {
        "raw/edge.csv.gz": ["0,1"] * n,
        "raw/edge-feat.csv.gz": ["0,0,0"] * n,
        "raw/node-feat.csv.gz": ["5,0,4,5,3,0,2,0,0", "7,0,3,5,0,0,2,0,0"] * n,
        "raw/num-node-list.csv.gz": ["2"] * n,
        "raw/num-edge-list.csv.gz": ["1"] * n,
        "raw/graph-label.csv.gz": labels,
        "split/scaffold/train.csv.gz": [str(i) for i in range(n - 2)],
        "split/scaffold/valid.csv.gz": [str(n - 2)],
        "split/scaffold/test.csv.gz": [str(n - 1)],
    }
    for name, rows in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))


def test_eval_refuses_a_dataset_of_another_task(tmp_path: Path) -> None:
    """A binary classifier and a one-target regressor have the same inputs and outputs: gtc eval of
    one on the other's dataset printed the MAE of logits (or a ROC-AUC of regression values) as a
    valid metric, exit 0. The task the checkpoint records is compared too."""
    import torch

    from gtcompress.checkpoint import save_checkpoint
    from gtcompress.models import ModelConfig, build_model
    from gtcompress.train.recipe import DataSpec

    _tiny_ogb(tmp_path / "ogb" / "binds", ["0", "1"] * 4)
    _tiny_ogb(tmp_path / "ogb" / "solub", ["-1.5", "0.25", "2.75", "-3.0"] * 2)
    spec = DataSpec("ogb:binds", str(tmp_path / "ogb"))
    ds = spec.load({})
    assert (ds.info.task, ds.info.out_dim) == ("binary", 1)
    torch.manual_seed(0)
    model = build_model(ModelConfig.for_dataset("gt", ds.info, hidden=16, num_layers=1, heads=2, pe={}))
    save_checkpoint(tmp_path / "clf", model.eval(), {"dataset": {**spec.to_dict(), "info": ds.info.to_dict()}})

    res = _run("eval", str(tmp_path / "clf"), "--data", "ogb:solub")
    assert res.exit_code == 2, res.output
    assert res.stderr == (
        f"error: --data ogb:solub does not fit the model of {tmp_path / 'clf'}: task: the model takes binary, "
        "solub has regression\n"
    )
    res = _run("eval", str(tmp_path / "clf"))  # its own dataset still evaluates
    assert res.exit_code == 0, res.output
    assert "rocauc" in res.output


def test_a_dataset_name_in_the_wrong_case_is_pointed_at_the_folder(tmp_path: Path) -> None:
    """Dataset names are folder names, case-sensitive on Linux: ``--data tu:mutag`` with ``TU/MUTAG/``
    there said only that ``…/mutag`` was not found, as if the files were missing."""
    (tmp_path / "TU" / "MUTAG").mkdir(parents=True)
    _tiny_ogb(tmp_path / "ogb" / "ogbg_binds", ["0", "1"] * 4)
    res = _run("train", "--data", "tu:mutag", "--data-root", str(tmp_path), "--out", str(tmp_path / "m"))
    assert res.exit_code == 2, res.output
    assert res.stderr == (
        f"error: TU dataset folder not found: {tmp_path}/mutag (nor {tmp_path}/TU/mutag); dataset names are "
        f"case-sensitive: did you mean tu:MUTAG ({tmp_path}/TU/MUTAG)?\n"
    )
    res = _run("train", "--data", "ogb:OGBG-BINDS", "--data-root", str(tmp_path / "ogb"), "--out", str(tmp_path / "m"))
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error: OGB dataset 'OGBG-BINDS' not found: no raw/ folder in "), res.stderr
    assert res.stderr.endswith(
        f"; dataset names are case-sensitive: did you mean ogb:ogbg_binds ({tmp_path}/ogb/ogbg_binds)?\n"
    )
    assert not (tmp_path / "m").exists()


def test_ctrl_c_while_numpy_loads_is_interrupted_not_swallowed(tmp_path: Path) -> None:
    """torch's C extension imports numpy and clears any error of it, a KeyboardInterrupt included: a
    Ctrl-C landing there was swallowed, and ``gtc train`` went on with a half-loaded numpy until a
    traceback ("module 'numpy' has no attribute 'iterable'"). It is "interrupted", exit 130, now."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        f"""
        import sys

        class CtrlCDuringNumpy:  # a Ctrl-C arriving while numpy's modules load
            fired = False

            def find_spec(self, name, path=None, target=None):
                if name == "numpy.lib.npyio" and not CtrlCDuringNumpy.fired:
                    CtrlCDuringNumpy.fired = True
                    raise KeyboardInterrupt
                return None

        sys.meta_path.insert(0, CtrlCDuringNumpy())
        from cli.main import app

        app(["train", "--epochs", "1", "--out", {str(tmp_path / "ckpt")!r}], prog_name="gtc")
        """
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "GTCOMPRESS_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert (proc.returncode, proc.stderr) == (130, "interrupted\n"), proc.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []


def test_info_says_what_compression_changed(tmp_path: Path) -> None:
    """A TEDDY checkpoint must be served on sparsified inputs and a top-k GPS attends over fewer pairs;
    ``gtc info`` showed neither (its sizes and layers are the dense model's)."""
    from gtcompress.checkpoint import save_checkpoint
    from gtcompress.compress.attention_graph import with_attention_topk
    from gtcompress.data.base import FeatureSpec
    from gtcompress.models import ModelConfig, build_model

    cfg = ModelConfig(arch="gps", node_features=FeatureSpec("float", 3), out_dim=2, hidden=16, heads=2, num_layers=1)
    dense = build_model(cfg).eval()
    save_checkpoint(tmp_path / "dense", dense, {})
    teddy = {"teddy": {"edges": 0.3, "per_graph": True}, "compression": {"method": "teddy"}}
    save_checkpoint(tmp_path / "sa", with_attention_topk(dense, 8), teddy)
    save_checkpoint(tmp_path / "pruned", dense, {"compression": {"method": "gtsp"}})
    shown = {}
    for name in ("dense", "sa", "pruned"):
        res = _run("info", str(tmp_path / name))
        assert res.exit_code == 0, res.output
        shown[name] = " ".join(res.output.split())
    assert "compressed: none" in shown["dense"]
    want = "compressed: teddy (inputs lose 30% of edges to TEDDY; attention over edges + top-8 nodes by teddy)"
    assert want in shown["sa"]
    assert "compressed: GTSP pruning" in shown["pruned"]


def test_info_of_a_global_teddy_checkpoint_does_not_promise_the_share_of_every_graph(tmp_path: Path) -> None:
    """``--global`` fixes a score threshold on the training split: there it drops the ratio's share, on
    other graphs more or fewer (CLUSTER, 0.3: 30 % of the training edges, 11 % of the validation ones),
    yet ``gtc info`` said "inputs lose 30% of edges"."""
    from gtcompress.checkpoint import save_checkpoint
    from gtcompress.data.base import FeatureSpec
    from gtcompress.models import ModelConfig, build_model

    cfg = ModelConfig(arch="gt", node_features=FeatureSpec("float", 3), out_dim=2, hidden=16, heads=2, num_layers=1)
    teddy = {"edges": 0.3, "per_graph": False, "threshold": 1.4e-05}
    save_checkpoint(tmp_path / "g", build_model(cfg).eval(), {"teddy": teddy, "compression": {"method": "teddy"}})
    res = _run("info", str(tmp_path / "g"))
    assert res.exit_code == 0, res.output
    want = (
        "compressed: teddy (inputs lose their edges scoring below a TEDDY threshold (30% of the training "
        "split's edges))"
    )
    assert want in " ".join(res.output.split())


def test_train_pools_as_readout_says(tmp_path: Path) -> None:
    """``gtc train`` had no ``--readout``: every model it trained pooled by the mean."""
    from gtcompress.checkpoint import load_checkpoint

    out = tmp_path / "ckpt"
    args = ["train", "--data", "csl", "--hidden", "16", "--layers", "1", "--heads", "2", "--epochs", "1"]
    res = _run(*args, "--readout", "max", "--out", str(out))
    assert res.exit_code == 0, res.output
    model, _ = load_checkpoint(out)
    assert (model.config.task_level, model.config.readout) == ("graph", "max")
