"""Run a bring-up profile as supervised child processes (what `halo-ros up` does, minus ROS).

Restart policy per node (profiles.NodeSpec): an ON_FAILURE node that exits with an error or a
signal is started again after its delay, up to max_restarts; an essential node that is gone for
good ends the bring-up. Shutdown goes in stop_rank order (recorder first, simulator last), each
node SIGINT -> SIGTERM -> SIGKILL (supervisor.NodeProcess).
"""

import enum
import importlib.util
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import yaml

from halo_ros.bringup.profiles import NodeSpec, Profile, Restart
from halo_ros.paths import share_dir
from halo_ros.supervisor import NodeProcess

log = logging.getLogger(__name__)


def installed(spec: NodeSpec) -> bool:
    return importlib.util.find_spec(spec.module) is not None


def make_process(spec: NodeSpec, params: dict, log_path: str) -> NodeProcess:
    share = share_dir()
    return NodeProcess(
        spec.module,
        params,
        name=spec.name,
        log_path=log_path,
        params_files=tuple(str(share / f) for f in spec.params_files),
        remaps=spec.remaps,
    )


def typed_like(overrides: dict, spec: NodeSpec) -> dict:
    """An integer override of a parameter whose profile value is a decimal becomes a decimal:
    `--set policy.remote_timeout_s=10` means 10.0, and rclpy refuses an integer for a double
    parameter (the node would crash on start, every restart)."""
    defaults = dict(spec.params)
    share = share_dir()
    for relative in spec.params_files:
        with open(share / relative, encoding='utf-8') as f:
            document = yaml.safe_load(f) or {}
        section = document.get(spec.node_name) or document.get('/**') or {}
        defaults |= section.get('ros__parameters', {})
    typed = dict(overrides)
    for name, value in overrides.items():
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if is_int and isinstance(defaults.get(name), float):
            typed[name] = float(value)
    return typed


class NodeEvent(enum.Enum):
    STARTED = 'started'
    RESTARTED = 'restarted'
    EXITED = 'exited'
    RESTARTING = 'restarting'
    GAVE_UP = 'gave up'


@dataclass
class Supervised:
    spec: NodeSpec
    process: NodeProcess
    restarts: int = 0
    restart_at_s: float | None = None  # monotonic; set while waiting to restart
    exit_codes: list[int] = field(default_factory=list)
    down: bool = False  # exited and not to be restarted

    @property
    def running(self) -> bool:
        return self.process.running


class Supervisor:
    def __init__(
        self,
        profile: Profile,
        run_dir: str,
        *,
        without: frozenset[str] = frozenset(),
        overrides: dict[str, dict] | None = None,
        process_factory: Callable[[NodeSpec, dict, str], NodeProcess] = make_process,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        unknown = set(without) - {n.key for n in profile.nodes}
        if unknown:
            keys = [n.key for n in profile.nodes]
            raise KeyError(f'--without {sorted(unknown)}: profile {profile.name} has {keys}')
        self.profile = profile
        self.run_dir = run_dir
        self._factory = process_factory
        self._clock = clock
        self._overrides = overrides or {}
        self.absent = frozenset(without) | {n.key for n in profile.nodes if not installed(n)}
        self.nodes: dict[str, Supervised] = {}
        self.pending: list[NodeSpec] = []  # waiting for the nodes they start after
        self.failure: str | None = None  # why the bring-up must end, once it must

    def start(self) -> None:
        """Start the nodes that wait for nobody; poll() starts the others as theirs get ready."""
        os.makedirs(self.run_dir, exist_ok=True)
        for spec in self.profile.nodes:
            if spec.key in self.absent:
                why = '--without' if installed(spec) else f'{spec.module} is not installed'
                log.warning('%s is not started: %s', spec.key, why)
            else:
                self.pending.append(spec)
        self._start_pending(frozenset())

    def _start_pending(self, ready: frozenset[str]) -> list[tuple[str, NodeEvent]]:
        events = []
        for spec in list(self.pending):
            if not set(spec.start_after) <= ready | self.absent:
                continue
            self.pending.remove(spec)
            overrides = typed_like(self._overrides.get(spec.key, {}), spec)
            params = spec.parameters(self.absent) | overrides
            process = self._factory(spec, params, os.path.join(self.run_dir, f'{spec.key}.log'))
            self.nodes[spec.key] = Supervised(spec, process.start())
            log.info('started %s (pid %d)', spec.key, process.process.pid)
            events.append((spec.key, NodeEvent.STARTED))
        if events:
            self._write_pids()
        return events

    def poll(self, ready: frozenset[str] = frozenset()) -> list[tuple[str, NodeEvent]]:
        """Start nodes whose dependencies are in `ready` (keys), notice exits, restart what may
        be restarted; returns what happened."""
        events = self._start_pending(ready) if self.pending else []
        now = self._clock()
        for key, node in self.nodes.items():
            if node.restart_at_s is not None:
                if now >= node.restart_at_s:
                    node.restart_at_s = None
                    node.restarts += 1
                    node.process.start()
                    self._write_pids()
                    log.info(
                        'restarted %s (pid %d, restart %d of %d)',
                        key,
                        node.process.process.pid,
                        node.restarts,
                        node.spec.max_restarts,
                    )
                    events.append((key, NodeEvent.RESTARTED))
                continue
            if node.down or node.process.process is None or node.process.running:
                continue
            code = node.process.process.returncode
            node.exit_codes.append(code)
            events.append((key, NodeEvent.EXITED))
            failed = code != 0
            spec = node.spec
            if failed and spec.restart is Restart.ON_FAILURE and node.restarts < spec.max_restarts:
                log.warning(
                    '%s exited with %d; restarting in %g s (see %s)',
                    key,
                    code,
                    node.spec.restart_delay_s,
                    node.process.log_path,
                )
                node.restart_at_s = now + node.spec.restart_delay_s
                events.append((key, NodeEvent.RESTARTING))
                continue
            log.warning(
                '%s exited with %d and stays down (see %s)', key, code, node.process.log_path
            )
            node.down = True
            events.append((key, NodeEvent.GAVE_UP))
            if node.spec.essential and self.failure is None:
                self.failure = f'{key} exited with {code}'
        return events

    def stop(self) -> dict[str, int | None]:
        """Stop every node, lowest stop_rank first; returns their exit codes."""
        codes = {}
        for key, node in sorted(self.nodes.items(), key=lambda kv: kv[1].spec.stop_rank):
            node.restart_at_s = None
            codes[key] = node.process.stop()
            log.info('stopped %s: exit %s', key, codes[key])
        return codes

    def _write_pids(self) -> None:
        pids = {k: n.process.process.pid for k, n in self.nodes.items() if n.process.process}
        with open(os.path.join(self.run_dir, 'processes.json'), 'w', encoding='utf-8') as f:
            json.dump(pids, f)
