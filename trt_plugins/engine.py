"""Building a serialized TensorRT engine from an ONNX file (TensorRT 10.x Python API).

Lives here because ``trt_plugins`` is the one package that imports ``tensorrt``; the shape
arithmetic of the optimisation profile is computed by the caller (``exporters.tensorrt``) and
arrives as plain tuples. Nothing here can run on a machine without TensorRT and a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from trt_plugins.files import write_atomic
from trt_plugins.tensorrt_plugin import import_tensorrt, register_plugin

Shape = tuple[int, ...]


class EngineBuildError(RuntimeError):
    """TensorRT's parser or builder rejected the network; the message carries its errors."""


def _split_model_bytes(onnx_path: Path) -> bytes:
    """The ONNX file with every attention node split into the two plugin nodes TensorRT runs
    (:func:`trt_plugins.onnx_op.split_for_tensorrt`), serialized. External weights stay where they
    are: the parser finds them from the ``path`` it is given, as it would for the file itself."""
    import onnx

    from trt_plugins.onnx_op import split_for_tensorrt

    model = onnx.load(str(onnx_path), load_external_data=False)
    return split_for_tensorrt(model).SerializeToString()


def build_serialized_engine(
    onnx_path: Path,
    engine_path: Path,
    shapes: Mapping[str, tuple[Shape, Shape, Shape]],
    *,
    fp16: bool = False,
    timing_cache: str | Path | None = None,
    workspace_bytes: int = 4 << 30,
    plugin: bool = True,
) -> Path:
    """Parse ``onnx_path``, add one optimisation profile (``shapes``: input → (min, opt, max)), build.

    With ``plugin``, registers the two plugins and parses the model rewritten for them (each
    ``SparseGraphAttention`` node split in two) from memory; the file itself is not changed.

    Strongly typed network (types come from the ONNX file) unless ``fp16``, which builds a weakly
    typed network with the FP16 builder flag. A timing cache is read from / written back to
    ``timing_cache`` so rebuilds are fast. The engine is written atomically."""
    trt, _ = import_tensorrt()
    if plugin:
        register_plugin()
    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")  # ScatterElements-with-reduction is a built-in plugin
    builder = trt.Builder(logger)
    flags = 0 if fp16 else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if plugin:
        parsed = parser.parse(_split_model_bytes(onnx_path), path=str(onnx_path))
    else:
        parsed = parser.parse_from_file(str(onnx_path))
    if not parsed:
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else None
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path and cache_path.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise EngineBuildError(f"{onnx_path}: TensorRT could not build an engine (see the log above)")
    write_atomic(Path(engine_path), bytes(engine))
    if cache_path is not None:
        write_atomic(cache_path, bytes(config.get_timing_cache().serialize()))
    return Path(engine_path)
