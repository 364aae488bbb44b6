"""Every command a user pastes from ``--help`` or the README survives a shell that refuses unmatched globs."""

import shutil
import subprocess
from pathlib import Path

import pytest

from cli.main import app
from tests.cli.test_cli import _leaf_commands


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_help_examples_and_readme_commands_paste_into_a_shell_that_refuses_unmatched_globs(tmp_path) -> None:
    """gtc pipeline's example ``--set prune.budgets=[0.5]`` is a glob: zsh (macOS's shell) stops on it with
    "no matches found", and bash replaces it with a file it matches (``prune.budgets=5``). Every help
    example and every gtc command of the README's shell blocks must expand, as pasted, under bash's
    failglob, which refuses an unmatched glob as zsh does (in an empty folder, so none matches). The
    words are only expanded (``set --``), never run: a line with an operator, a redirection or a
    substitution is left out rather than given to the shell."""
    import re

    import typer.main

    root = typer.main.get_command(app)
    lines = []
    for leaf in _leaf_commands(root):
        command = root
        for name in leaf:
            command = command.commands[name]
        lines += re.findall(r"Example(?: \([^)]*\))?: (gtc .*)$", command.help or "", re.M)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for block in re.findall(r"^```bash\n(.*?)^```", readme, re.S | re.M):
        lines += [ln.split("  #")[0] for ln in block.splitlines() if ln.startswith("gtc ")]
    lines = [ln for ln in lines if not re.search(r"[;&|<>`]|\$\(", ln)]
    assert any(ln.startswith("gtc pipeline --set") for ln in lines), lines  # the example this test is for
    refused = []
    for line in lines:
        res = subprocess.run(["bash", "-O", "failglob", "-c", f"set -- {line}"], cwd=tmp_path, capture_output=True)
        if res.returncode:
            refused.append(f"{line}: {res.stderr.decode().strip()}")
    assert not refused, refused
