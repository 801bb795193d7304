"""Keeping the 50 Hz loop on time on a busy machine: real-time priority, locked memory, the
garbage collector and the GIL kept off the hot path.

Each measure is a setting of ControllerConfig, so it can be measured on and off
(`halo-ros bench-controller`, BENCHMARKS.md). Thread-level: SCHED_FIFO for the loop thread and
the bus workers whose replies gate every tick (`halo_ros.sched.make_fifo`). Process-level, for
the controller node's process only (`prepare_process`): mlockall, automatic collection off with
the start-up objects frozen, a short GIL switch interval. The loop then collects in its slack
after each tick's write (`SlackCollector`). A measure that is refused logs one warning and the
controller runs without it.
"""

import ctypes
import gc
import logging
import os
import sys

log = logging.getLogger(__name__)

_MCL_CURRENT, _MCL_FUTURE = 1, 2  # <sys/mman.h>


def prepare_process(*, lock_memory: bool, gc_in_slack: bool, switch_interval_ms: float) -> dict:
    """The process-wide measures; returns which ones hold (for the node's log and diagnostics)."""
    applied = {'lock_memory': False, 'gc_in_slack': False, 'switch_interval_ms': 0.0}
    if lock_memory:
        applied['lock_memory'] = _lock_memory()
    if gc_in_slack:
        gc.collect()
        gc.freeze()  # what start-up made is never scanned again
        gc.disable()  # the loop collects in its slack instead
        applied['gc_in_slack'] = True
    if switch_interval_ms > 0:
        sys.setswitchinterval(switch_interval_ms / 1e3)
        applied['switch_interval_ms'] = switch_interval_ms
    return applied


def _lock_memory() -> bool:
    if os.geteuid() != 0:
        # MCL_FUTURE under a finite RLIMIT_MEMLOCK makes later allocations fail: only as root.
        log.warning('mlockall skipped: not root (a memlock limit would fail later allocations)')
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mlockall(_MCL_CURRENT | _MCL_FUTURE) != 0:
        error = ctypes.get_errno()
        log.warning('mlockall refused (%s): pages may be faulted in mid-tick', os.strerror(error))
        return False
    log.info('memory locked (mlockall current + future)')
    return True


class SlackCollector:
    """Garbage collection from the loop thread, between a tick's write and the next deadline.

    Only while automatic collection is off (prepare_process): the youngest generation when at
    least MIN_SLACK_NS remain, a full collection every FULL_EVERY ticks when FULL_SLACK_NS remain
    (start-up objects are frozen, so a full pass only scans what was made since)."""

    MIN_SLACK_NS = 4_000_000  # a young-generation pass takes well under 1 ms
    FULL_SLACK_NS = 12_000_000
    FULL_EVERY = 1500  # 30 s at 50 Hz

    def __init__(self) -> None:
        self._since_full = 0

    def collect(self, slack_ns: int) -> None:
        if gc.isenabled():
            return
        self._since_full += 1
        if self._since_full >= self.FULL_EVERY and slack_ns >= self.FULL_SLACK_NS:
            gc.collect(2)
            self._since_full = 0
        elif slack_ns >= self.MIN_SLACK_NS:
            gc.collect(0)
