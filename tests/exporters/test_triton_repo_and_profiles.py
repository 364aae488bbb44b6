import json
from pathlib import Path

import pytest

from exporters.onnx import IR_VERSION, OPSET, input_spec
from exporters.tensorrt import GraphSize, optimisation_profile
from exporters.triton_repo import PythonModelOptions, needs_preprocessing, resolve_backend, write_model_repository
from gtcompress.data.base import FeatureSpec
from gtcompress.errors import ConfigError
from gtcompress.models import ModelConfig, build_model
from gtcompress.preprocess.spec import InputSpec

ROOT = Path(__file__).resolve().parents[2]


def _spec(lowering: str, arch: str = "gt"):
    cfg = ModelConfig(
        arch=arch,
        node_features=FeatureSpec("float", 5),
        edge_features=FeatureSpec("categorical", 1, [4]),
        out_dim=2,
        hidden=16,
        heads=2,
        num_layers=1,
        pe={"lap": 3},
        task_level="graph",
    )
    return input_spec(build_model(cfg), lowering)


@pytest.mark.parametrize(
    ("lowering", "suffix", "platform"), [("plugin", ".plan", "tensorrt_plan"), ("dense", ".onnx", "onnxruntime_onnx")]
)
def test_config_pbtxt_parses_as_triton_model_config(
    tmp_path, model_config_pb2, lowering: str, suffix: str, platform: str
) -> None:
    from google.protobuf import text_format

    spec = _spec(lowering)
    model_file = tmp_path / f"m{suffix}"
    model_file.write_bytes(b"model bytes")
    backend = platform.split("_")[0]
    root = write_model_repository(tmp_path / "repo", "gt_cluster", model_file, spec, backend=backend)
    pb2 = model_config_pb2
    cfg = text_format.Parse((root / "config.pbtxt").read_text(), pb2.ModelConfig())
    assert cfg.name == "gt_cluster" and cfg.platform == platform and cfg.max_batch_size == 0
    assert [i.name for i in cfg.input] == spec.inputs
    types = {i.name: pb2.DataType.Name(i.data_type) for i in cfg.input}
    assert types["x"] == "TYPE_FP32" and types["edge_index"] == "TYPE_INT64" and types["edge_attr"] == "TYPE_INT64"
    assert list(next(i for i in cfg.input if i.name == "x").dims) == [-1, 5]
    assert list(next(i for i in cfg.input if i.name == "pe_lap").dims) == [-1, 3]
    assert [o.name for o in cfg.output] == ["output"] and list(cfg.output[0].dims) == [-1, 2]
    assert InputSpec.from_json(json.loads(cfg.parameters["gtcompress_input_spec"].string_value)) == spec
    assert (root / "1" / f"model{suffix}").read_bytes() == b"model bytes"


