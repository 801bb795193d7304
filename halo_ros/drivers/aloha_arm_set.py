"""The arms of one robot driven together: every bus is read and written in parallel.

Each bus blocks for its own reply (about 2-3 ms per arm on a real 1 Mbps bus with a 1 ms USB
latency timer), so four arms in sequence would spend most of a 20 ms tick waiting. Here every arm
has its own worker thread (the same thread for every call, so each bus is only ever touched by
one thread); the waits overlap because the port waits in select(), which releases the GIL.
"""

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from halo_ros.drivers.aloha_arm import AlohaArm, ArmCommand, ArmState
from halo_ros.drivers.aloha_calibration import ArmName, load

log = logging.getLogger(__name__)


class ArmSet:
    def __init__(self, arms: Mapping[ArmName, AlohaArm]) -> None:
        if not arms:
            raise ValueError('ArmSet needs at least one arm')
        self.arms = dict(arms)
        self._workers = {
            name: ThreadPoolExecutor(max_workers=1, thread_name_prefix=f'bus-{name.value}')
            for name in self.arms
        }

    @classmethod
    def from_file(cls, path: str | Path, *, environ=None) -> 'ArmSet':
        """All arms of a calibration file (`environ` expands ${VAR} in port paths)."""
        calibration = load(path, environ=environ)
        return cls({name: AlohaArm(arm) for name, arm in calibration.arms.items()})

    def _each(self, method: str, names=None, arguments: Mapping | None = None) -> dict:
        names = list(self.arms) if names is None else [ArmName(n) for n in names]
        futures = {
            name: self._workers[name].submit(
                getattr(self.arms[name], method),
                *(() if arguments is None else (arguments[name],)),
            )
            for name in names
        }
        return {name: future.result() for name, future in futures.items()}

    def configure(self) -> None:
        self._each('configure')

    def activate(self, names=None) -> None:
        """Activate the given arms (default all): torque on, holding the present pose."""
        self._each('activate', names)

    def deactivate(self, names=None) -> None:
        self._each('deactivate', names)

    def read(self) -> dict[ArmName, ArmState]:
        """One state per arm, all buses at once; check each state's `fresh`."""
        return self._each('read')

    def write(self, commands: Mapping[ArmName, ArmCommand]) -> dict[ArmName, Exception]:
        """Goal positions for the arms named in `commands`, all buses at once. Returns the arms
        whose write failed, with why; one arm's failure never keeps the others from theirs."""
        commands = {ArmName(name): command for name, command in commands.items()}
        futures = {
            name: self._workers[name].submit(self.arms[name].write, command)
            for name, command in commands.items()
        }
        failed = {}
        for name, future in futures.items():
            try:
                future.result()
            except Exception as error:  # a lost port, a refused command: that arm only
                failed[name] = error
        return failed

    def close(self) -> None:
        """Torque off and close every port, then stop the worker threads."""
        try:
            self._each('cleanup')
        finally:
            for worker in self._workers.values():
                worker.shutdown(wait=True)

    def __enter__(self) -> 'ArmSet':
        return self

    def __exit__(self, *exc) -> None:
        self.close()
