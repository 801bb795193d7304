"""Start halo_ros nodes as supervised child processes with the halo_ros ROS environment.

Used by the demo and the tests now; `halo-ros up` builds on it. Nodes run as
`python -m halo_ros.nodes.<name>` from this interpreter, so a venv needs nothing on PATH.
"""

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import yaml

from halo_ros import rosenv

log = logging.getLogger(__name__)


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the supervisor dies, even by SIGKILL, so no node outlives
    it (a stray simulator would keep its serial ports and a stray policy its CPU)."""
    try:
        libc = ctypes.CDLL('libc.so.6', use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: children are still stopped by stop()
        pass


PR_SET_PDEATHSIG = 1


def _param_arg(name: str, value) -> str:
    if isinstance(value, bool):
        value = 'true' if value else 'false'
    elif isinstance(value, str) and value and yaml.safe_load(value) != value:
        # rcl reads -p values as YAML: quote strings that would come back as something else
        # ('012345' -> 5349, 'true' -> bool), so a string parameter receives a string.
        value = f"'{value}'"
    return f'{name}:={value}'


@dataclass
class ManagedProcess:
    """A child process with the halo_ros environment, stopped the way nodes expect."""

    argv: list[str] = field(default_factory=list)
    env: dict | None = None
    log_path: str | None = None  # stdout+stderr file; None inherits ours
    process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return list(self.argv)

    def start(self) -> 'ManagedProcess':
        env = rosenv.ros_environment(base=self.env)
        env.setdefault('PYTHONUNBUFFERED', '1')
        out = open(self.log_path, 'ab') if self.log_path else None  # noqa: SIM115 (owned by Popen)
        log.debug('starting %s', ' '.join(self.command()))
        self.process = subprocess.Popen(
            self.command(),
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGINT (clean shutdown: arms to hold, bags closed), then SIGTERM, then SIGKILL."""
        if self.process is None:
            return None
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            if self.process.poll() is not None:
                break
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning('%s did not stop on %s', ' '.join(self.command()[:3]), sig.name)
        return self.process.returncode


class NodeProcess(ManagedProcess):
    """One node executable: `python -m <module>` (e.g. 'halo_ros.nodes.sim_node') with ROS
    parameters, parameters files and remaps, as `ros2 launch` would start it."""

    def __init__(
        self,
        module: str,
        params: dict | None = None,
        *,
        name: str | None = None,
        env: dict | None = None,
        log_path: str | None = None,
        params_files: tuple[str, ...] = (),
        remaps: tuple[tuple[str, str], ...] = (),
    ):
        super().__init__(env=env, log_path=log_path)
        self.module, self.params, self.name = module, dict(params or {}), name
        self.params_files, self.remaps = tuple(params_files), tuple(remaps)

    def command(self) -> list[str]:
        cmd = [sys.executable, '-m', self.module, '--ros-args']
        # Files before the -p overrides: later ones win, as in a launch file's parameters list.
        for path in self.params_files:
            cmd += ['--params-file', str(path)]
        for key, value in self.params.items():
            cmd += ['-p', _param_arg(key, value)]
        if self.name:
            cmd += ['-r', f'__node:={self.name}']
        for source, target in self.remaps:
            cmd += ['-r', f'{source}:={target}']
        return cmd


def halo_ros_command(*args: str, log_path: str | None = None) -> ManagedProcess:
    """`halo-ros ARGS...` as a supervised process (e.g. `serve`)."""
    return ManagedProcess([sys.executable, '-m', 'halo_ros.cli', *args], log_path=log_path)


class WaitError(RuntimeError):
    """A wait on the graph gave up: past its deadline, or a process it depends on exited."""


@dataclass(frozen=True)
class Watch:
    """What a wait on the graph gives up on: a deadline and the processes that must stay up.

    Passed to every wait, so each stage of a scenario says how long it may take."""

    deadline: float  # time.monotonic() seconds
    processes: dict[str, ManagedProcess] = field(default_factory=dict)

    @classmethod
    def for_seconds(cls, seconds: float, processes: dict | None = None) -> 'Watch':
        return cls(time.monotonic() + seconds, dict(processes or {}))

    def check(self, what: str) -> None:
        """WaitError naming `what` when the deadline passed or a process exited."""
        for name, process in self.processes.items():
            if not process.running:
                raise WaitError(f'the {name} process exited (see its log) while waiting for {what}')
        if time.monotonic() > self.deadline:
            raise WaitError(f'timed out waiting for {what}')
