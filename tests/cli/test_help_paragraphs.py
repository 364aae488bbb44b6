"""``--help`` prints each paragraph of a command's description as text the terminal wraps, not source lines."""

import inspect
import re

import typer.main
from typer.testing import CliRunner

from cli.main import app
from tests.cli.test_cli import _leaf_commands


def test_help_paragraphs_are_not_cut_at_the_source_line_breaks() -> None:
    """typer 0.29's rich help printed the second and later paragraphs of a docstring with its line
    breaks: ``gtc profile --help`` read "(CUDA rows: once per size, thread counts do not" / "apply);"
    at every terminal width. On a terminal wide enough for any paragraph, each must be one line."""
    root = typer.main.get_command(app)
    cut = []
    for leaf in _leaf_commands(root):
        res = CliRunner().invoke(app, [*leaf, "--help"], env={"COLUMNS": "1000", "TERMINAL_WIDTH": "1000"})
        assert res.exit_code == 0, res.output
        lines = {ln.strip() for ln in res.output.splitlines()}
        callback = next(c.callback for c in _registered(app, leaf))
        for paragraph in inspect.getdoc(callback).split("\n\n")[1:]:
            text = re.sub(r"\\(\[)", r"\1", " ".join(paragraph.split()))  # rich markup escapes print without "\"
            if text not in lines:
                cut.append(f"gtc {' '.join(leaf)}: {text[:60]}...")
    assert ("profile",) in _leaf_commands(root)
    assert not cut, cut


def _registered(a: typer.Typer, leaf: tuple[str, ...]) -> list:
    """The CommandInfo of ``leaf`` (``("data", "generate")``) in ``a``."""
    if len(leaf) > 1:
        group = next(g for g in a.registered_groups if g.name == leaf[0])
        return _registered(group.typer_instance, leaf[1:])
    return [c for c in a.registered_commands if (c.name or c.callback.__name__) == leaf[0]]