@pytest.mark.parametrize(("suffix", "kind"), [(".onnx", "KIND_CPU"), (".plan", "KIND_GPU")])
def test_python_variant_config_takes_raw_graphs_with_ragged_batching(
    tmp_path, model_config_pb2, suffix: str, kind: str
) -> None:
    from google.protobuf import text_format

    spec = _spec("dense")
    model_file = tmp_path / f"m{suffix}"
    model_file.write_bytes(b"model bytes")
    opts = PythonModelOptions(max_batch_size=16, max_queue_delay_us=500, instances=2, threads=3)
    root = write_model_repository(tmp_path / "repo", "gt", model_file, spec, backend="python", options=opts)
    pb2 = model_config_pb2
    cfg = text_format.Parse((root / "config.pbtxt").read_text(), pb2.ModelConfig())
    assert cfg.backend == "python" and cfg.platform == "" and cfg.max_batch_size == 16
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    assert [i.name for i in cfg.input] == ["x", "edge_index", "edge_attr", "batch", "node_counts", "pe_lap"]
    assert all(i.allow_ragged_batch for i in cfg.input)
    # a graph's own encoding is optional, named and shaped as the model's input (the server computes it otherwise)
    assert [i.name for i in cfg.input if i.optional] == ["batch", "node_counts", "pe_lap"]
    assert {i.name: list(i.dims) for i in cfg.input} == {
        "x": [-1, 5],
        "edge_index": [2, -1],
        "edge_attr": [-1, 1],
        "batch": [-1],
        "node_counts": [-1],
        "pe_lap": [-1, 3],
    }
    assert pb2.DataType.Name(next(i for i in cfg.input if i.name == "pe_lap").data_type) == "TYPE_FP32"
    assert list(cfg.output[0].dims) == [-1, 2]
    assert pb2.ModelInstanceGroup.Kind.Name(cfg.instance_group[0].kind) == kind and cfg.instance_group[0].count == 2
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert params["gtcompress_preprocessing"] == "server" and params["gtcompress_threads"] == "3"
    assert params["gtcompress_model_file"] == f"model{suffix}"
    assert InputSpec.from_json(json.loads(params["gtcompress_input_spec"])) == spec
    assert (root / "1" / f"model{suffix}").read_bytes() == b"model bytes"
    assert "from runtime.triton_python import TritonPythonModel" in (root / "1" / "model.py").read_text()
    vendor = root / "1" / "vendor"
    assert (vendor / "runtime" / "triton_python.py").read_text() == (ROOT / "runtime" / "triton_python.py").read_text()
    assert (vendor / "gtcompress" / "preprocess" / "pe.py").is_file()
    assert (vendor / "gtcompress" / "errors.py").is_file()
    assert not (vendor / "gtcompress" / "models").exists()  # torch-side code stays out
    assert (vendor / "trt_plugins" / "tensorrt_plugin.py").is_file() == (suffix == ".plan")
    no_batching = PythonModelOptions(max_queue_delay_us=None)
    root = write_model_repository(tmp_path / "repo", "gt", model_file, spec, backend="python", options=no_batching)
    cfg = text_format.Parse((root / "config.pbtxt").read_text(), pb2.ModelConfig())
    assert not cfg.HasField("dynamic_batching") and cfg.max_batch_size == 64


def test_auto_backend_is_python_exactly_when_the_model_needs_preprocessing(tmp_path) -> None:
    f = tmp_path / "m.onnx"
    f.write_bytes(b"m")
    needs = _spec("dense")  # LapPE and a dense layout
    assert needs_preprocessing(needs) and resolve_backend("auto", f, needs) == "python"
    cfg = ModelConfig(arch="gt", node_features=FeatureSpec("float", 5), out_dim=2, hidden=16, heads=2, num_layers=1)
    plain = input_spec(build_model(cfg), "scatter")  # no PE, scatter: the raw graph is the whole input
    assert not needs_preprocessing(plain) and resolve_backend("auto", f, plain) == "onnxruntime"
    assert (
        needs_preprocessing(plain.with_teddy({"edges": 0.3}))
        and resolve_backend("auto", f.with_suffix(".plan"), plain) == "tensorrt"
    )
    # one variant replaces the other's files: a stale model.py would make Triton load the wrong backend
    root = write_model_repository(tmp_path / "repo", "m", f, needs)
    assert (root / "1" / "model.py").is_file()
    (root / "1" / ".vendor.abc123").mkdir()  # left by an export killed half-way: the next one removes it
    (root / "1" / "vendor" / "runtime" / "stale.py").write_text("")
    root = write_model_repository(tmp_path / "repo", "m", f, needs)
    assert not (root / "1" / ".vendor.abc123").exists()
    assert not (root / "1" / "vendor" / "runtime" / "stale.py").exists()
    assert sorted(p.name for p in (root / "1").iterdir()) == ["model.onnx", "model.py", "vendor"]
    root = write_model_repository(tmp_path / "repo", "m", f, needs, backend="onnxruntime")
    assert (
        not (root / "1" / "model.py").exists() and 'platform: "onnxruntime_onnx"' in (root / "config.pbtxt").read_text()
    )
    assert sorted(p.name for p in (root / "1").iterdir()) == ["model.onnx"]
    with pytest.raises(
        ConfigError, match=r"Triton backend 'tensorrt' cannot run m\.onnx; its backend is 'onnxruntime'"
    ):
        write_model_repository(tmp_path / "repo", "m", f, needs, backend="tensorrt")
    with pytest.raises(ConfigError, match="Triton backend 'tf': expected one of auto, python, onnxruntime, tensorrt"):
        write_model_repository(tmp_path / "repo", "m", f, needs, backend="tf")
    with pytest.raises(ConfigError, match="Triton instances is 0; expected at least 1"):
        PythonModelOptions(instances=0)


