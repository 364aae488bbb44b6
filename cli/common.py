"""What every command shares: user errors as one line + exit code 2, option parsing, tables."""

from __future__ import annotations

import functools
import inspect
import math
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from cli import SIGTERM_STOPPED, interrupts_as_usual, interrupts_ignored_from_now
from gtcompress.errors import GTCompressError

try:  # typer >= 0.26 parses with its own copy of click; older versions with click itself
    from typer._click import exceptions as _click_errors
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as _click_errors  # type: ignore[no-redef]

_UsageProblem = _click_errors.ClickException
# A bare `gtc` / `gtc data` "fails" with the help text itself (click >= 8.2): that must stay as it is.
_HelpInstead: type[Exception] | tuple[()] = getattr(_click_errors, "NoArgsIsHelpError", ())

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def print_error(message: str) -> None:
    """``error: MESSAGE`` as exactly one line on stderr.

    Messages that quote a library (a YAML parser's caret diagram, a protobuf error) may hold line
    breaks; they are joined, because the rule is one line per mistake, which scripts and logs rely on."""
    one_line = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    err_console.print("[bold red]error:[/]", end=" ")
    err_console.print(one_line, markup=False, highlight=False, soft_wrap=True)


def print_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """``warning: MESSAGE`` as one line on stderr, in place of :func:`warnings.showwarning` while a
    command runs: Python's own format adds the library's file and line number and the source line
    that warned, two lines that tell a CLI user nothing they can act on."""
    one_line = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    err_console.print("[yellow]warning:[/]", end=" ")
    err_console.print(one_line, markup=False, highlight=False, soft_wrap=True)


def user_errors(fn: F) -> F:
    """Turn a :class:`GTCompressError` (a user mistake), or an ``OSError`` naming a file, into
    ``error: …`` on stderr and exit 2, and a Ctrl-C while the command runs into ``interrupted`` and exit
    130. Once the command has ended, Ctrl-C is ignored (``cli.interrupts_ignored_from_now``). Warnings
    the command raises are shown as ``warning: …`` lines (:func:`print_warning`)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        shown = warnings.showwarning
        try:
            try:
                interrupts_as_usual()  # the command's own: "interrupted", its clean-up (cli/__init__.py)
                warnings.showwarning = print_warning
                _import_numpy_first()
                return fn(*args, **kwargs)
            finally:
                warnings.showwarning = shown
                # before the lines below print: one "interrupted" or error line, then the exit status is kept
                interrupts_ignored_from_now()
        except GTCompressError as e:
            print_error(str(e))
            raise typer.Exit(2) from None
        except OSError as e:
            # A file the system refused (permission denied, not a directory, disk full...): the user's
            # to fix, and the file is named. Without a file name it is more likely a bug: traceback.
            if e.filename is None:
                raise
            where = str(e.filename) + (f" -> {e.filename2}" if e.filename2 is not None else "")
            print_error(f"{where}: {e.strerror or e}")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


class StopRequested(BaseException):
    """SIGTERM reached a service command (``gtc serve``, ``gtc tritonserver``) outside its server's own
    handling: the stop a container or systemd asks for. Not an ``Exception``, so that loading code
    which catches those does not take it for a failure of its own."""


def _raise_stop(signum: int, frame: object) -> None:
    # One is enough: a second SIGTERM while the first one's clean-up runs would interrupt that clean-up.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise StopRequested


def stops_on_sigterm(fn: F) -> F:
    """SIGTERM stops a service command as asked, at whatever point of it: its clean-up runs, then one line
    ``stopped (SIGTERM)`` on stderr and exit status 0, as a server that drains and stops ends.

    Python's default ended the process outright (exit status 143, as if the service had failed) while
    ``gtc serve`` was still loading its model, before uvicorn takes the signal over. A handler the
    command installs itself (uvicorn's) wins while installed and puts this one back."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():  # signal.signal works there only
            return fn(*args, **kwargs)
        previous = signal.signal(signal.SIGTERM, _raise_stop)
        try:
            return fn(*args, **kwargs)
        except StopRequested:
            err_console.print(SIGTERM_STOPPED)
            return None
        finally:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)

    return wrapper  # type: ignore[return-value]


