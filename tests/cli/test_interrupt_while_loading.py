"""Ctrl-C while ``gtc`` is still loading (typer, rich, its commands, typer building them: the first
~0.3 s) exits 130 with no traceback; once a command runs, it gets Python's KeyboardInterrupt as before.

Each case runs a fresh interpreter that calls itself ``gtc``, as the console script does, and sends
itself SIGINT at a chosen point of the imports, so the timing is exact rather than raced.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str, argv0: str = "gtc") -> subprocess.CompletedProcess[str]:
    prelude = f"import os, signal, sys\nsys.argv[0] = {argv0!r}\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def test_ctrl_c_while_the_commands_load_exits_130_quietly() -> None:
    r = _run("import cli\nos.kill(os.getpid(), signal.SIGINT)\nimport cli.main\nprint('not reached')")
    assert (r.returncode, r.stdout, r.stderr) == (128 + signal.SIGINT, "", "")


def test_while_typer_builds_the_commands_ctrl_c_is_quiet_too() -> None:
    r = _run("import cli.main\nos.kill(os.getpid(), signal.SIGINT)\nprint('not reached')")
    assert (r.returncode, r.stdout, r.stderr) == (128 + signal.SIGINT, "", "")


def test_once_a_command_runs_ctrl_c_is_a_keyboard_interrupt_again() -> None:
    """Inside the command: its own clean-up runs (``finally``), then "interrupted" and exit 130. After it
    has ended, Ctrl-C is ignored (tests/cli/test_interrupt_exit_status.py)."""
    r = _run(
        "import cli.main\nfrom cli.common import user_errors\n"
        "@user_errors\ndef command():\n"
        "    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler\n"
        "    try:\n        os.kill(os.getpid(), signal.SIGINT)\n        import time; time.sleep(5)\n"
        "    finally:\n        print('cleaned up', flush=True)\n"
        "command()\n"
    )
    assert (r.returncode, r.stdout, r.stderr) == (128 + signal.SIGINT, "cleaned up\n", "interrupted\n")


def test_an_ignored_sigint_and_other_programs_keep_their_handler() -> None:
    ignored = _run(
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\nimport cli\n"
        "print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"
    )
    assert ignored.stdout.strip() == "True", ignored.stderr
    library = _run("import cli\nprint(signal.getsignal(signal.SIGINT) is signal.default_int_handler)", argv0="app.py")
    assert library.stdout.strip() == "True", library.stderr


def test_sigterm_while_a_service_command_loads_stops_it_with_exit_0() -> None:
    """A service manager may stop ``gtc serve`` in its first half second, before the command (and its
    own SIGTERM handling) runs: Python's default killed it, exit status 143, as if it had failed."""
    r = _run(
        "sys.argv[1:] = ['serve', 'm.onnx']\nimport cli\nos.kill(os.getpid(), signal.SIGTERM)\nprint('not reached')"
    )
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "stopped (SIGTERM)\n")


def test_other_commands_keep_sigterm_as_it_is() -> None:
    """A batch command stopped by SIGTERM has not done its work: it keeps the default (killed, 143)."""
    r = _run("sys.argv[1:] = ['train']\nimport cli\nos.kill(os.getpid(), signal.SIGTERM)\nprint('not reached')")
    assert (r.returncode, r.stdout, r.stderr) == (-signal.SIGTERM, "", "")