def test_repository_rejects_bad_names(tmp_path) -> None:
    f = tmp_path / "m.onnx"
    f.write_bytes(b"")
    with pytest.raises(ConfigError, match="use letters, digits"):
        write_model_repository(tmp_path, "bad name/..", f, _spec("dense"))
    with pytest.raises(ConfigError, match=r"expected a \.onnx or \.plan"):
        write_model_repository(tmp_path, "ok", tmp_path / "m.pt", _spec("dense"))
    repo = tmp_path / "repo"
    for dots in (".", ".."):  # path steps: the model would land in the repository root, or above it
        with pytest.raises(ConfigError) as info:
            write_model_repository(repo, dots, f, _spec("dense"))
        assert str(info.value) == f"model name {dots!r}: use letters, digits, '_', '-' and '.' only, not only dots"
    assert not repo.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_optimisation_profile_shapes() -> None:
    lo, opt, hi = (
        GraphSize(1, 1, 1),
        GraphSize(4000, 150_000, 32, 150, 120),
        GraphSize(20_000, 1_000_000, 256, 400, 900),
    )
    prof = optimisation_profile(_spec("plugin"), lo, opt, hi)
    assert prof["x"] == ((1, 5), (4000, 5), (20_000, 5))
    assert prof["edge_index"] == ((2, 1), (2, 150_000), (2, 1_000_000))
    assert prof["rowptr"] == ((2,), (4001,), (20_001,))
    assert prof["node_counts"] == ((1,), (32,), (256,))
    dense = optimisation_profile(_spec("dense", "gps"), lo, opt, hi)
    assert dense["pad_mask"] == ((1, 1), (32, 150), (256, 400))
    padded = optimisation_profile(_spec("padded"), lo, opt, hi)
    assert padded["nbr_src_0"] == ((1, 1), (4000, 120), (20_000, 900))  # every degree bucket up to the maxima
    assert padded["nbr_node_3"] == ((1,), (4000,), (20_000,)) and padded["nbr_inv"] == ((1,), (4000,), (20_000,))
    with pytest.raises(ConfigError, match="profile nodes: need 1 <= min <= opt <= max"):
        optimisation_profile(_spec("dense"), GraphSize(10, 1, 1), GraphSize(5, 1, 1), hi)


def test_a_failed_write_leaves_the_old_model_whole(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The new model file used to be renamed in first: a write that failed later (a full disk) left
    it under the old config.pbtxt, a scatter config for a dense model. Now the old model stays."""
    import exporters.triton_repo as tr

    cfg = ModelConfig(arch="gt", node_features=FeatureSpec("float", 5), out_dim=2, hidden=16, heads=2, num_layers=1)
    plain = input_spec(build_model(cfg), "scatter")
    old, new = tmp_path / "a.onnx", tmp_path / "b.onnx"
    old.write_bytes(b"old model")
    new.write_bytes(b"new model")
    root = write_model_repository(tmp_path / "repo", "m", old, plain)
    before = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tr, "write_vendor", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_model_repository(tmp_path / "repo", "m", new, _spec("dense"))
    assert {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["m"]  # no temporary left


def test_other_versions_and_own_files_are_kept_and_readable_by_all(tmp_path) -> None:
    import os

    f = tmp_path / "m.onnx"
    f.write_bytes(b"m")
    root = write_model_repository(tmp_path / "repo", "m", f, _spec("dense"), version=1)
    (root / "labels.txt").write_text("a\nb\n")
    (root / "1" / "notes.txt").write_text("mine")
    write_model_repository(tmp_path / "repo", "m", f, _spec("dense"), version=2)
    write_model_repository(tmp_path / "repo", "m", f, _spec("dense"), version=1, backend="onnxruntime")
    assert (root / "labels.txt").read_text() == "a\nb\n"
    assert sorted(p.name for p in (root / "1").iterdir()) == ["model.onnx", "notes.txt"]
    assert sorted(p.name for p in (root / "2").iterdir()) == ["model.onnx", "model.py", "vendor"]
    umask = os.umask(0o022)
    os.umask(umask)
    # mkstemp/mkdtemp made 0600/0700: a Triton server running as another user could not read them
    for p in [root, *root.rglob("*")]:
        want = (0o777 if p.is_dir() else 0o666) & ~umask
        assert p.stat().st_mode & 0o777 == want, p


def test_a_file_or_broken_link_at_the_model_directory_is_refused_and_kept(tmp_path) -> None:
    """The model directory is swapped in whole: a file there (the user's) was renamed aside and deleted."""
    f = tmp_path / "m.onnx"
    f.write_bytes(b"m")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "notes").write_text("mine")
    (repo / "gone").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"repo/notes: exists and is a file, not a Triton model directory; refusing"):
        write_model_repository(repo, "notes", f, _spec("dense"))
    with pytest.raises(ConfigError, match=r"repo/gone: exists and is a broken symbolic link, not a Triton model"):
        write_model_repository(repo, "gone", f, _spec("dense"))
    assert (repo / "notes").read_text() == "mine" and (repo / "gone").is_symlink()
    assert sorted(p.name for p in repo.iterdir()) == ["gone", "notes"]


