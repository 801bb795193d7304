"""The controller's ROS graph for benchmarks and drills: the simulator, the controller, the policy
and the recorder as separate processes, watched by an observer node that sees what any other
subscriber would (`halo/control_state` of every tick, `halo/command`, chunks, diagnostics).

`halo-ros bench-controller` measures periods with it, `halo-ros soak-controller` injects faults.
"""

import logging
import os
import signal
import time

import yaml

from halo_ros.control.control_state import ControlState
from halo_ros.paths import config_file
from halo_ros.supervisor import NodeProcess

log = logging.getLogger(__name__)

INSTRUCTION = 'transfer the cube to the other arm'


class ControllerGraph:
    """Start with `start()`, drive with `spin`/`call`/`set_parameter`, end with `close()`."""

    def __init__(
        self,
        run_dir: str,
        *,
        camera_size: tuple[int, int] = (160, 120),
        checkpoint: str = '',
        policy: bool = True,
        recorder: bool = False,
        controller_config: dict | None = None,
        sim_params: dict | None = None,
        controller_module: str = 'halo_ros.nodes.controller_node',
    ):
        self.run_dir = run_dir
        os.makedirs(run_dir, exist_ok=True)
        width, height = camera_size
        controller_yaml = os.path.join(run_dir, 'controller.yaml')
        with open(config_file('controller.yaml'), encoding='utf-8') as f:
            config = yaml.safe_load(f)
        config.update(controller_config or {})
        with open(controller_yaml, 'w', encoding='utf-8') as f:
            yaml.safe_dump(config, f)
        sim = {'operator': 'leaders', 'camera_width': width, 'camera_height': height}
        self.processes = {
            'sim': self._node('sim_node', 'halo_ros.nodes.sim_node', {**sim, **(sim_params or {})}),
            'controller': self._node(
                'controller_node', controller_module, {'config': controller_yaml}, 'controller'
            ),
        }
        if recorder:
            self.processes['recorder'] = self._node(
                'recorder_node',
                'halo_ros.nodes.recorder_node',
                {'output_dir': os.path.join(run_dir, 'episodes'), 'auto_start': True},
            )
        if policy:
            params = {
                'image_width': width,
                'image_height': height,
                'chunk_rate_hz': 5.0,
                'threads': 1,
                'instruction': INSTRUCTION,
            }
            if checkpoint:
                params['checkpoint'] = checkpoint
            module = 'halo_ros.nodes.policy_node'
            self.processes['policy'] = self._node('policy_node', module, params)
        self.down: set[str] = set()  # processes stopped on purpose (a drill)
        self.ticks: dict[int, ControlState] = {}
        self.diagnostics: dict[str, str] = {}  # the controller's latest values
        self.missed: list[int] = []  # missed_ticks of every diagnostics report
        self.chunks = 0
        self.commands = 0
        self.node = None

    def _node(self, log_name: str, module: str, params: dict, name: str | None = None):
        log_path = os.path.join(self.run_dir, f'{log_name}.log')
        return NodeProcess(module, params, name=name, log_path=log_path)

    # -- life -----------------------------------------------------------------------------------

    def start(self) -> 'ControllerGraph':
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String
        from trajectory_msgs.msg import JointTrajectory

        for process in self.processes.values():
            process.start()
        rclpy.init()
        self.node = node = rclpy.create_node('controller_graph_observer')
        every_tick = QoSProfile(depth=500)
        node.create_subscription(String, 'halo/control_state', self._on_state, every_tick)
        node.create_subscription(JointState, 'halo/command', self._on_command, every_tick)
        node.create_subscription(DiagnosticArray, 'diagnostics', self._on_diagnostics, 10)
        node.create_subscription(JointTrajectory, 'halo/action_chunk', self._on_chunk, 10)
        return self

    def close(self) -> dict[str, int | None]:
        """Recorder first (its bag closes while the others still publish), then the rest; returns
        each process's exit code."""
        import rclpy

        if self.node is not None:
            self.node.destroy_node()
        rclpy.try_shutdown()
        order = ['recorder', 'policy', 'controller', 'sim']
        # The controller first drives the arms to their sleep pose (up to sleep_timeout_s).
        timeouts = {'controller': 25.0}
        return {
            name: self.processes[name].stop(timeouts.get(name, 10.0))
            for name in order
            if name in self.processes
        }

    # -- the observer ---------------------------------------------------------------------------

    def _on_state(self, msg) -> None:
        state = ControlState.from_json(msg.data)
        self.ticks[state.tick] = state

    def _on_command(self, msg) -> None:
        self.commands += 1

    def _on_chunk(self, msg) -> None:
        self.chunks += 1

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name == 'halo_ros: controller':
                self.diagnostics = {kv.key: kv.value for kv in status.values}
                self.missed.append(int(self.diagnostics['missed_ticks']))

    @property
    def last(self) -> ControlState | None:
        return self.ticks[max(self.ticks)] if self.ticks else None

    # -- driving it -----------------------------------------------------------------------------

    def spin(self, seconds: float, until=None) -> bool:
        """Spin the observer for `seconds` or until `until()`; raises if a process died."""
        import rclpy

        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if until is not None and until():
                return True
            dead = [n for n, p in self.processes.items() if not p.running and n not in self.down]
            if dead:
                raise RuntimeError(f'{dead} exited; see the logs in {self.run_dir}')
            rclpy.spin_once(self.node, timeout_sec=0.02)
        return until is None

    def call(self, service: str, timeout_s: float = 15.0):
        """A std_srvs/Trigger service; the response (None on timeout)."""
        from std_srvs.srv import Trigger

        client = self.node.create_client(Trigger, service)
        if not client.wait_for_service(timeout_sec=30):
            raise RuntimeError(f'{service} not offered within 30 s')
        future = client.call_async(Trigger.Request())
        self.spin(timeout_s, future.done)
        self.node.destroy_client(client)
        return future.result()

    def set_parameter(self, node: str, name: str, value) -> bool:
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        client = self.node.create_client(SetParameters, f'/{node}/set_parameters')
        if not client.wait_for_service(timeout_sec=30):
            raise RuntimeError(f'/{node}/set_parameters not offered within 30 s')
        parameter = Parameter(name, value=value).to_parameter_msg()
        request = SetParameters.Request(parameters=[parameter])
        future = client.call_async(request)
        self.spin(15, future.done)
        self.node.destroy_client(client)
        result = future.result()
        return bool(result and result.results[0].successful)

    def kill(self, name: str) -> None:
        """SIGKILL, no goodbye (a crash)."""
        self.down.add(name)
        os.killpg(self.processes[name].process.pid, signal.SIGKILL)
        self.processes[name].process.wait(10)

    def restart(self, name: str) -> None:
        self.processes[name].start()
        self.down.discard(name)

    def wait_ready(self, *, chunks: bool) -> None:
        if not self.spin(120, lambda: len(self.ticks) > 50):
            raise RuntimeError(f'no controller ticks within 120 s; see {self.run_dir}')
        if chunks and not self.spin(180, lambda: self.chunks >= 3):
            log.warning('the policy produced no chunks within 180 s; going on')
