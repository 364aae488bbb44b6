"""How ``gtc`` ends when Ctrl-C comes: while a command works, "interrupted" and exit 130; once it has
ended (its output and its status decided), the command's own status and nothing more on stderr.

Each case runs ``python -m cli.main`` (the way that also meets CPython's "unhandled KeyboardInterrupt"
flag: the console script exits without looking at it) with a ``sitecustomize`` that makes the process
send itself SIGINT at a chosen point, so the timing is exact rather than raced: an ``atexit`` callback
is interpreter shutdown after the command, an import finder a point inside it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A Ctrl-C while the interpreter shuts down, after the command has ended and printed what it had to.
CTRL_C_WHILE_EXITING = """
import atexit, os, signal
atexit.register(lambda: os.kill(os.getpid(), signal.SIGINT))  # registered first: runs after the others
"""

# A Ctrl-C inside code run by exec() of a string (as dataclasses and namedtuple define their methods),
# on the first import of MODULE.
CTRL_C_IN_EXEC_ON_IMPORT = """
import sys

class CtrlCInExec:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            sys.meta_path.remove(self)
            exec("import os, signal\\nos.kill(os.getpid(), signal.SIGINT)\\nwhile True: pass")
        return None

sys.meta_path.insert(0, CtrlCInExec())
"""

#: a module ``gtc profile`` first imports inside the command, before it reads its model files
FIRST_IN_PROFILE = "runtime.backends"


def _gtc(tmp_path: Path, sitecustomize: str, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "sitecustomize.py").write_text(sitecustomize)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_ctrl_c_while_a_command_exits_keeps_its_status_and_output(tmp_path: Path) -> None:
    """The signal landed in an atexit callback: Python printed "Exception ignored in atexit callback"
    and a KeyboardInterrupt traceback after the command's error line, and a signal after finalisation
    (which puts SIGINT back to the system default) killed the process: status -2."""
    r = _gtc(tmp_path, CTRL_C_WHILE_EXITING, "profile", str(tmp_path / "missing.onnx"))
    assert (r.returncode, r.stdout) == (2, ""), r.stderr
    assert r.stderr == f"error: model file does not exist: {tmp_path / 'missing.onnx'}\n"


def test_ctrl_c_while_the_help_exits_keeps_exit_0(tmp_path: Path) -> None:
    """What runs no command (the help, a usage error) is done once click has printed it, too."""
    r = _gtc(tmp_path, CTRL_C_WHILE_EXITING, "--help")
    assert (r.returncode, r.stderr) == (0, "")
    assert "Usage: python -m cli.main" in r.stdout


def test_ctrl_c_inside_exec_during_a_command_is_interrupted_exit_130(tmp_path: Path) -> None:
    """CPython marks a KeyboardInterrupt leaving an exec() of a string as the program's end even once
    caught, and ``python -m`` then killed itself by SIGINT after printing "interrupted": status -2, as
    if the command had never handled the Ctrl-C."""
    r = _gtc(tmp_path, CTRL_C_IN_EXEC_ON_IMPORT.format(module=FIRST_IN_PROFILE), "profile", "m.onnx")
    assert (r.returncode, r.stdout, r.stderr) == (130, "", "interrupted\n")


def test_a_second_ctrl_c_after_interrupted_changes_nothing(tmp_path: Path) -> None:
    """Ctrl-C pressed again while an interrupted command exits (its clean-up has run)."""
    both = CTRL_C_WHILE_EXITING + CTRL_C_IN_EXEC_ON_IMPORT.format(module=FIRST_IN_PROFILE)
    r = _gtc(tmp_path, both, "profile", "m.onnx")
    assert (r.returncode, r.stdout, r.stderr) == (130, "", "interrupted\n")


def test_ctrl_c_while_python_m_loads_the_commands_exits_130_quietly(tmp_path: Path) -> None:
    """As for the console script (test_interrupt_while_loading): no traceback from inside an import."""
    r = _gtc(tmp_path, CTRL_C_IN_EXEC_ON_IMPORT.format(module="typer"), "profile", "m.onnx")
    assert (r.returncode, r.stdout, r.stderr) == (128 + signal.SIGINT, "", "")
