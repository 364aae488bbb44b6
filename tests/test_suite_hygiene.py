"""The test suite leaves nothing in the system's temp directory (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch_geometric")

ROOT = Path(__file__).resolve().parents[1]

_A_TEST_WITH_ITS_OWN_MESSAGE_PASSING = """
from torch_geometric.nn import GINEConv, MessagePassing


class Own(MessagePassing):
    def forward(self, x, edge_index):
        return self.propagate(edge_index, x=x)


def test_builds_them():
    Own()
    GINEConv(__import__("torch").nn.Linear(2, 2))
"""


def test_a_session_building_message_passing_layers_leaves_no_rendered_module(tmp_path: Path) -> None:
    """PyG writes each MessagePassing class's rendered ``propagate`` to a temp file it never removes:
    every run of tests/models left five in /tmp (``tests.models.test_from_pyg_refusals__GatedGINE_
    propagate_*.py``, GINEConv's, GATConv's...). A session of the suite's conftest, in its own
    process (PyG renders a class once a process), its temp directory watched."""
    temp = tmp_path / "temp"
    temp.mkdir()
    test_file = tmp_path / "test_layers.py"
    test_file.write_text(_A_TEST_WITH_ITS_OWN_MESSAGE_PASSING)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(temp)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest", str(test_file)]
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
    assert sorted(p.name for p in temp.glob("*.py")) == []


_A_SLOW_AND_A_PLAIN_TEST = """
import pytest


@pytest.mark.slow
def test_slow():
    pass


def test_plain():
    pass
"""


def test_slow_tests_are_skipped_with_their_reason_unless_asked_for(tmp_path: Path) -> None:
    """The default run (the README's test command, CI) skips tests marked ``slow`` and says why;
    ``--slow`` runs them (tests/conftest.py)."""
    test_file = tmp_path / "test_tiers.py"
    test_file.write_text(_A_SLOW_AND_A_PLAIN_TEST)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p", "tests.conftest"]
    cmd.append(str(test_file))
    runs = [
        subprocess.run([*cmd, *extra], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
        for extra in ([], ["--slow"])
    ]
    assert all(run.returncode == 0 for run in runs), [run.stdout + run.stderr for run in runs]
    default, everything = (run.stdout for run in runs)
    assert default.splitlines()[-1].startswith("1 passed, 1 skipped in ")  # no warning: the marker is registered
    assert "SKIPPED [1] test_tiers.py:5: slow: an end-to-end compile or export whose mechanism a faster test" in default
    assert everything.splitlines()[-1].startswith("2 passed in ")
