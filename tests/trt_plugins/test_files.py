"""trt_plugins' atomic writer: PTX, manifests and engines get the umask's permissions (mkstemp's 0600
made a TensorRT plan unreadable to a Triton server running as another user), and a failed write
leaves neither a target nor a temp."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trt_plugins.files import write_atomic


def test_written_with_the_umasks_permissions(tmp_path: Path) -> None:
    before = os.umask(0o027)
    try:
        write_atomic(tmp_path / "a" / "m.plan", b"engine")
        write_atomic(tmp_path / "k.ptx", "// ptx é")
    finally:
        os.umask(before)
    assert (tmp_path / "a" / "m.plan").read_bytes() == b"engine"
    assert (tmp_path / "k.ptx").read_text(encoding="utf-8") == "// ptx é"
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "a" / "m.plan", tmp_path / "k.ptx")} == {0o640}


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_atomic(tmp_path / "m.plan", 3)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
