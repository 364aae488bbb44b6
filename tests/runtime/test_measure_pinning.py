"""CPU pinning for ``gtc profile``'s thread counts: every thread of the process, not the calling one."""

from __future__ import annotations

import os
import threading

import pytest

from runtime.measure import pinned

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or not os.path.isdir("/proc/self/task") or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux per-thread affinity and at least 2 usable cores",
)


def test_threads_started_before_pinning_are_pinned_too_and_restored() -> None:
    """A worker already running (as numpy's BLAS pool is, from import) runs on the pinned cores only,
    and gets its own mask back afterwards."""
    started, stop = threading.Event(), threading.Event()
    tid: list[int] = []

    def worker() -> None:
        tid.append(threading.get_native_id())
        started.set()
        stop.wait(30)

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    started.wait(30)
    allowed = os.sched_getaffinity(0)
    try:
        with pinned(1) as (cpus, oversubscribed):
            assert cpus == [min(allowed)]
            assert not oversubscribed
            assert os.sched_getaffinity(tid[0]) == {min(allowed)}
            assert os.sched_getaffinity(0) == {min(allowed)}
        assert os.sched_getaffinity(tid[0]) == allowed
        assert os.sched_getaffinity(0) == allowed
    finally:
        stop.set()
        t.join(30)
