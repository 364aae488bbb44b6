"""The Triton Python-backend stub's shared memory, and whether an answer can still fit in it.

Every answer of :class:`runtime.triton_python.TritonPythonModel` is copied into the stub's
shared-memory region, which grows (by whole ``shm-growth-byte-size`` units, out of ``/dev/shm``) when it
lacks room. Sent through its response sender, an answer that cannot be copied left its client waiting
until its own timeout (Triton 2.51 closes the sender before the copy; a 14 MiB ``/dev/shm``, 4
node-level answers of 30,000 nodes x 64 floats: 100 s), and returned from ``execute``, it failed every
request of that ``execute`` with HTTP 500 "Failed to increase the shared memory pool size". So before an
answer is sent or returned, :class:`ShmRoom` checks it against the region's size, the ``execute``'s
inputs (and, returned, the answers before it) and what ``/dev/shm`` has free: one that certainly cannot
fit gets an ``INTERNAL`` error (HTTP 500) naming its size, the room and the remedies, at once, and the
others are answered; answers of one merged call that fit only one at a time are sent, not returned.

The check never refuses an answer that might fit, so one it cannot rule out (a fragmented region,
another process taking ``/dev/shm`` between the check and the copy: another instance of this model
growing its own region counts, each stub has one) may still fail in the stub; sent, its client then
waits until its own timeout (reproduced: 30 MiB of a 65 MiB ``/dev/shm`` taken in that window, a
client timeout of 30 s reached) and the model's log names the request and the remedy. Nothing inside
the model can complete that request in Triton 2.51: its sender is closed before the copy, so a second
answer is refused; raising from ``execute`` makes the server free the response factories of the
requests already answered a second time (SIGABRT); and sending the final flag apart from the answer
crashed it (SIGSEGV in ``TRITONBACKEND_ResponseFactorySendFlags``) when a gRPC client with a deadline
cancelled its request mid-``execute``. Returned answers (``gtcompress_answer_each_call`` ``0``) fail their
``execute`` with HTTP 500 instead, never leaving a client waiting.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def describe(out: np.ndarray) -> str:
    """What an error says of an answer: its type, shape and size."""
    return f"{out.dtype} {list(out.shape)}, {out.nbytes / 2**20:.1f} MiB"


#: Where shm_open puts a region on Linux: Triton's Python backend names its stub's region on the stub's
#: command line, ``triton_python_backend_stub <model.py> <region> <default bytes> <growth bytes> ...``.
SHM_DIR = Path("/dev/shm")


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB"


@dataclass
class ShmRoom:
    """What the stub's shared-memory region can still take, as Triton's Python backend (2.51) grows it.

    Every answer is copied into the region before the server sees it. An allocation that does not fit
    the region's free space grows the region (``posix_fallocate`` on ``/dev/shm``) by
    ``growth * (bytes // growth + 1)``, ``growth`` being ``shm-growth-byte-size``; when ``/dev/shm``
    cannot give that, the copy fails, and on the response-sender path its client then waits until its
    own timeout. ``used`` is a lower bound of what the region holds (the ``execute``'s inputs, answers
    taken and not yet freed) and ``region`` its size now, so :meth:`take` refuses only an answer that
    cannot fit, never one that might."""

    region: int  #: the region's size now (its file in /dev/shm)
    used: int  #: at least this much of it is in use
    free: int  #: what /dev/shm has free for the region to grow into
    growth: int  #: shm-growth-byte-size: the unit the region grows by

    def grow_by(self, nbytes: int) -> int:
        """What the region must grow by to hold ``nbytes`` more (0: it holds them as it is)."""
        if nbytes <= self.region - self.used:
            return 0
        return self.growth * (nbytes // self.growth + 1)

    def take(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more can be put in the region (then counted as used)."""
        grow = self.grow_by(nbytes)
        if grow > self.free:
            return False
        self.region += grow
        self.free -= grow
        self.used += nbytes
        return True

    def refusal(self, model: str, k: int, out: np.ndarray, nbytes: int, *, returned: bool) -> str:
        """The error a request gets instead of an answer :meth:`take` refused: its size, the room, the remedies."""
        other = (
            "set gtcompress_answer_each_call 1 (the default: each answer is sent, and freed, on its own)"
            if returned
            else "send fewer graphs per execute (max_batch_size, gtcompress_batch_nodes)"
        )
        return (
            f"model '{model}': the answer to request {k} ({describe(out)}) does not fit in the Python backend's "
            f"shared memory: its region has {_mib(max(0, self.region - self.used))} spare and would have to grow "
            f"by {_mib(self.grow_by(nbytes))}, but /dev/shm has {_mib(self.free)} free. Give the server more "
            f"/dev/shm (docker run --shm-size), send smaller requests, or {other}"
        )


@dataclass(frozen=True)
class StubShm:
    """The stub's shared-memory region: its file and ``shm-growth-byte-size``."""

    path: Path
    growth: int

    @classmethod
    def from_cmdline(cls, argv: Sequence[str]) -> StubShm | None:
        """The region named on a ``triton_python_backend_stub`` command line (``/proc/self/cmdline``), or
        ``None`` when this process is not one or the region cannot be found (then no answer is refused)."""
        if len(argv) < 5 or Path(argv[0]).name != "triton_python_backend_stub":
            return None
        try:
            growth = int(argv[4])
        except ValueError:
            return None
        path = SHM_DIR / argv[2].lstrip("/")
        if growth <= 0 or not path.is_file():
            return None
        return cls(path, growth)

    @classmethod
    def of_this_process(cls) -> StubShm | None:
        try:
            raw = Path("/proc/self/cmdline").read_bytes()
        except OSError:
            return None
        return cls.from_cmdline([a.decode(errors="replace") for a in raw.split(b"\0") if a])

    def room(self, used: int) -> ShmRoom | None:
        """The room now with ``used`` bytes of the region known to be in use (``None``: unreadable)."""
        try:
            region = os.stat(self.path).st_size
            vfs = os.statvfs(self.path.parent)
        except OSError:
            return None
        return ShmRoom(region, used, vfs.f_bavail * vfs.f_frsize, self.growth)


def shm_bytes(out: np.ndarray, name: str) -> int:
    """At least what the stub allocates in its region for an answer (the data, its dims, its name and
    a few headers; Triton 2.51's ``PbTensor::SaveToSharedMemory`` takes one block for them all)."""
    return out.nbytes + 8 * out.ndim + len(name) + 64