def test_a_version_directory_linked_elsewhere_is_never_written_through(tmp_path, monkeypatch) -> None:
    """``REPO/m/1`` a symbolic link to a model store: the new model file was copied through the link,
    over the stored one in place, and a copy that failed part-way (a full disk) left half a model under
    the old config.pbtxt. The store is now left as it was; the new version is a real directory that
    keeps the store's own files."""
    import os
    import shutil

    import exporters.triton_repo as tr

    old, new = tmp_path / "old.onnx", tmp_path / "new.onnx"
    old.write_bytes(b"old model")
    new.write_bytes(b"new model")
    root = write_model_repository(tmp_path / "repo", "m", old, _spec("dense"), backend="onnxruntime")
    store = tmp_path / "store"
    shutil.move(root / "1", store)
    (store / "labels.txt").write_text("mine")
    os.symlink(store, root / "1")
    real_copy = shutil.copyfile

    def full_disk(src, dst, **kw):  # type: ignore[no-untyped-def]
        if Path(dst).name == "model.onnx":
            Path(dst).write_bytes(b"new mo")
            raise OSError(28, "No space left on device")
        return real_copy(src, dst, **kw)

    monkeypatch.setattr(tr.shutil, "copyfile", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_model_repository(tmp_path / "repo", "m", new, _spec("dense"), backend="onnxruntime")
    assert (store / "model.onnx").read_bytes() == b"old model" and (root / "1").is_symlink()
    monkeypatch.setattr(tr.shutil, "copyfile", real_copy)
    write_model_repository(tmp_path / "repo", "m", new, _spec("dense"), backend="onnxruntime")
    assert (store / "model.onnx").read_bytes() == b"old model"
    assert not (root / "1").is_symlink() and (root / "1" / "model.onnx").read_bytes() == b"new model"
    assert (root / "1" / "labels.txt").read_text() == "mine"


@pytest.mark.parametrize(("backend", "name"), [("onnxruntime", "config.pbtxt"), ("python", "model.py")])
def test_a_full_disk_while_writing_the_repository_names_its_file(
    tmp_path, monkeypatch, backend: str, name: str
) -> None:
    """The model file fits, ``config.pbtxt`` (or the python variant's ``model.py``) does not:
    ``Path.write_text`` reports that full disk naming no file, so ``gtc export --triton-repo`` ended in a
    traceback after the whole export. The error names the file as it would be in the repository, and the
    half-built model directory is removed, with the repository folder the write made."""
    import errno

    real = Path.write_text

    def full_disk(self: Path, text: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.name == name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, text, *args, **kwargs)

    model_file = tmp_path / "m.onnx"
    model_file.write_bytes(b"model bytes")
    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError) as info:
        write_model_repository(tmp_path / "repo", "gt", model_file, _spec("dense"), backend=backend)
    where = tmp_path / "repo" / "gt" / ("config.pbtxt" if name == "config.pbtxt" else f"1/{name}")
    assert (info.value.errno, info.value.filename) == (errno.ENOSPC, str(where))
    assert list(tmp_path.iterdir()) == [model_file]


