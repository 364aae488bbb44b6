"""Package boundaries: trt_plugins imports nothing of ours, TensorRT only in one place, lazily."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import trt_plugins

PACKAGE = Path(trt_plugins.__file__).parent
OURS = {"gtcompress", "exporters", "runtime", "cli"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_imports_nothing_of_ours_and_tensorrt_only_lazily() -> None:
    files = sorted(PACKAGE.glob("*.py"))
    assert len(files) >= 7
    for path in files:
        imported = _imports(path)
        assert not imported & OURS, f"{path.name} imports {imported & OURS}"
        assert "tensorrt" not in imported, f"{path.name} imports tensorrt at module level"
    mentions = [p.name for p in files if 'import_module("tensorrt' in p.read_text()]
    assert mentions == ["tensorrt_plugin.py"]


def test_import_is_cheap_and_names_resolve() -> None:
    code = (
        "import sys, trt_plugins; "
        "heavy = {'torch', 'triton', 'onnx', 'tensorrt'} & set(sys.modules); "
        "assert not heavy, heavy; "
        "assert trt_plugins.PLUGIN_ID == 'gtcompress::SparseGraphAttention'"
    )
    root = PACKAGE.parent
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=120)
    for name in trt_plugins.__all__:
        assert getattr(trt_plugins, name) is not None, name
