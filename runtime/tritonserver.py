"""Start and stop a real NVIDIA Triton Inference Server on this machine, from the ``nvidia-pytriton`` wheel.

The wheel (``pip install 'gtcompress[triton]'``) ships the ``tritonserver`` binary with the Python
backend; PyTriton's own ``bind`` API cannot do ragged batching and adds a proxy hop, so the raw
binary is launched here, with what it needs and the wheel does not set up:

* a backend directory holding ``python/`` with ``libtriton_python.so``,
  ``triton_python_backend_utils.py`` and the ``triton_python_backend_stub`` built for the running
  Python version (links into the wheel, made in a temporary directory);
* ``LD_LIBRARY_PATH`` with the wheel's ``nvidia_pytriton.libs`` and the running interpreter's own
  ``lib`` directory: without the latter the stub may load a system ``libpython`` of another patch
  release, and model loading fails inside ``multiprocessing``;
* ``PATH`` starting with this environment's ``bin`` and ``PYTHONPATH`` with its package
  directories and gtcompress's source root, so a model's ``import runtime`` finds the same code;
* HTTP on loopback only, no gRPC, no metrics ports (several servers can run side by side).

:class:`TritonServer` is a context manager (the pytest fixture and ``bench/serve.py`` use it);
``gtc tritonserver REPO`` runs one in the foreground. It stops the server with SIGTERM to its PID
(then SIGKILL if it has not exited after ``stop_timeout`` seconds). On a machine without a GPU the
server logs CUDA driver messages at start-up; they are harmless.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import os
import re
import signal
import site
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from runtime.children import stop_with_parent
from runtime.errors import SessionError
from runtime.net import check_port_free, listen_sockets
from runtime.scratch import OwnedScratch

# Triton logs a model's load failure as: failed to load 'NAME' version N: Internal: Error: message\n\nAt: ...
_LOAD_ERROR = re.compile(r"failed to load '([^']+)' version (\d+): (?:\w+: )?(.*?)(?:\\n|\"$)", re.MULTILINE)
# ...and a model directory it cannot even read (a config.pbtxt that does not parse, a folder whose name
# is not its model's) as: Poll failed for model directory 'NAME': message"
_POLL_ERROR = re.compile(r"Poll failed for model directory '([^']+)': (.*?)(?:\\n|\"$)", re.MULTILINE)
#: What an interrupted write of model NAME leaves beside it in the repository: the new model's temporary
#: folder ``.NAME.tmp-PID-RANDOM`` (``gtcompress.io.make_temp_dir``) or the old one set aside,
#: ``.NAME.old-PID`` (``gtcompress.io.swap_dir_into_place`` where names cannot be exchanged). Triton
#: takes every folder of the repository for a model, hidden ones too, and fails to start on these.
_LEFTOVER = re.compile(r"\.(.+)\.(?:tmp-\d+-[0-9a-f]+|(old)-\d+)")
#: The launcher's own folder in the temp directory (backend links, the default log); one a killed owner
#: left is removed by the next launch (:mod:`runtime.scratch`).
SCRATCH_PREFIX = "gtc-tritonserver-"
INSTALL_HINT = "pip install 'gtcompress[triton]' (the nvidia-pytriton wheel ships tritonserver)"
BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")
STUB = "triton_python_backend_stub"


@dataclass(frozen=True)
class TritonInstall:
    """Where the ``nvidia-pytriton`` wheel put the server: ``root`` is its ``pytriton/tritonserver``."""

    root: Path
    libs: Path

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    def stub(self, version: str | None = None) -> Path:
        version = version or f"{sys.version_info.major}.{sys.version_info.minor}"
        return self.root / "python_backend_stubs" / version / STUB


def find_tritonserver() -> TritonInstall:
    """The installed server, or a :class:`SessionError` saying what is missing and how to install it."""
    spec = importlib.util.find_spec("pytriton")  # finds the package without importing it (and numpy)
    if spec is None or not spec.submodule_search_locations:
        raise SessionError(f"NVIDIA Triton Inference Server is not installed: {INSTALL_HINT}")
    pkg = Path(next(iter(spec.submodule_search_locations)))
    install = TritonInstall(pkg / "tritonserver", pkg.parent / "nvidia_pytriton.libs")
    if not install.binary.is_file():
        raise SessionError(f"{install.binary}: missing from the nvidia-pytriton install; reinstall: {INSTALL_HINT}")
    for f in BACKEND_FILES:
        if not (install.root / "backends" / "python" / f).is_file():
            raise SessionError(f"{install.root / 'backends' / 'python' / f}: missing; reinstall: {INSTALL_HINT}")
    if not install.stub().is_file():
        have = sorted(p.name for p in (install.root / "python_backend_stubs").glob("*") if (p / STUB).is_file())
        raise SessionError(
            f"nvidia-pytriton has no Python-backend stub for Python {sys.version_info.major}."
            f"{sys.version_info.minor} (it has {', '.join(have) or 'none'}); run with one of those"
        )
    return install


def python_backend_dir(install: TritonInstall, dest: Path) -> Path:
    """``dest`` made into a ``--backend-directory`` holding the Python backend for this interpreter."""
    py = dest / "python"
    py.mkdir(parents=True, exist_ok=True)
    sources = [install.root / "backends" / "python" / f for f in BACKEND_FILES] + [install.stub()]
    for src in sources:
        link = py / src.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(src)
    return dest


def server_env(install: TritonInstall, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the server and its Python stubs need (see the module docstring)."""
    env = dict(os.environ if base is None else base)

    def prepend(key: str, parts: list[str]) -> None:
        old = [p for p in env.get(key, "").split(os.pathsep) if p]
        env[key] = os.pathsep.join(dict.fromkeys(parts + old))

    libdir = sysconfig.get_config_var("LIBDIR") or str(Path(sys.base_prefix) / "lib")
    prepend("LD_LIBRARY_PATH", [str(install.libs), libdir])
    prepend("PATH", [str(Path(sys.executable).parent)])
    source_root = str(Path(__file__).resolve().parents[1])  # gtcompress's packages, installed or not
    prepend("PYTHONPATH", [source_root, *site.getsitepackages()])
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` now, as the system picks one. Bound as :func:`runtime.net.listen_sockets`
    binds (every family ``host`` resolves to), so ``--port 0`` with an IPv6 address or a name that
    does not resolve is the :class:`~runtime.errors.AddressError` a fixed port gets, not a
    ``socket.gaierror`` traceback from an IPv4-only socket."""
    socks = listen_sockets(host, 0)
    try:
        return int(socks[0].getsockname()[1])
    finally:
        for s in socks:
            s.close()


class TritonServer:
    """A ``tritonserver`` process serving ``repository`` over HTTP on ``host:http_port`` (0: a free port).

    ``log``: file for the server's output (default: a file in the server's temporary directory,
    whose tail is quoted when it fails to start). Use as ``with TritonServer(repo) as srv:``."""

    def __init__(
        self,
        repository: str | Path,
        *,
        host: str = "127.0.0.1",
        http_port: int = 0,
        log: str | Path | None = None,
        startup_timeout: float = 120.0,
        stop_timeout: float = 30.0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.repository = Path(repository).resolve()
        if not self.repository.is_dir():
            if self.repository.exists():  # a file (a model file given for its repository): it does exist
                raise SessionError(
                    f"{repository}: is a file, not a model repository directory (gtc export --triton-repo DIR writes "
                    "one; gtc serve runs a model file)"
                )
            raise SessionError(f"{repository}: model repository directory does not exist")
        check_no_leftovers(self.repository)
        if not any(_looks_like_model(d) for d in self.repository.iterdir()):  # Triton would serve nothing
            raise SessionError(
                f"{repository}: not a Triton model repository (no NAME/config.pbtxt or NAME/1/ in it); write one "
                "with gtc export --triton-repo"
            )
        if ":" in host:
            # Triton's HTTP server parses an IPv6 literal as 255.255.255.255 (seen with ::1): it listened
            # there, never answered the readiness poll, and the start failed after --startup-timeout
            raise SessionError(
                f"--host {host}: tritonserver's HTTP endpoint takes an IPv4 address or a host name, not an IPv6 "
                "address; use 127.0.0.1 (loopback) or 0.0.0.0 (every interface)"
            )
        self.install = find_tritonserver()
        self.host = host
        self.http_port = http_port or free_port(host)
        self.log_path = Path(log) if log is not None else None
        self.startup_timeout, self.stop_timeout = startup_timeout, stop_timeout
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None
        self._tmp: OwnedScratch | None = None
        self._log_start = 0  # offset of this run in the log file

    @property
    def url(self) -> str:
        """``host:port`` as ``tritonclient.http.InferenceServerClient`` takes it."""
        return f"{self.host}:{self.http_port}"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def command(self, backend_dir: Path) -> list[str]:
        return [
            str(self.install.binary),
            "--model-repository",
            str(self.repository),
            "--backend-directory",
            str(backend_dir),
            "--http-address",
            self.host,
            "--http-port",
            str(self.http_port),
            "--allow-grpc",
            "false",
            "--allow-metrics",
            "false",
            "--allow-gpu-metrics",
            "false",
            *self.extra_args,
        ]

    def start(self) -> TritonServer:
        """Launch the server and wait until it reports ready (its models loaded).

        The port is checked free first: Triton binds it only after loading every model, and another
        server on it would answer the readiness poll in its stead."""
        if self.process is not None:
            return self
        check_port_free(self.host, self.http_port)
        self._tmp = OwnedScratch(SCRATCH_PREFIX)
        try:  # a failure before the server runs (the --log folder, the backend links) removes the scratch too
            tmp = self._tmp.path
            backend_dir = python_backend_dir(self.install, tmp / "backends")
            if self.log_path is None:
                self.log_path = tmp / "tritonserver.log"
            self._launch(backend_dir, self.log_path)
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, backend_dir: Path, log: Path) -> None:
        """Start the server's process with its output appended to ``log``. A launch that fails before the
        server runs (a log name the file system refuses, an exec error) removes the log if it made it and
        the folders it made for it; once the server runs, the log stays, with why it failed to start."""
        from gtcompress.io import dirs_made  # here: the Triton repository's vendored runtime has no gtcompress.io

        made_log = not (log.exists() or log.is_symlink())
        with dirs_made(log.parent):
            try:
                with open(log, "ab") as out:
                    self._log_start = out.tell()  # an appended --log holds earlier runs: read only this one's
                    self.process = subprocess.Popen(
                        self.command(backend_dir),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        env=server_env(self.install),
                        start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop it in order
                        preexec_fn=stop_with_parent(),
                    )
            except BaseException:
                if made_log:
                    with contextlib.suppress(OSError):
                        log.unlink()
                raise

    def ready(self) -> bool:
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection(self.host, self.http_port, timeout=2)
            try:
                conn.request("GET", "/v2/health/ready")
                return conn.getresponse().status == 200
            finally:
                conn.close()
        return False

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise SessionError(f"tritonserver exited (code {code}) before it was ready: {self.failure()}")
            if self.ready():
                return
            time.sleep(0.2)
        raise SessionError(f"tritonserver was not ready after {self.startup_timeout:.0f} s:\n{self.log_tail()}")

    def failure(self) -> str:
        """Why the server did not come up: each model's load error from the log (a model directory
        Triton could not read included), else the log's tail. The tail alone is Triton's shutdown
        tables, 5 KB without the cause, which it logs before them."""
        if self.log_path is None or not self.log_path.is_file():
            return "(no log)"
        text = self._log_text()
        loads = [f"model directory '{d}': {why}" for d, why in _POLL_ERROR.findall(text)]
        loads += [f"model '{m}' version {v}: {why}" for m, v, why in _LOAD_ERROR.findall(text)]
        return "; ".join(dict.fromkeys(loads)) if loads else "\n" + self.log_tail()

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return "(no log)"
        return "\n".join(self._log_text().splitlines()[-lines:])

    def _log_text(self) -> str:
        """What this run wrote to the log (from where it started)."""
        assert self.log_path is not None
        with open(self.log_path, "rb") as f:
            f.seek(self._log_start)
            return f.read().decode(errors="replace")

    def stop(self) -> int | None:
        """SIGTERM to the server's PID (SIGKILL after ``stop_timeout``); its exit code.

        The process is forgotten only once it has ended: a second Ctrl-C during the wait interrupts
        this call, and the caller's next ``stop()`` (``__exit__``, the CLI's clean-up) still waits for
        the server, and kills it, before its scratch folder goes."""
        proc = self.process
        code = None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)  # the server and its Python stubs
                    proc.wait(10)
            code = proc.returncode
            self.process = None
        if self._tmp is not None:
            if self.log_path is not None and self.log_path.is_relative_to(self._tmp.path):
                self.log_path = None  # goes with the directory
            self._tmp.cleanup()
            self._tmp = None
        return code

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def which_tritonserver() -> str | None:
    """Path of the binary if installed, else None (for skips and messages)."""
    try:
        return str(find_tritonserver().binary)
    except SessionError:
        return None


def check_no_leftovers(repository: Path) -> None:
    """Refuse a repository holding what an interrupted model write left (:data:`_LEFTOVER`): a
    ``gtc export --triton-repo`` killed part-way (SIGTERM from ``timeout`` or a scheduler, the OOM
    killer) left ``.NAME.tmp-...``, and Triton then failed to start with "model '.NAME.tmp-...'
    version 1: unable to find backend library for backend 'onnxruntime'", or "unexpected directory
    name", naming no cause a user would recognise."""
    for d in sorted(repository.iterdir()):
        m = _LEFTOVER.fullmatch(d.name)
        if m is None or not d.is_dir():
            continue
        name = m.group(1)
        if m.group(2) and not (repository / name).exists():
            what = f"it holds model '{name}' as it was before that write: rename it back to {name}"
        else:
            what = f"remove it (the next gtc export of '{name}' does)"
        raise SessionError(
            f"{d}: left by an interrupted write of model '{name}' (gtc export --triton-repo stopped part-way, or one "
            f"writing now); Triton would take it for a model and fail to start: {what}"
        )


def _looks_like_model(d: Path) -> bool:
    """A model directory of a repository: its config, or a numeric version folder (Triton can
    complete an ONNX model's config itself)."""
    return d.is_dir() and (
        (d / "config.pbtxt").is_file() or any(v.is_dir() and v.name.isascii() and v.name.isdigit() for v in d.iterdir())
    )


__all__ = ["TritonInstall", "TritonServer", "find_tritonserver", "free_port", "server_env", "which_tritonserver"]
