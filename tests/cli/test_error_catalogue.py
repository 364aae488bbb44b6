"""A catalogue of user mistakes on every ``gtc`` command: each is exactly one ``error: …`` line on
stderr, nothing on stdout, exit code 2 and no traceback.

The rule is the project's (``cli/common.py``): a mistake the user can fix is one sentence naming the
file or option and what was expected. The cases run through the real ``gtc`` app (``cli.main.app``)
with typer's ``CliRunner``; they share one tiny checkpoint (1 epoch on 12 CLUSTER graphs) and a few
hand-made files (ONNX models built with ``onnx.helper``, not exported). No case trains, exports or
serves; one profiles the tiny checkpoint for a few milliseconds. The module runs in about 10 s.
The catalogue is one table so that ``test_catalogue_covers_every_command`` sees all of it: hence a
little over 500 lines, most of them cases.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner, Result

from cli.main import app
from gtcompress.checkpoint import save_checkpoint
from gtcompress.train.loop import TrainConfig
from gtcompress.train.recipe import DataSpec, fit

runner = CliRunner()
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# What `gtc export` writes for a GT on CLUSTER (dense lowering), enough for `gtc build` to size a profile.
INPUT_SPEC = {
    "arch": "gt",
    "task_level": "node",
    "lowering": "dense",
    "global_attention": False,
    "pe": {"lap": 8},
    "x": {"dtype": "int64", "kind": "categorical", "dim": 1, "cardinalities": [7]},
    "edge_attr": None,
    "output": {"name": "output", "dim": 6, "per": "node"},
    "packed": True,
    "inputs": ["x", "edge_index", "batch", "node_counts", "pe_lap", "node_slot", "pad_mask"],
}


def _onnx_model(metadata: dict[str, str]) -> onnx.ModelProto:
    """A valid ONNX model (``y = x + w``) with 256 weights, so that cutting it in half cuts a tensor."""
    w = numpy_helper.from_array(np.arange(256, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["output"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [256])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [256])],
        [w],
    )
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 18)])
    helper.set_model_props(model, metadata)
    return model


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Every file and directory the cases name, by placeholder (``{ckpt}``, ``{truncated_onnx}``...)."""
    root = tmp_path_factory.mktemp("catalogue")
    mp = pytest.MonkeyPatch()
    mp.setenv("GTCOMPRESS_CACHE", str(root / "cache"))
    res = fit(
        DataSpec("cluster", size="12,6,6", seed=0),
        "gt",
        {"hidden": 16, "num_layers": 1, "heads": 2, "pe": {"rwse": 4}},
        TrainConfig(epochs=1, batch_size=6),
        show_progress=False,
    )
    ckpt = save_checkpoint(root / "ckpt", res.model, res.meta)
    mp.undo()

    (root / "file.txt").write_text("not a checkpoint\n")
    (root / "empty_dir").mkdir()
    (root / "junk_dir").mkdir()
    (root / "junk_dir" / "notes.txt").write_text("mine\n")
    (root / "other_format").mkdir()
    (root / "other_format" / "config.json").write_text('{"format": "something-else"}')
    (root / "bad_json").mkdir()
    (root / "bad_json" / "config.json").write_text('{"format": "gtcompress-checkpoint", "model"')
    shutil.copytree(ckpt, root / "truncated_weights")
    weights = root / "truncated_weights" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])
    shutil.copytree(ckpt, root / "newer_format")
    doc = json.loads((ckpt / "config.json").read_text())
    (root / "newer_format" / "config.json").write_text(
        json.dumps({**doc, "format_version": 2, "gtcompress_version": "9.0.0"})
    )

    onnx.save(_onnx_model({"input_spec": json.dumps(INPUT_SPEC)}), root / "spec.onnx")
    onnx.save(_onnx_model({}), root / "nospec.onnx")
    onnx.save(_onnx_model({"input_spec": '{"lowering": "dense"'}), root / "badspec.onnx")
    data = (root / "spec.onnx").read_bytes()
    (root / "truncated.onnx").write_bytes(data[: len(data) // 2])
    (root / "empty.onnx").write_bytes(b"")
    (root / "text.onnx").write_text("not a model\n")
    (root / "bad.yaml").write_text("prune: [1,\n  2\n x: {\n")
    sparse = root / "tu_sparse_labels" / "SPARSE"  # ten 2-node graphs, one node labelled 10**9
    sparse.mkdir(parents=True)
    (sparse / "SPARSE_A.txt").write_text(
        "".join(f"{2 * g + 1}, {2 * g + 2}\n{2 * g + 2}, {2 * g + 1}\n" for g in range(10))
    )
    (sparse / "SPARSE_graph_indicator.txt").write_text("".join(f"{g + 1}\n{g + 1}\n" for g in range(10)))
    (sparse / "SPARSE_graph_labels.txt").write_text("".join(f"{g % 2}\n" for g in range(10)))
    (sparse / "SPARSE_node_labels.txt").write_text("0\n1000000000\n" + "0\n1\n" * 9)
    (root / "list.yaml").write_text("- prune\n- export\n")
    # YAML keeps the last of two equal keys without a word; TOML refuses them
    (root / "dup_section.yaml").write_text("prune:\n  budgets: [0.5]\nprune:\n  epochs: 1\n")
    (root / "dup_key.yaml").write_text("train: {epochs: 3}\nprune:\n  budgets: [0.5]\n  budgets: [0.3]\n")
    # a TU dataset with split counts: load_dataset refused the pair, naming neither config.json nor the key
    shutil.copytree(ckpt, root / "tu_sized")
    (root / "tu_sized" / "config.json").write_text(
        json.dumps({**doc, "dataset": {**doc["dataset"], "name": "tu:MUTAG", "size": "40,10,10"}})
    )
    names = {p.name.replace(".", "_"): str(p) for p in root.iterdir()}
    return {**names, "root": str(root), "missing": str(root / "missing")}


@dataclass(frozen=True)
class Case:
    """``gtc ARGS`` and its one error line: an exact text, or a regular expression it must match in full."""

    args: str
    error: str
    regex: bool = False


def _case(args: str, error: str, *, regex: bool = False, xfail: str | None = None):  # type: ignore[no-untyped-def]
    marks = [pytest.mark.xfail(reason=xfail, strict=True)] if xfail else []
    return pytest.param(Case(args, error, regex), id=args.replace("{", "").replace("}", ""), marks=marks)


NOT_A_CKPT = "(a checkpoint is a directory with config.json and model.safetensors)"
NO_TRT = "TensorRT is not installed (the Python package 'tensorrt' cannot be imported). Install it with "

CASES = [
    # the command line itself (click's parsing, made one line by cli.common.OneLineErrorsGroup)
    _case("nosuchcommand", "No such command 'nosuchcommand'. (see 'gtc --help')"),
    _case("data frobnicate", "No such command 'frobnicate'. (see 'gtc data --help')"),
    _case("train --bogus-option", "No such option: --bogus-option (see 'gtc train --help')"),
    _case(
        "train --epochs 0",
        "Invalid value for '--epochs': Input should be greater than or equal to 1 (see 'gtc train --help')",
    ),
    _case(
        "train --dropout 1.5",
        "Invalid value for '--dropout': 1.5 is not a finite number from 0 to 0.9 (see 'gtc train --help')",
    ),
    _case(
        "train --data tu:NCI1 --data-root {file_txt}",
        "Invalid value for '--data-root': dir '{file_txt}' is a file. (see 'gtc train --help')",
    ),
    _case(  # as train refuses it (prune and sparsify let a file through to later, other messages)
        "prune {ckpt} --target-flops 0.5 --data-root {file_txt}",
        "Invalid value for '--data-root': dir '{file_txt}' is a file. (see 'gtc prune --help')",
    ),
    _case(
        "data generate cluster --seed x",
        "Invalid value for '--seed': Input should be a valid integer, unable to parse string as an integer "
        "(see 'gtc data generate --help')",
    ),
    _case("eval", r"Missing argument '(checkpoint|CHECKPOINT)'\. \(see 'gtc eval --help'\)", regex=True),
    _case(
        "serve {spec_onnx} --port 70000",
        "Invalid value for '--port': Input should be less than or equal to 65535 (see 'gtc serve --help')",
    ),
    _case(
        "profile {spec_onnx} --iterations 1",
        "Invalid value for '--iterations': Input should be greater than or equal to 2 (see 'gtc profile --help')",
    ),
    # train
    _case(
        "train --data nope --epochs 1 --out {root}/t",
        "unknown dataset 'nope'; valid names: pattern, cluster, csl, molhiv, tu:<NAME>, ogb:<NAME>",
    ),
    _case(
        "train --arch bert --size 10,5,5 --epochs 1 --out {root}/t",
        "unknown arch 'bert'; expected one of gt, gps, graphormer",
    ),
    _case(
        "train --pe lap8 --epochs 1 --out {root}/t",
        "--pe: expected entries like 'lap:8' or 'rwse:20' (comma-separated), got 'lap8'",
    ),
    _case(
        "train --size big --out {root}/t", "size must be 'small', 'full' or 'TRAIN,VAL,TEST' graph counts, got 'big'"
    ),
    _case(
        "train --size 5,0,5 --epochs 1 --out {root}/t",
        "size '5,0,5': every split needs at least one graph (TRAIN,VAL,TEST >= 1)",
    ),
    _case(  # generated until the OOM killer ended it
        "train --size 1000000000000,1,1 --epochs 1 --out {root}/t",
        r"size 1000000000000,1,1: CLUSTER graphs take about [0-9]+ KiB each, so 1,000,000,000,002 graphs need at "
        r"least [0-9,.]+ GiB, more than this machine's [0-9.]+ GiB of memory; choose smaller split sizes",
        regex=True,
    ),
    _case(  # was accepted and written into the checkpoint, though a node-level model reads no readout
        "train --readout max --size 10,5,5 --epochs 1 --out {root}/t",
        "readout 'max' pools each graph's nodes into one prediction, but CLUSTER is node-level (a prediction per "
        "node, nothing pooled): leave the readout at 'mean'",
    ),
    _case(
        "train --hidden 30 --heads 4 --size 10,5,5 --epochs 1 --out {root}/t",
        "--hidden 30 must be a multiple of --heads 4 (each head gets hidden/heads channels)",
    ),
    _case(  # was torch's "DefaultCPUAllocator: can't allocate memory" traceback
        "train --hidden 100000000 --heads 1 --layers 1 --size 10,5,5 --epochs 1 --out {root}/t",
        r"gt with hidden 100000000, 1 layer: 85,000,003,050,000,006 weights, which take 1266598746\.9 GiB to train "
        r"\(16 bytes a weight: the weight, its gradient and AdamW's two moments\), more than this machine's "
        r"[0-9.]+ GiB of memory; 80,000,001,100,000,000 of them are the transformer layers \(hidden 100000000, "
        r"heads 1, head_dim 100000000, ffn_dim 200000000\): choose a smaller hidden size or fewer layers",
        regex=True,
    ),
    _case(  # one node label of 10**9 embeds a billion rows: "fewer layers" was the advice
        "train --data tu:SPARSE --data-root {tu_sparse_labels} --epochs 1 --out {root}/t",
        r"gt with hidden 64, 4 layers: 64,000,137,442 weights, which take 953\.7 GiB to train \(16 bytes a weight: "
        r"the weight, its gradient and AdamW's two moments\), more than this machine's [0-9.]+ GiB of memory; "
        r"64,000,000,064 of them are the node feature encoder: hidden 64 for each of 1,000,000,001 categories "
        r"\(node_features\.cardinalities \[1000000001\], from the dataset\): renumber the dataset's node labels "
        r"densely from 0, or choose a smaller hidden size",
        regex=True,
    ),
    _case(
        "train --data tu:NOPE --data-root {junk_dir} --epochs 1 --out {root}/t",
        "TU dataset folder not found: {junk_dir}/NOPE (nor {junk_dir}/TU/NOPE)",
    ),
    _case(
        "train --epochs 1 --out {file_txt}",
        "--out {file_txt}: exists and is a file, not a checkpoint directory; refusing to replace it",
    ),
    _case(
        "train --epochs 1 --out {junk_dir}",
        "--out {junk_dir}: exists and is not a gtcompress checkpoint (a non-empty directory with no checkpoint "
        "config.json); refusing to replace it",
    ),
    _case(
        "train --epochs 1 --out {file_txt}/run",
        "--out {file_txt}/run: {file_txt} is a file, not a directory",
    ),
    # eval, info
    _case("eval {missing}", "{missing}: checkpoint directory does not exist"),
    _case("eval {file_txt}", f"{{file_txt}}: not a checkpoint directory {NOT_A_CKPT}"),
    _case("eval {ckpt} --split bogus", "unknown split 'bogus'; this dataset has train, val, test"),
    _case(  # names the option now, as gtc pipeline --data does
        "eval {ckpt} --data mnist",
        "--data: unknown dataset 'mnist'; valid names: pattern, cluster, csl, molhiv, tu:<NAME>, ogb:<NAME>",
    ),
    _case(
        "eval {bad_json}",
        "{bad_json}/config.json: not valid JSON (Expecting ':' delimiter: line 1 column 44 (char 43))",
    ),
    _case(
        "eval {truncated_weights}",
        r"{truncated_weights}/model\.safetensors: unreadable safetensors file \(.+\)",
        regex=True,
    ),
    _case(  # was read as format 1 without a word
        "eval {newer_format}",
        "{newer_format}/config.json: checkpoint format_version 2 is newer than this gtcompress (0.1.0) reads (1); "
        "it was written by gtcompress 9.0.0: upgrade gtcompress to load it",
    ),
    _case("info {empty_dir}", f"{{empty_dir}}/config.json: missing {NOT_A_CKPT}"),
    _case("info {other_format}", "{other_format}/config.json: not a gtcompress checkpoint (format='something-else')"),
    # sparsify
    _case("sparsify {ckpt}", "nothing to do: give --edges, --weights and/or --attention-topk"),
    _case("sparsify {ckpt} --edges 1.5", "--edges must lie in [0, 1) (fraction of edges removed), got 1.5"),
    _case("sparsify {ckpt} --weights -0.1", "--weights must lie in [0, 1) (fraction of weights zeroed), got -0.1"),
    _case(  # the option was not named
        "sparsify {ckpt} --edges 0.3 --attention-coverage 2", "--attention-coverage must lie in (0, 1], got 2.0"
    ),
    _case(
        "sparsify {ckpt} --attention-topk 3",
        "GT attention already runs over the input edges only: sparsify those with --edges instead",
    ),
    _case(
        "sparsify {ckpt} --edges 0.3 --out {file_txt}",
        "--out {file_txt}: exists and is a file, not a checkpoint directory; refusing to replace it",
    ),
    # prune
    _case("prune {ckpt}", "no budget: give --target-flops or per-axis --keep ratios"),
    _case("prune {ckpt} --target-flops 1.2", "--target-flops must lie in (0, 1) (fraction of FLOPs kept), got 1.2"),
    _case(
        "prune {ckpt} --target-flops 0.4 --axes heads,neurons",
        "unknown axis 'neurons'; expected some of tokens, heads, layers, ffn, weights, auto",
    ),
    _case(
        "prune {ckpt} --keep heads=abc", "--keep: expected entries like heads=0.5 (comma-separated), got 'heads=abc'"
    ),
    _case(  # the last ratio silently won
        "prune {ckpt} --keep heads=0.5,ffn=0.5,Heads=0.7",
        "--keep: heads given twice (heads=0.5 and heads=0.7); give it once",
    ),
    _case("prune {ckpt} --keep ''", "--keep: empty; expected entries like heads=0.5 (comma-separated)"),
    _case(  # the nearest count to 0.8 x 2 heads is 2: a "pruned" copy of the input, with exit 0
        "prune {ckpt} --keep heads=0.8",
        "keep heads=0.8 removes nothing: it keeps all 2 heads, the nearest count to 0.8 x 2; a ratio below 0.75 "
        "removes one, or leave heads out of --keep",
    ),
    _case(
        "prune {ckpt} --target-flops 0.5 --keep heads=0.5",
        "give either --target-flops or per-axis --keep ratios (heads/ffn/layers), not both",
    ),
    _case(
        "prune {ckpt} --target-flops 0.5 --allocation even",
        "--allocation 'even': expected auto, uniform or global",
    ),
    _case(  # named as the --keep tokens= ratio it becomes
        "prune {ckpt} --target-flops 0.5 --token-keep 0",
        "--token-keep must lie in (0, 1] (fraction of nodes kept), got 0.0",
    ),
    _case(
        "prune {ckpt} --target-flops 0.5 --weight-sparsity 1",
        "--weight-sparsity must lie in [0, 1) (fraction of weights zeroed), got 1.0",
    ),
    _case(
        "prune {ckpt} --target-flops 0.01 --axes heads --epochs 0",
        r"target 0\.010 of the FLOPs is impossible with axes heads: the least reachable is 0\.\d+ \(.+\)",
        regex=True,
    ),
    _case(
        "prune {ckpt} --target-flops 0.5 --out {junk_dir}",
        "--out {junk_dir}: exists and is not a gtcompress checkpoint (a non-empty directory with no checkpoint "
        "config.json); refusing to replace it",
    ),
    # export
    _case("export {missing}", "{missing}: checkpoint directory does not exist"),
    _case("export {file_txt}", f"{{file_txt}}: not a checkpoint directory {NOT_A_CKPT}"),
    _case(
        "export {ckpt} --attention bogus --out {root}/x.onnx",
        "unknown attention lowering 'bogus'; expected auto, scatter, padded, dense, plugin",
    ),
    _case(
        "export {ckpt} --out {root}/x.onnx --triton-repo {root}/repo --triton-backend tensorrt",
        "--triton-backend 'tensorrt': expected auto, python or onnxruntime",
    ),
    _case(
        "export {ckpt} --out {root}/x.onnx --triton-repo {root}/repo --triton-max-batch 0",
        "--triton-max-batch 0: expected at least 1",
    ),
    _case(
        "export {ckpt} --out {root}/x.onnx --triton-repo {root}/repo --triton-delay-us -5",
        "--triton-delay-us -5: expected at least -1",
    ),
    # checked before the export (a minute of work), not after it
    _case(
        "export {ckpt} --out {root}/x.onnx --triton-repo {file_txt}",
        "--triton-repo {file_txt}: is a file; expected a directory (a model repository)",
    ),
    _case(  # the repository step refused it after the whole export, with the .txt already written
        "export {ckpt} --out {root}/x.txt --triton-repo {root}/repo",
        "--out {root}/x.txt: with --triton-repo, the ONNX file's name ends in .onnx (e.g. --out x.onnx)",
    ),
    _case(
        "export {ckpt} --out {root}/x.onnx --triton-repo {root}/repo --name bad/name",
        "--name: model name 'bad/name': use letters, digits, '_', '-' and '.' only, not only dots",
    ),
    # Triton options without a repository, or for the native variant, were ignored without a word
    _case(
        "export {ckpt} --out {root}/x.onnx --name gt --triton-backend python",
        "--name, --triton-backend: set the Triton repository, and --triton-repo is not given; add --triton-repo DIR, "
        "or leave them out",
    ),
    _case(
        "export {ckpt} --out {root}/x.onnx --triton-repo {root}/repo --triton-backend onnxruntime --triton-threads 4",
        "--triton-threads: sets the python variant's batching and threads, and --triton-backend onnxruntime writes "
        "the native variant, which has neither (Triton does not batch a graph union: max_batch_size 0); add "
        "--triton-backend python, or leave it out",
    ),
    # tritonserver
    _case("tritonserver {missing}", "{missing}: model repository directory does not exist"),
    _case(
        "tritonserver {file_txt}",  # said "does not exist" of a file that does
        "{file_txt}: is a file, not a model repository directory (gtc export --triton-repo DIR writes one; gtc serve "
        "runs a model file)",
    ),
    # build: the paths, the ONNX file and the profile are all checked before TensorRT is needed
    _case(
        "build {truncated_onnx}",
        r"{truncated_onnx}: not a valid ONNX model \(protobuf decode failed: .+\)",
        regex=True,
    ),
    _case("build {text_onnx}", r"{text_onnx}: not a valid ONNX model \(protobuf decode failed: .+\)", regex=True),
    _case("build {empty_onnx}", "{empty_onnx}: not a valid ONNX model (the file is empty)"),
    _case("build {missing}.onnx", "{missing}.onnx: file does not exist"),
    _case("build {junk_dir}", "{junk_dir}: is a directory, not an ONNX file"),
    _case(
        "build {nospec_onnx}",
        "{nospec_onnx}: no gtcompress input_spec in its metadata (export the checkpoint with gtc export)",
    ),
    _case(
        "build {badspec_onnx}",
        r"{badspec_onnx}: its gtcompress input_spec is malformed \(JSONDecodeError\(.+\)\); export it again",
        regex=True,
    ),
    _case(
        "build {spec_onnx} --min-nodes 10 --opt-nodes 5",
        "profile nodes: need 1 <= min <= opt <= max, got 10, 5, 65536",
    ),
    _case(
        "build {spec_onnx} --out {junk_dir}",
        "--out {junk_dir}: is a directory; give the engine file to write, e.g. {junk_dir}/model.plan",
    ),
    _case(
        "build {spec_onnx} --out {spec_onnx}",
        "--out {spec_onnx}: is the ONNX file itself; the engine needs another name, e.g. model.plan",
    ),
    # the cache was written after the engine, over the file named twice: the ONNX model or the engine itself
    _case(
        "build {spec_onnx} --out {root}/m.plan --timing-cache {spec_onnx}",
        "--timing-cache {spec_onnx}: is the ONNX file itself; the timing cache needs a file of its own, e.g. "
        "{root}/timing.cache",
    ),
    _case(
        "build {spec_onnx} --out {root}/m.plan --timing-cache {root}/m.plan",
        "--timing-cache {root}/m.plan: is the --out engine file; the timing cache needs a file of its own, e.g. "
        "{root}/timing.cache",
    ),
    _case(
        "build {spec_onnx} --out {root}/m.plan --timing-cache {root}/m.plan.json",
        "--timing-cache {root}/m.plan.json: is the --out engine's metadata file (written next to it); the timing "
        "cache needs a file of its own, e.g. {root}/timing.cache",
    ),
    _case(
        "build {spec_onnx} --max-in-degree 0",
        "Invalid value for '--max-in-degree': Input should be greater than or equal to 1 (see 'gtc build --help')",
    ),
    _case(
        "build {spec_onnx} --timing-cache {junk_dir}",
        "--timing-cache {junk_dir}: is a directory; give a file (read if present, written after the build)",
    ),
    # profile
    _case("profile {missing}.onnx", "model file does not exist: {missing}.onnx"),
    # before the progress bar (it was printed first, then the line)
    _case(
        "profile {empty_dir} --out {root}/p",
        "{empty_dir}: directory holds no <version>/model.onnx or <version>/model.plan",
    ),
    # a checkpoint whose config.json is not one: was "directory holds no <version>/model.onnx ..."
    _case(
        "profile {other_format} --out {root}/p",
        "{other_format}/config.json: its format is 'something-else', not 'gtcompress-checkpoint', so {other_format} "
        "is no gtcompress checkpoint (and it holds no <version>/model.onnx or <version>/model.plan)",
    ),
    _case(  # was the same line after a "profiling 0/?" progress bar on stdout
        "profile {truncated_weights} --device cpu --out {root}/p",
        r"{truncated_weights}/model\.safetensors: unreadable safetensors file \(.+\)",
        regex=True,
    ),
    _case("profile {truncated_onnx} --out {root}/p", r"{truncated_onnx}: ONNX Runtime cannot load it: .+", regex=True),
    _case(
        "profile {nospec_onnx} --out {root}/p",
        "{nospec_onnx}: no gtcompress input_spec in its metadata (export it with `gtc export`)",
    ),
    _case("profile {spec_onnx} --threads 1,x", "--threads: expected comma-separated positive integers, got '1,x'"),
    _case(
        "profile {spec_onnx} --threads 1,,2",
        "--threads: an empty entry in '1,,2'; expected comma-separated positive integers",
    ),
    _case(
        "profile {spec_onnx} --sizes 32,",
        "--sizes: an empty entry in '32,'; expected comma-separated positive integers",
    ),
    _case("profile {spec_onnx} --names a,b", "--names: 2 labels for 1 models"),
    _case(
        "profile {ckpt} --device cpu --out {file_txt} --sizes 8 --batch-sizes 1 --threads 1 --iterations 2 "
        "--warmup 0 --no-isolate --no-op-profile",
        "--out {file_txt}: exists and is not a directory (the report is a folder)",
    ),
    _case(
        "profile {spec_onnx} --degree inf",
        "Invalid value for '--degree': inf is not a finite number >= 0 (see 'gtc profile --help')",
    ),
    # was numpy's ArrayMemoryError traceback ("Unable to allocate 5.82 TiB") under the progress bar
    _case(
        "profile {spec_onnx} --sizes 100000000000 --batch-sizes 1",
        r"--sizes 100000000000 x --degree 4 x --batch-sizes 1: the random graphs of one call \(1 x 400000000000 "
        r"edges\) would take 5960\.5 GiB for their edge index alone, more than this machine's [0-9.]+ GiB of "
        r"memory; choose smaller --sizes, --degree or --batch-sizes",
        regex=True,
    ),
    _case(
        "profile {spec_onnx} --cuda-graphs",
        "--cuda-graphs needs --device cuda (CUDA graphs replay on a GPU only); got no --device",
    ),
    # serve
    _case("serve {missing}.onnx", "model file does not exist: {missing}.onnx"),
    _case(
        "serve {bad_json}",
        r"{bad_json}/config\.json: not valid JSON \(Expecting .+\), so {bad_json} is no gtcompress checkpoint \(and "
        r"it holds no <version>/model\.onnx or <version>/model\.plan\)",
        regex=True,
    ),
    _case(
        "serve {spec_onnx} --name 'bad name'",
        "--name: model name 'bad name': use letters, digits, '_', '-' and '.' only, not only dots",
    ),
    _case(
        "serve {truncated_onnx}",
        r"{truncated_onnx}: ONNX Runtime cannot load it: .*INVALID_PROTOBUF.*",
        regex=True,
    ),
    # data
    _case("data generate mnist", "unknown generated dataset 'mnist'; expected pattern, cluster or csl"),
    _case(
        "data generate cluster --size 4,0,4", "size '4,0,4': every split needs at least one graph (TRAIN,VAL,TEST >= 1)"
    ),
    _case(
        "data generate cluster --size big", "size must be 'small', 'full' or 'TRAIN,VAL,TEST' graph counts, got 'big'"
    ),
    # seeds past what the training loops take crashed in torch.manual_seed after the work began
    _case(
        "train --seed 18446744073709551616 --epochs 1 --out {root}/t",
        "Invalid value for '--seed': Input should be less than or equal to 9223372036854775807 "
        "(see 'gtc train --help')",
    ),
    _case(
        "sparsify {ckpt} --edges 0.3 --seed 9223372036854775808",
        "Invalid value for '--seed': Input should be less than or equal to 9223372036854775807 "
        "(see 'gtc sparsify --help')",
    ),
    _case(
        "prune {ckpt} --target-flops 0.5 --seed 18446744073709551616",
        "Invalid value for '--seed': Input should be less than or equal to 9223372036854775807 "
        "(see 'gtc prune --help')",
    ),
    _case(
        "pipeline --set train.seed=18446744073709551616 --out {root}/run",
        "--set train.seed=18446744073709551616: train.seed is 18446744073709551616; expected an integer from 0 to "
        "9223372036854775807 (2**63-1)",
    ),
    _case(  # was taken, where every --seed option refuses a negative seed
        "pipeline --set train.seed=-1 --out {root}/run",
        "--set train.seed=-1: train.seed is -1; expected an integer from 0 to 9223372036854775807 (2**63-1)",
    ),
    # digits str.isdigit() takes and int() does not: a ValueError traceback
    _case(
        "train --pe lap:² --epochs 1 --out {root}/t",
        "--pe: expected entries like 'lap:8' or 'rwse:20' (comma-separated), got 'lap:²'",
    ),
    _case(
        "train --size ²,10,10 --epochs 1 --out {root}/t",
        "size must be 'small', 'full' or 'TRAIN,VAL,TEST' graph counts, got '²,10,10'",
    ),
    _case(
        "data generate cluster --size 10,①,10",
        "size must be 'small', 'full' or 'TRAIN,VAL,TEST' graph counts, got '10,①,10'",
    ),
    _case(
        "pipeline --set data.size=²,1,1 --out {root}/run",
        "--set data.size=²,1,1: data.size: size must be 'small', 'full' or 'TRAIN,VAL,TEST' graph counts, got '²,1,1'",
    ),
    # a value given twice, or an empty one, was silently taken (the last one, or the default)
    _case(
        "train --pe lap:8,LAP:4 --epochs 1 --out {root}/t",
        "--pe: lap given twice (lap:8 and lap:4); give it once",
    ),
    _case(
        "train --pe '' --epochs 1 --out {root}/t",
        "--pe: empty value; give entries like 'lap:8' or 'rwse:20' (comma-separated), or 'none' for no positional "
        "encoding",
    ),
    _case(
        "profile {spec_onnx} --names ''",
        "--names: empty value; give one label per model (comma-separated), or leave it out",
    ),
    _case(
        "profile {spec_onnx} --providers ''",
        "--providers '': names no provider; give ONNX Runtime providers in order, e.g. cuda,cpu, or leave "
        "--providers out for the default",
    ),
    _case(
        "serve {spec_onnx} --providers ' , '",
        "--providers ' , ': names no provider; give ONNX Runtime providers in order, e.g. cuda,cpu, or leave "
        "--providers out for the default",
    ),
    _case(  # said "no dataset recorded in the checkpoint", of a checkpoint that records one
        "eval {ckpt} --data ''",
        "--data: unknown dataset ''; valid names: pattern, cluster, csl, molhiv, tu:<NAME>, ogb:<NAME>",
    ),
    _case(  # ran the default dataset
        "pipeline --data '' --out {root}/run",
        "--data: unknown dataset ''; valid names: pattern, cluster, csl, molhiv, tu:<NAME>, ogb:<NAME>",
    ),
    _case(  # --data was applied last and won: PATTERN ran
        "pipeline --data pattern --set data.name=csl --out {root}/run",
        "--data pattern and --set data.name=csl set data.name twice; give one of them",
    ),
    _case(  # the same dataset twice, quoted as YAML: not a conflict (the unknown size is the error left)
        "pipeline --data csl --set \"data.name='csl'\" --set data.size=bogus --out {root}/run",
        "--set data.size=bogus: data.size: size must be 'small', 'full' or 'TRAIN,VAL,TEST' graph counts, got 'bogus'",
    ),
    _case(
        "pipeline --checkpoint {ckpt} --set train.checkpoint={root}/other --out {root}/run",
        "--checkpoint {ckpt} and --set train.checkpoint={root}/other set train.checkpoint twice; give one of them",
    ),
    _case(
        "pipeline --set prune.budgets=[0.5,0.3,0.5] --out {root}/run",
        "--set prune.budgets=[0.5,0.3,0.5]: prune.budgets: 0.5 given more than once in [0.5, 0.3, 0.5]",
    ),
    _case(
        "pipeline --set export.lowerings=[auto,auto] --out {root}/run",
        "--set export.lowerings=[auto,auto]: export.lowerings: 'auto' given more than once in ['auto', 'auto']",
    ),
    _case(
        "pipeline --config {dup_section_yaml} --out {root}/run",
        "{dup_section_yaml}, line 3: section 'prune' given twice (first at line 1); give it once",
    ),
    _case(
        "pipeline --config {dup_key_yaml} --out {root}/run",
        "{dup_key_yaml}, line 4: key prune.budgets given twice (first at line 3); give it once",
    ),
    _case(
        "eval {tu_sized}",
        "{tu_sized}/config.json: dataset.size '40,10,10': tu:MUTAG: explicit split sizes are only supported for "
        "generated datasets and molhiv; TU datasets keep their own split (leave the size out)",
    ),
    # the launch's own OSError named no option ("runs: Is a directory")
    _case(
        "tritonserver {empty_dir} --log {junk_dir}",
        "--log {junk_dir}: is a directory; give a file to append the server's log to",
    ),
    _case(
        "tritonserver {empty_dir} --log {file_txt}/x.log",
        "--log {file_txt}/x.log: {file_txt} is a file, not a directory",
    ),
    # pipeline (configuration errors, before any stage runs)
    _case(
        "pipeline --set prune.budget=0.5 --out {root}/run",
        r"--set prune\.budget=0\.5: unknown key prune\.budget; expected one of budgets, .+",
        regex=True,
    ),
    _case(
        "pipeline --set noequals --out {root}/run",
        "--set 'noequals': expected SECTION.KEY=VALUE, e.g. prune.budgets=[0.5,0.3]",
    ),
    _case(
        "pipeline --set prune.budgets=[0.5 --out {root}/run",
        "--set 'prune.budgets=[0.5': the value '[0.5' is not valid YAML (expected ',' or ']', but got '<stream end>'); "
        "e.g. prune.budgets=[0.5,0.3], quoted for the shell",
    ),
    _case("pipeline --config {missing}.yaml --out {root}/run", "{missing}.yaml: config file not found"),
    _case(
        "pipeline --data Clustr --out {root}/run",
        "--data: unknown dataset 'Clustr'; valid names: pattern, cluster, csl, molhiv, tu:<NAME>, ogb:<NAME>",
    ),
    _case("pipeline --out {file_txt}", "--out {file_txt}: is a file; the pipeline writes its run into a folder"),
    _case("pipeline --config {root} --out {root}/run", "{root}: is a folder; a config is a YAML or TOML (.toml) file"),
    _case("pipeline --config {bad_yaml} --out {root}/run", r"{bad_yaml}: cannot parse \(.+\)", regex=True),
    _case(
        "pipeline --config {spec_onnx} --out {root}/run",
        r"{spec_onnx}: not a YAML or TOML config \(not UTF-8 text: .+\)",
        regex=True,
    ),
    _case(
        "pipeline --config {list_yaml} --out {root}/run",
        "{list_yaml}: expected a mapping of sections (data, train, control, sparsify, prune, export, tensorrt, "
        "profile, triton), got a list",
    ),
    _case(
        "pipeline --set triton.backend=tf --out {root}/run",
        "--set triton.backend=tf: triton.backend is 'tf'; expected one of auto, python, onnxruntime",
    ),
    _case(
        "pipeline --set train.epochs=2.5 --out {root}/run",
        "--set train.epochs=2.5: train.epochs is 2.5; expected an integer >= 1",
    ),
    _case(
        "pipeline --set sparsify.edges=1.5 --out {root}/run",
        "--set sparsify.edges=1.5: sparsify.edges is 1.5; expected a number in [0, 1) (the share of edges TEDDY "
        "removes)",
    ),
    _case(
        "pipeline --set train.lr=.inf --out {root}/run",
        "--set train.lr=.inf: train.lr is inf; expected a number > 0 (a finite number)",
    ),
    _case(
        "pipeline --set train.heads=3 --out {root}/run",
        "train.hidden 64 must be a multiple of train.heads 3 (each head gets hidden/heads channels)",
    ),
]


def _invoke(args: str, paths: dict[str, str]) -> Result:
    import shlex

    return runner.invoke(app, shlex.split(args.format(**paths)), prog_name="gtc")


def _the_error_line(res: Result) -> str:
    """The one ``error: …`` line the command printed, after checking it printed nothing else."""
    out, err = ANSI.sub("", res.stdout), ANSI.sub("", res.stderr)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == 2, res.output
    assert out == "", f"stdout should be empty, got {out!r}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0].removeprefix("error: ")


@pytest.mark.parametrize("case", CASES)
def test_user_mistake_is_one_error_line(case: Case, paths: dict[str, str], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GTCOMPRESS_CACHE", str(Path(paths["root"]) / "cache"))
    monkeypatch.chdir(tmp_path)  # a command that wrongly succeeded would write its default --out here
    line = _the_error_line(_invoke(case.args, paths))
    if case.regex:
        pattern = case.error.format(**{k: re.escape(v) for k, v in paths.items()})
        assert re.fullmatch(pattern, line), line
    else:
        assert line == case.error.format(**paths)


def test_catalogue_covers_every_command() -> None:
    commands = {c.values[0].args.split()[0] for c in CASES}
    assert {"train", "eval", "info", "sparsify", "prune", "export", "build", "profile", "serve", "data"} <= commands
    assert "tritonserver" in commands
    assert "pipeline" in commands and len(CASES) >= 30


def test_build_a_valid_file_without_tensorrt_says_how_to_install_it(paths: dict[str, str]) -> None:
    """The file is checked first; a good file on a machine without TensorRT gets the install hint."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT is installed here")
    out = Path(paths["root"]) / "m.plan"
    line = _the_error_line(_invoke(f"build {{spec_onnx}} --out {out}", paths))
    assert line.startswith(NO_TRT) and "gtcompress[tensorrt]" in line
    assert not out.exists()


@pytest.mark.parametrize("target", ["file_txt", "junk_dir"])
def test_train_out_that_is_not_a_checkpoint_is_left_untouched(target: str, paths: dict[str, str], monkeypatch) -> None:
    """Refused before any training, and the file/directory is exactly as it was: no ``.NAME.old-PID``
    aside, no temporary directory next to it."""
    import gtcompress.train.recipe

    def no_training(*a: object, **k: object) -> None:
        raise AssertionError("gtc train trained although --out is refused")

    monkeypatch.setattr(gtcompress.train.recipe, "fit", no_training)
    path = Path(paths[target])
    before = sorted(p.name for p in path.parent.iterdir())
    content = path.read_text() if path.is_file() else sorted(p.name for p in path.iterdir())
    _the_error_line(_invoke(f"train --out {path}", paths))
    assert sorted(p.name for p in path.parent.iterdir()) == before
    assert (path.read_text() if path.is_file() else sorted(p.name for p in path.iterdir())) == content


def test_an_engine_tensorrt_cannot_build_is_one_error_line(paths: dict[str, str], monkeypatch, tmp_path: Path) -> None:
    """TensorRT refusing the model (its parser, or the builder) was an EngineBuildError traceback."""
    import trt_plugins.engine
    from trt_plugins.engine import EngineBuildError

    def refuse(onnx_path: Path, *args: object, **kwargs: object) -> Path:
        raise EngineBuildError(f"{onnx_path}: TensorRT's ONNX parser failed: no importer for op Foo")

    monkeypatch.setattr(trt_plugins.engine, "build_serialized_engine", refuse)
    line = _the_error_line(_invoke(f"build {{spec_onnx}} --out {tmp_path}/m.plan", paths))
    assert line == (
        f"{paths['spec_onnx']}: TensorRT's ONNX parser failed: no importer for op Foo; no engine was written "
        "(gtc export lists the operators TensorRT lacks)"
    )
    assert not (tmp_path / "m.plan").exists()
