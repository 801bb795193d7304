"""Real-time scheduling of threads (Linux SCHED_FIFO), shared by the controller and the simulator.

A thread whose wake-up gates a control tick (the loop, its bus workers, a bus that answers them)
needs to run the moment it is runnable, whatever else the machine does. SCHED_FIFO needs root,
CAP_SYS_NICE or an rtprio limit; refused, it logs one warning and the threads stay normal.
"""

import logging
import os
import threading

log = logging.getLogger(__name__)


def make_fifo(priority: int, threads: list[threading.Thread]) -> bool:
    """SCHED_FIFO `priority` for `threads` (all or, on the first refusal, none further)."""
    for thread in threads:
        try:
            os.sched_setscheduler(thread.native_id, os.SCHED_FIFO, os.sched_param(priority))
        except OSError as error:
            log.warning(
                'SCHED_FIFO %d for %s refused (%s): normal priority', priority, thread.name, error
            )
            return False
    log.info('SCHED_FIFO %d for %s', priority, [t.name for t in threads])
    return True