@pytest.mark.parametrize(("backend", "name"), [("onnxruntime", "model.onnx"), ("python", "session.py")])
def test_a_full_disk_while_copying_into_the_repository_names_the_file_there(
    tmp_path, monkeypatch, backend: str, name: str
) -> None:
    """``shutil.copyfile`` reports a full disk as ``source -> destination``, and the destination was the
    hidden temp folder the version is built in (``repo/.gt.tmp-…/1/model.onnx``): the error names the
    file as it would be in the repository (the model, or a vendored runtime module), and the
    half-built folder is removed, with the repository folder the write made."""
    import errno
    import shutil

    real = shutil.copyfile

    def full_disk(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        if Path(dst).name == name:
            raise OSError(errno.ENOSPC, "No space left on device", str(src), None, str(dst))
        return real(src, dst, *args, **kwargs)

    model_file = tmp_path / "m.onnx"
    model_file.write_bytes(b"model bytes")
    monkeypatch.setattr(shutil, "copyfile", full_disk)
    with pytest.raises(OSError) as info:
        write_model_repository(tmp_path / "repo", "gt", model_file, _spec("dense"), backend=backend)
    version = tmp_path / "repo" / "gt" / "1"
    where = version / name if name == "model.onnx" else version / "vendor" / "runtime" / name
    assert (info.value.errno, info.value.filename, info.value.filename2) == (errno.ENOSPC, str(where), None)
    assert list(tmp_path.iterdir()) == [model_file]


def test_a_failed_write_removes_only_the_folders_it_made(tmp_path, monkeypatch) -> None:
    """``gtc export --triton-repo tiny/tr`` onto a full disk failed with the right error but left an empty
    ``tiny/tr/``. The folders the write made go; one that was there before stays, as does its content."""
    import errno

    import exporters.triton_repo

    def full_disk(src, dst, shown):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device", str(shown))

    model_file = tmp_path / "m.onnx"
    model_file.write_bytes(b"model bytes")
    monkeypatch.setattr(exporters.triton_repo, "copy_file_named", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        write_model_repository(tmp_path / "tiny" / "tr", "gt", model_file, _spec("dense"))
    assert list(tmp_path.iterdir()) == [model_file]
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "notes.txt").write_text("mine")
    with pytest.raises(OSError, match="No space left on device"):
        write_model_repository(tmp_path / "tiny" / "tr", "gt", model_file, _spec("dense"))
    assert [p.name for p in (tmp_path / "tiny").iterdir()] == ["notes.txt"]


def test_the_readme_states_the_size_of_vendor_as_written(tmp_path: Path) -> None:
    """README, "In a Triton container": ``vendor/`` is "about N KB". It said 355 KB while the copy
    ``write_vendor`` made had grown to 435 KB (the runtime gained modules since the number was
    measured); a deployment sizing its image by the README read a fifth too little. Within 10 %."""
    import re

    from exporters.triton_repo import write_vendor

    vendor = write_vendor(tmp_path)
    size_kb = sum(f.stat().st_size for f in vendor.rglob("*") if f.is_file()) / 1000
    said = re.search(r"`gtcompress\.preprocess`; about (\d+) KB", (ROOT / "README.md").read_text())
    assert said, "README no longer states the vendor/ size where this test reads it"
    assert abs(int(said.group(1)) - size_kb) <= 0.1 * size_kb, (said.group(1), round(size_kb))


@pytest.mark.parametrize("backend", ["python", "tensorrt"])
def test_a_plan_takes_the_engines_metadata_into_the_repository(tmp_path, backend: str) -> None:
    """``<engine>.json`` (what gtc build writes beside it) becomes ``model.plan.json``, where the runtime
    reads it before config.pbtxt: without it, the python variant knew the input spec alone, and not
    that the engine was built from an export it must hold to a feature range (tests/runtime/
    test_legacy_range.py runs that). A later write without it leaves none of the old one behind.

    The round trip: the repository's copy, read by the runtime, is the engine's metadata as the runtime
    reads it beside the engine, also for a side file holding values as JSON objects (written by hand, or
    an input spec as an object), which the copy holds as metadata_props do, as strings."""
    from runtime.spec import model_spec, plan_metadata

    spec = _spec("dense")
    engine = tmp_path / "gt.plan"
    engine.write_bytes(b"engine")
    meta = {"input_spec": spec.to_json(), "model_config": "{}", "teddy": {"edges": 0.2}}
    (tmp_path / "gt.plan.json").write_text(json.dumps(meta))
    root = write_model_repository(tmp_path / "repo", "gt", engine, spec, backend=backend)
    copied = plan_metadata(root / "1" / "model.plan")
    assert (
        copied
        == plan_metadata(engine)
        == {
            "input_spec": json.dumps(spec.to_json()),
            "model_config": "{}",
            "teddy": '{"edges": 0.2}',
        }
    )
    assert json.loads((root / "1" / "model.plan.json").read_text()) == copied  # every value a string
    read = model_spec(copied, "model.plan.json")
    assert read.spec == spec and read.teddy is not None and read.teddy.ratio == 0.2
    (tmp_path / "gt.plan.json").unlink()
    root = write_model_repository(tmp_path / "repo", "gt", engine, spec, backend=backend)
    assert not (root / "1" / "model.plan.json").exists()
    onnx_file = tmp_path / "gt.onnx"
    onnx_file.write_bytes(b"m")
    root = write_model_repository(tmp_path / "repo", "gt", onnx_file, spec, backend="auto")
    assert not (root / "1" / "model.plan.json").exists()


def test_a_plan_beside_its_onnx_file_takes_that_files_metadata(tmp_path) -> None:
    """As runtime.spec.plan_metadata reads an engine without ``<engine>.json``: the ONNX file of its name."""
    import onnx
    from onnx import TensorProto, helper

    spec = _spec("dense")
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["output"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 5])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 5])],
    )
    # the IR and opset the exporter writes: ONNX Runtime, which reads the metadata, takes no newer ones
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    proto.ir_version = IR_VERSION
    meta = {"input_spec": json.dumps(spec.to_json()), "model_config": '{"arch": "gt"}'}
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.save(proto, str(tmp_path / "gt.onnx"))
    (tmp_path / "gt.plan").write_bytes(b"engine")
    root = write_model_repository(tmp_path / "repo", "gt", tmp_path / "gt.plan", spec, backend="python")
    assert json.loads((root / "1" / "model.plan.json").read_text()) == meta