def _import_numpy_first() -> None:
    """Import numpy before a command imports torch, so that a Ctrl-C while numpy loads is a
    ``KeyboardInterrupt`` like any other ("interrupted", exit 130).

    torch's C extension imports numpy itself and clears whatever that import raised, a
    ``KeyboardInterrupt`` included: a Ctrl-C in that window (within the first second of ``gtc train``,
    ``export``, ``prune``...) was swallowed, the half-initialised numpy stayed in ``sys.modules``, and
    the command went on until it failed with a traceback such as "module 'numpy' has no attribute
    'iterable'". Every command loads numpy anyway, so this costs nothing."""
    import numpy  # noqa: F401


def _usage_error_line(e: Exception) -> NoReturn:
    """Print click's parse error (unknown command/option, bad or missing value) as one ``error:`` line
    pointing at the command's help, and exit 2 like every other user mistake."""
    ctx = getattr(e, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    print_error(e.format_message() + hint)  # type: ignore[attr-defined]
    raise typer.Exit(2)


class OneLineErrorsGroup(TyperGroup):
    """The ``gtc`` group: click's usage errors become one ``error:`` line instead of a usage block and
    a boxed panel, so that every user mistake, ours or click's, looks and exits the same.

    Errors of the top-level arguments surface in :meth:`make_context`; those of a subcommand (its
    name, options and arguments, nested groups included) in :meth:`invoke`. ``NoArgsIsHelpError`` (a
    bare ``gtc`` or ``gtc data``) still prints the help it stands for."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except _HelpInstead:
            raise
        except _UsageProblem as e:
            _usage_error_line(e)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().main(*args, **kwargs)
        finally:
            # what ran no command (--help, a usage error) is done too: its exit status stays as it is
            interrupts_ignored_from_now()

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _HelpInstead:
            raise
        except _UsageProblem as e:
            _usage_error_line(e)


def join_help_paragraphs(app: typer.Typer) -> None:
    """Set each command's help to its docstring with every paragraph on one line, in ``app`` and its groups.

    typer's rich help joins the lines of a docstring's first paragraph but prints the later ones with
    the source's line breaks (typer 0.29; older versions joined them too), so a paragraph wrapped at
    100 columns in the source came out cut mid-sentence at any terminal width ("thread counts do
    not" / "apply);"). A paragraph that starts with click's ``\\b`` keeps its lines."""
    for info in app.registered_commands:
        doc = info.help if info.help is not None else inspect.getdoc(info.callback)
        if doc:
            paragraphs = inspect.cleandoc(doc).split("\n\n")
            info.help = "\n\n".join(p if p.startswith("\b") else " ".join(p.split("\n")) for p in paragraphs)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            join_help_paragraphs(group.typer_instance)


def check_checkpoint_out(out: Path, source: Path | None = None) -> None:
    """Refuse ``--out`` now, before minutes of training, when a checkpoint may not be written there
    (a file, someone's non-empty directory, a path below a file: see ``check_checkpoint_target``),
    or when it is ``source``, the checkpoint a command compresses.

    An existing checkpoint is otherwise replaced, as a re-run into the same folder should; but
    replacing the source would lose the dense parent that the compressed model is compared with and
    made from again, and nothing would tell the two apart afterwards but config.json."""
    import os

    from gtcompress.checkpoint import check_checkpoint_target, checkpoint_root
    from gtcompress.errors import CheckpointError

    if source is not None:
        source = checkpoint_root(source)  # the commands read a checkpoint named by one of its files as its folder
    if source is not None and out.exists() and source.exists() and os.path.samefile(out, source):
        raise CheckpointError(
            f"--out {out}: is the checkpoint being compressed; write the compressed one to another directory "
            "(replacing it would lose the model it is made from)"
        )
    try:
        check_checkpoint_target(out)
    except CheckpointError as e:
        raise CheckpointError(f"--out {e}") from None


def check_out_writable(path: Path, option: str = "--out", *, inside: bool = False) -> None:
    """Refuse an output path nothing can be written to (below a file, in a directory that takes no new
    file: see ``gtcompress.io.unwritable_reason``) as ``OPTION PATH: why``, before the command's work:
    the write comes last, and failing there threw away minutes of training, export or profiling.
    Creates nothing. Every command that writes after its work calls this or a check built on the same
    function (``check_checkpoint_out``, ``exporters.onnx.check_output_path``). ``inside``: ``path`` is a
    folder the command writes into, asked itself where it exists."""
    from gtcompress.errors import ConfigError
    from gtcompress.io import unwritable_reason

    reason = unwritable_reason(path, inside=inside)
    if reason is not None:
        raise ConfigError(f"{option} {path}: {reason}")


def check_data_option(data: str | None) -> None:
    """Refuse a ``--data`` that names no dataset, as ``--data: <why>``, before any work. An empty one was
    taken as not given: ``gtc pipeline --data ''`` ran the default dataset for minutes, and ``gtc eval
    --data ''`` blamed the checkpoint ("no dataset recorded in the checkpoint"), which records one."""
    from gtcompress.data import check_dataset_name

    if data is None:
        return
    try:
        check_dataset_name(data)
    except GTCompressError as e:
        raise GTCompressError(f"--data: {e}") from None


def path_value(text: str | Path) -> Path:
    """Parser of the path options (``parser=path_value, metavar="<path>"``): the text as a path, refused
    when empty, naming the option (click adds it).

    typer reads ``''`` as ``Path('')``, which is ``.``: ``--out "$OUT"`` with ``$OUT`` unset would write
    into the current directory, and a ``--data-root ''`` would read it, with nothing said. The current
    directory is still there as ``.``. The ``metavar`` keeps the help as typer shows a Path option (with
    a parser it shows the type's name)."""
    if isinstance(text, str) and not text:
        raise typer.BadParameter("empty; expected a path (an empty one would be read as ., the current directory)")
    return Path(text)


def dir_value(text: str | Path) -> Path:
    """Parser of the directory options (``parser=dir_value, metavar="<dir>"``): :func:`path_value`, and
    an existing file refused in the words of typer's ``file_okay=False``, a check typer skips for an
    option with a parser."""
    path = path_value(text)
    if path.exists() and not path.is_dir():
        raise typer.BadParameter(f"dir {str(text)!r} is a file.")
    return path


def served_model_name(name: str | None, path: Path) -> str:
    """The name ``gtc serve`` serves ``path`` under and ``gtc export`` writes its Triton model as:
    ``--name``, else ``runtime.served.default_model_name``, by one rule for both (a Triton model
    folder and a KServe URL segment take letters, digits, '_', '-' and '.').

    A default name outside that rule is refused, as a ``--name`` would be, with a name to give
    instead, rather than rewritten: the name is what clients and Triton call the model by, and a
    rewrite would send 'my model+v2' and 'my model v2' to the same model folder."""
    from exporters.triton_repo import check_model_name
    from gtcompress.errors import ConfigError
    from runtime.served import default_model_name

    if name is not None:
        try:
            check_model_name(name)
        except ConfigError as e:
            raise ConfigError(f"--name: {e}") from None
        return name
    default = default_model_name(path)
    try:
        check_model_name(default)
    except ConfigError:
        raise ConfigError(
            f"--name not given, and the default model name {default!r} (from {path}) has characters other than "
            f"letters, digits, '_', '-' and '.'; give a name with --name, e.g. --name {_plain_name(default)}"
        ) from None
    return default


def _plain_name(name: str) -> str:
    """``name`` within the model-name rule, for the refusal to suggest: accents dropped ('ü-net' is
    'u-net'), any other character '_'."""
    import re
    import unicodedata

    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    plain = re.sub(r"[^A-Za-z0-9_.-]+", "_", ascii_name).strip("_")
    return plain if plain.strip(".") else "model"


def seconds(value: float | None) -> float | None:
    """Callback of every time-budget option: a finite number of seconds >= 0 (0 = no limit).

    ``min=0`` alone lets NaN through (no comparison with NaN is true), and a negative or NaN
    budget made training stop after its first epoch without a word; ``inf`` is no number of
    seconds (0 already means no limit)."""
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise typer.BadParameter(f"{value} is not a number of seconds >= 0 (0 = no limit)")
    return value


def learning_rate(value: float | None) -> float | None:
    """Callback of every learning-rate option: a finite number >= 0.

    ``min=0`` alone lets ``inf`` through, and an infinite learning rate turns every weight NaN in the
    first optimiser step: when that step is the run's last, no later loss is there to catch it, and
    ``gtc train``/``gtc sparsify`` wrote a checkpoint of NaN weights and exited 0 (NaN itself is
    refused here as well: the option has no ``min=``, which refused it with "Input should be greater
    than or equal to 0")."""
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise typer.BadParameter(f"{value} is not a learning rate (a finite number >= 0)")
    return value


def training_learning_rate(value: float | None) -> float | None:
    """Callback of ``gtc train --lr``: a finite number > 0.

    AdamW moves no weight at a learning rate of 0 (the decoupled weight decay is scaled by it too),
    so ``gtc train --lr 0`` ran every epoch and wrote its random initialisation as a trained
    checkpoint, exit 0. Fine-tuning commands keep :func:`learning_rate` (>= 0), as their other rates
    (gates) may still train; the pipeline's ``train.lr`` is refused below or at 0 as here."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(
            f"{value} is not a learning rate for training (a finite number > 0; at 0 no weight would change)"
        )
    return value


def finite_number(low: float, high: float | None = None) -> Callable[[float | None], float | None]:
    """Callback of a float option that must be a finite number in ``[low, high]`` (``high=None``: no upper
    bound), refused with one message that names the value and the range.

    Neither ``min=``/``max=`` nor a callback behind them will do: ``min=`` lets ``inf`` through, where
    infinity is no setting (``gtc serve --max-body-mib inf`` was an OverflowError traceback after the
    "serving" banner, ``gtc profile --degree inf`` one under the progress bar, and ``gtc tritonserver
    --startup-timeout inf`` waited for ever for a server that hangs), and it refuses NaN before any callback
    runs with "Input should be greater than or equal to 1", as if NaN were a number below the bound.
    The range is also in the option's help, which typer no longer shows without ``min=``."""
    expected = f"a finite number >= {low:g}" if high is None else f"a finite number from {low:g} to {high:g}"

    def check(value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and value >= low and (high is None or value <= high)):
            raise typer.BadParameter(f"{value:g} is not {expected}")
        return value

    return check


def parse_pe(text: str) -> dict[str, int]:
    """``"lap:8,rwse:20"`` → ``{"lap": 8, "rwse": 20}``; ``"none"`` → ``{}``.

    An empty value is refused rather than read as ``none``: ``--pe ''`` (an unset shell variable) trained
    without the default lap:8 and said nothing. A kind given twice is refused as ``--keep`` refuses an
    axis given twice: ``lap:8,lap:4`` silently trained with lap:4."""
    if not text.strip():
        raise GTCompressError(
            "--pe: empty value; give entries like 'lap:8' or 'rwse:20' (comma-separated), or 'none' for no "
            "positional encoding"
        )
    if text.strip().lower() == "none":
        return {}
    out: dict[str, int] = {}
    for part in text.split(","):
        kind, _, k = part.partition(":")
        kind, k = kind.strip().lower(), k.strip()
        # ASCII digits only: str.isdigit() also takes '²' or '①', which int() then refused with a traceback
        if kind not in ("lap", "rwse") or not (k.isascii() and k.isdigit()) or int(k) <= 0:
            raise GTCompressError(f"--pe: expected entries like 'lap:8' or 'rwse:20' (comma-separated), got {part!r}")
        if kind in out:
            raise GTCompressError(f"--pe: {kind} given twice ({kind}:{out[kind]} and {kind}:{int(k)}); give it once")
        out[kind] = int(k)
    return out


@contextmanager
def lazy_progress(
    description: str, *, label: str = "{task.description}", transient: bool = False
) -> Iterator[Callable[[int, int, str], None]]:
    """``progress(done, total, what)`` for long work that reports by callback (``gtc profile``'s passes, ``gtc
    export --quantize``'s evaluations). The bar opens on the first call, after the work's own refusals, which are
    then one error line, not a bar and the line; it is stopped only if it opened, as stopping one never started
    still prints a blank line off a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=transient
    )
    task = bar.add_task(description, total=None)

    def progress(done: int, total: int, what: str) -> None:
        bar.start()  # a no-op once started
        bar.update(task, completed=done, total=total, description=what)

    try:
        yield progress
    finally:
        if bar.live.is_started:
            bar.stop()


def table(title: str, rows: list[dict[str, Any]]) -> Table:
    """A result table: one column per key of the first row, numbers right-aligned.

    Cells fold onto more lines where the terminal is too narrow (``overflow="fold"``), never end in
    an ellipsis: rich's default cut a path or a model name to ``/very/long/…`` at 80 columns, and
    a cut name is a wrong name (the file written, the model measured)."""
    t = Table(title=title, title_justify="left")
    if not rows:
        return t
    for col in rows[0]:
        t.add_column(str(col), justify="right" if isinstance(rows[0][col], (int, float)) else "left", overflow="fold")
    for r in rows:
        t.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in r.values()))
    return t
