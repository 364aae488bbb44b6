"""Sparse graph attention as TensorRT plugins: Triton kernels, AOT PTX, TensorRT and ONNX registration.

Imports nothing else of ours, so an engine-building or serving image needs only this package.
Names are re-exported flat and loaded on first access: ``import trt_plugins`` costs no torch,
triton, onnx or tensorrt import, and the TensorRT part (:func:`register_plugin`) imports TensorRT
only when called.

* :mod:`trt_plugins.spec` -- names, attributes, shapes, kernel configs, launch grid (pure Python).
* :mod:`trt_plugins.csr` -- ``edge_index`` -> CSR by destination (torch and numpy).
* :mod:`trt_plugins.kernels` -- the two Triton kernels launched from torch (CUDA, or CPU interpreter).
* :mod:`trt_plugins.aot` -- PTX for named GPUs without a GPU, cached; ``compile_all`` for shipping.
* :mod:`trt_plugins.onnx_op` -- the ONNX nodes and ``OpSchema``\\s; ``split_for_tensorrt`` rewrites a
  model for TensorRT, which runs the op as two plugins.
* :mod:`trt_plugins.tensorrt_plugin` -- ``tensorrt.plugin`` registration of those two plugins (the
  only TensorRT import).
"""

from __future__ import annotations

import importlib
from typing import Any

from trt_plugins.spec import (
    ATTRIBUTE_NAMES,
    COMBINE_PLUGIN_ID,
    INPUT_NAMES,
    OUTPUT_NAMES,
    PARTIALS_PLUGIN_ID,
    PLUGIN_ID,
    PLUGIN_NAME,
    PLUGIN_NAMESPACE,
    Attributes,
    KernelConfig,
    PluginSpecError,
    default_scale,
    grid,
    output_shape,
    select_config,
    validate_attributes,
    validate_inputs,
)

_LAZY = {
    "edge_index_to_csr": "trt_plugins.csr",
    "edge_index_to_csr_numpy": "trt_plugins.csr",
    "sparse_graph_attention": "trt_plugins.kernels",
    "sparse_graph_attention_coo": "trt_plugins.kernels",
    "AOTCompileError": "trt_plugins.aot",
    "CompiledKernel": "trt_plugins.aot",
    "PTX_VERSIONS": "trt_plugins.aot",
    "TARGETS": "trt_plugins.aot",
    "compile_all": "trt_plugins.aot",
    "compile_kernel": "trt_plugins.aot",
    "DOMAIN": "trt_plugins.onnx_op",
    "OP_TYPE": "trt_plugins.onnx_op",
    "PARTIALS_OP_TYPE": "trt_plugins.onnx_op",
    "COMBINE_OP_TYPE": "trt_plugins.onnx_op",
    "make_node": "trt_plugins.onnx_op",
    "node_attributes": "trt_plugins.onnx_op",
    "register_onnx_schema": "trt_plugins.onnx_op",
    "split_for_tensorrt": "trt_plugins.onnx_op",
    "TensorRTNotAvailableError": "trt_plugins.tensorrt_plugin",
    "import_tensorrt": "trt_plugins.tensorrt_plugin",
    "register_plugin": "trt_plugins.tensorrt_plugin",
    "tensorrt_available": "trt_plugins.tensorrt_plugin",
}

__all__ = [
    "ATTRIBUTE_NAMES",
    "COMBINE_PLUGIN_ID",
    "INPUT_NAMES",
    "OUTPUT_NAMES",
    "PARTIALS_PLUGIN_ID",
    "PLUGIN_ID",
    "PLUGIN_NAME",
    "PLUGIN_NAMESPACE",
    "Attributes",
    "KernelConfig",
    "PluginSpecError",
    "default_scale",
    "grid",
    "output_shape",
    "select_config",
    "validate_attributes",
    "validate_inputs",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'trt_plugins' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