def test_a_plan_whose_metadata_is_not_the_spec_given_is_refused_before_writing(tmp_path) -> None:
    """config.pbtxt would declare one spec and the model run another. What the runtime cannot read (a
    TEDDY entry out of range) is refused here too, as it reads it: a repository was written that
    neither gtc serve nor Triton's python variant could then load."""
    spec, other = _spec("dense"), _spec("padded")
    engine = tmp_path / "gt.plan"
    engine.write_bytes(b"engine")
    side = tmp_path / "gt.plan.json"
    for text, message in (
        (
            json.dumps({"input_spec": json.dumps(other.to_json())}),
            f"{engine}: the input spec given is not the engine's own (metadata input_spec of {side}); pass that "
            "one, as runtime.session.GraphSession(engine).spec reads it",
        ),
        ("[1]", f"{side}: must be a JSON object (the ONNX metadata_props), got list"),
        ("{}", f"{side}: no gtcompress input_spec in its metadata (export it with `gtc export`)"),
        (
            json.dumps({"input_spec": json.dumps(spec.to_json()), "teddy": {"edges": 2}}),
            f"{side}: metadata teddy 'edges' is the fraction of edges TEDDY removes, in [0, 1]; got 2",
        ),
    ):
        side.write_text(text)
        with pytest.raises(ConfigError) as e:
            write_model_repository(tmp_path / "repo", "gt", engine, spec, backend="python")
        assert str(e.value) == message
    side.write_text("{bad")
    with pytest.raises(ConfigError, match=r"gt\.plan\.json: not valid JSON \(.*\); it holds the ONNX metadata_props"):
        write_model_repository(tmp_path / "repo", "gt", engine, spec, backend="python")
    assert not (tmp_path / "repo").exists()
