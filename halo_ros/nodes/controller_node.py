"""controller_node: the four ALOHA arms at 50 Hz -- modes, safety filter, watchdog, handover.

Owns the arms through the Dynamixel driver (the simulator's virtual buses or a real robot's ports:
the calibration file decides). The loop (`halo_ros.control.loop`) runs on its own thread; this
node only translates.

Subscribes: `halo/action_chunk` (JointTrajectory: 14 joint names, header.stamp = observation
time, points at k * dt, chunk tag in header.frame_id, see `halo_ros.runtime.chunk`).
Publishes every tick: `follower_left|follower_right|leader_left|leader_right/joint_states`
(JointState, 7 joints, stamped at read time), `halo/command` (JointState, 14 joints: the goal
sent after the safety filter), `halo/control_state` (String JSON: tick, mode, phase,
intervention, chunk epoch/seq/index, limits hit, period error). `halo/mode` (String) on change and
at 1 Hz; `diagnostics` at 1 Hz.
Services: `~/hold`, `~/engage_teleop`, `~/engage_policy`, `~/estop`, `~/reboot` (Trigger: clear
latched hardware errors, from HOLD/ESTOP) and `~/torque` (SetBool, followers, from HOLD/ESTOP).
Parameters: `config` (YAML, default config/controller.yaml), `calibration` (overrides the
config's), `realtime_priority` (SCHED_FIFO for the loop, -1 = the config's), `connect_timeout_s`
(wait for the ports, e.g. while the simulator starts).

Modes: the node starts in HOLD with all four arms torqued on. `~/engage_teleop` first drives the
leaders (torque on) to the followers' pose, then releases them and the followers track them;
`~/engage_policy` ramps from the held pose into the chunk stream (`policy_ramp_s`); calling
`~/engage_teleop` while in POLICY is an intervention (flag set until the next engage_policy).
`~/estop` freezes the command on the same tick (torque per `estop_torque`); leave it with `~/hold`
(after `~/torque true` if the e-stop turned torque off).

Exit (Ctrl-C, SIGTERM, the bring-up ending): the arms first go to their sleep pose at a safe
speed (`sleep_on_exit`; not from ESTOP), then torque goes off; `~/sleep` does the same on request.
Real-time measures (SCHED_FIFO, mlockall, the GC in the loop's slack, a short GIL switch interval)
come from the config; each one refused logs one warning.

Fault recovery (a latched Dynamixel hardware error, e.g. a gripper overload): the alert bit in the
reading is noticed on the same tick; the arms hold (or e-stop, `hardware_error_action`), the
servo with the error is limp (the servo itself cut its torque), diagnostics go ERROR naming arm,
servo ID and error, and engaging teleop or policy is refused. Clear the cause (free the gripper),
then call `~/reboot` from HOLD/ESTOP: it reboots only the servos with errors, restores their RAM
settings, turns their torque back on holding the measured pose, and the controller resumes from
the measured pose (no jump). Then engage again.
"""

import json
import time
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from halo_ros.control.arms import ArmSetArms
from halo_ros.control.chunks import ChunkError, ControllerChunk, Rejection, check_length, make_chunk
from halo_ros.control.config import load_config
from halo_ros.control.control_state import ControlState
from halo_ros.control.loop import ControlLoop, TickRecord
from halo_ros.control.modes import Mode, Request
from halo_ros.control.realtime import prepare_process
from halo_ros.drivers.aloha_arm_set import ArmSet
from halo_ros.drivers.aloha_calibration import load as load_calibration
from halo_ros.joints import BIMANUAL_JOINTS, arm_joint_names
from halo_ros.nodes.conversions import joint_state_msg, ns_from_stamp
from halo_ros.nodes.spin import run_node
from halo_ros.paths import calibration_file
from halo_ros.runtime.chunk import ChunkTag

_REQUEST_TIMEOUT_S = 5.0  # torque and reboot talk to every servo of an arm


def chunk_from_msg(msg: JointTrajectory, max_points: int | None = None) -> ControllerChunk:
    """Validate a JointTrajectory as a chunk; ChunkError with the reason otherwise."""
    points = msg.points
    check_length(len(points), max_points)  # before any conversion
    try:
        tag = ChunkTag.parse(msg.header.frame_id)
    except ValueError as error:
        raise ChunkError(Rejection.BAD_TAG, str(error)) from None
    if len(points) < 2:
        raise ChunkError(Rejection.BAD_TIMING, f'{len(points)} points (need >= 2 for dt)')
    times = np.array(
        [p.time_from_start.sec * 1_000_000_000 + p.time_from_start.nanosec for p in points]
    )
    dt_ns = int(times[1] - times[0])
    if times[0] != 0 or dt_ns <= 0 or np.abs(np.diff(times) - dt_ns).max() > 1000:
        raise ChunkError(Rejection.BAD_TIMING, 'points must be at k * dt from 0, dt > 0')
    lengths = {len(p.positions) for p in points}
    if len(lengths) != 1:
        raise ChunkError(Rejection.WRONG_SHAPE, f'points have {sorted(lengths)} positions')
    positions = np.array([p.positions for p in points], dtype=np.float64)
    return make_chunk(
        msg.joint_names,
        positions,
        stamp_ns=ns_from_stamp(msg.header.stamp),
        dt_ns=dt_ns,
        epoch=tag.epoch,
        seq=tag.seq,
        context_version=tag.context_version,
    )


def _resolve(calibration: str) -> Path:
    path = Path(calibration)
    return path if path.is_file() else calibration_file(calibration)


class ControllerNode(Node):
    def __init__(self):
        super().__init__('controller')
        p = self.declare_parameters(
            '',
            [
                ('config', ''),
                ('calibration', ''),  # '' = the config's
                ('realtime_priority', -1),  # -1 = the config's
                ('connect_timeout_s', 30.0),
            ],
        )
        v = {param.name: param.value for param in p}
        overrides = {'calibration': v['calibration']} if v['calibration'] else {}
        if v['realtime_priority'] >= 0:
            overrides['realtime_priority'] = v['realtime_priority']
        self.config = load_config(v['config'] or None, **overrides)
        calibration_path = _resolve(self.config.calibration)
        calibration = load_calibration(calibration_path)
        self.arm_set = self._connect(calibration_path, v['connect_timeout_s'])
        # Per-tick topics keep 2 s of history: a reliable reader (the recorder) that stalls for a
        # moment still gets every tick.
        depth = int(2 * self.config.rate_hz)
        self._joint_states = {
            arm: self.create_publisher(JointState, f'{arm.value}/joint_states', depth)
            for arm in calibration.arms
        }
        self._names = {arm: arm_joint_names(arm.value) for arm in calibration.arms}
        self._command = self.create_publisher(JointState, 'halo/command', depth)
        self._state = self.create_publisher(String, 'halo/control_state', depth)
        self._mode = self.create_publisher(String, 'halo/mode', 10)
        self._diagnostics = self.create_publisher(DiagnosticArray, 'diagnostics', 10)
        self._last_mode: Mode | None = None
        self._trouble_counts: dict[str, int] = {}
        self._trouble_keys = ''
        ros_now = lambda: self.get_clock().now().nanoseconds  # noqa: E731
        sim_time = self.get_parameter('use_sim_time').value
        self.loop = ControlLoop(
            ArmSetArms(self.arm_set),
            self.config,
            calibration,
            clock_ns=ros_now,
            on_tick=self._publish_tick,
            pace_clock_ns=ros_now if sim_time else None,  # 50 Hz of simulated time
        )
        self.create_subscription(JointTrajectory, 'halo/action_chunk', self._on_chunk, 10)
        # A request waits (up to seconds) for the loop to perform it; with sim time the loop
        # ticks only as /clock arrives, which the default group takes meanwhile (main: two
        # executor threads), or the wait would starve the clock it waits on.
        waits = MutuallyExclusiveCallbackGroup()
        for name, request in (
            ('hold', Request.HOLD),
            ('engage_teleop', Request.TELEOP),
            ('engage_policy', Request.POLICY),
            ('estop', Request.ESTOP),
            ('reboot', Request.REBOOT),
            ('sleep', Request.SLEEP),
        ):
            self.create_service(Trigger, f'~/{name}', self._trigger(request), callback_group=waits)
        self.create_service(SetBool, '~/torque', self._on_torque, callback_group=waits)
        self.create_timer(1.0, self._publish_slow)
        self._realtime = prepare_process(
            lock_memory=self.config.lock_memory,
            gc_in_slack=self.config.gc_in_slack,
            switch_interval_ms=self.config.switch_interval_ms,
        )
        self.loop.start()
        self.get_logger().info(
            f'controlling {[a.value for a in calibration.arms]} from {calibration_path} at '
            f'{self.config.rate_hz:g} Hz' + (' of simulated time' if sim_time else '') + ', mode '
            f'{self.loop.mode.value}'
        )

    def _connect(self, calibration_path: Path, timeout_s: float) -> ArmSet:
        """Configure and activate all arms (torque on, holding their pose), retrying until the
        ports answer: the simulator may still be starting, a real bus may still be powering up."""
        deadline = time.monotonic() + timeout_s
        while True:
            arm_set = ArmSet.from_file(calibration_path)
            try:
                arm_set.configure()
                arm_set.activate()
                return arm_set
            except Exception as error:  # no port yet, no reply, a garbled reply while starting
                arm_set.close()
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f'arms not reachable after {timeout_s:g} s: {error!r}'
                    ) from None
                self.get_logger().info(
                    f'waiting for the arms: {error!r}', throttle_duration_sec=5.0
                )
                time.sleep(0.5)

    # -- in ---------------------------------------------------------------------------------

    def _on_chunk(self, msg: JointTrajectory) -> None:
        try:
            chunk = chunk_from_msg(msg, self.config.max_chunk_points)
        except ChunkError as error:
            self.loop.count_rejection(error.reason)
            self.get_logger().warning(f'chunk refused: {error}', throttle_duration_sec=2.0)
            return
        self.loop.submit_chunk(chunk)

    def _trigger(self, request: Request):
        def on_request(_, response):
            response.success, response.message = self.loop.request(request).wait(_REQUEST_TIMEOUT_S)
            return response

        return on_request

    def _on_torque(self, request, response):
        kind = Request.TORQUE_ON if request.data else Request.TORQUE_OFF
        response.success, response.message = self.loop.request(kind).wait(_REQUEST_TIMEOUT_S)
        return response

    # -- out (the loop's thread) ---------------------------------------------------------------

    def _publish_tick(self, record: TickRecord) -> None:
        for arm, state in record.states.items():
            if state.fresh:
                self._joint_states[arm].publish(
                    joint_state_msg(
                        self._names[arm],
                        state.position(),
                        state.velocity(),
                        state.effort_ma,
                        stamp_ns=record.read_stamps_ns[arm],
                    )
                )
        if record.command is not None:
            self._command.publish(
                joint_state_msg(BIMANUAL_JOINTS, record.command, stamp_ns=record.stamp_ns)
            )
        self._state.publish(String(data=ControlState.of(record).to_json()))
        if record.mode is not self._last_mode:
            self._last_mode = record.mode
            self._mode.publish(String(data=record.mode.value))

    def _publish_slow(self) -> None:
        self._mode.publish(String(data=self.loop.mode.value))
        stats = self.loop.stats.snapshot()
        values = {k: v for k, v in stats.items() if not isinstance(v, dict)}
        for group in ('rejections', 'limits_hit', 'read_failures', 'write_failures', 'events'):
            for key, count in stats[group].items():
                values[f'{group}.{key}'] = count
        for key, count in stats['following_errors'].items():
            values[f'following_errors.{key}'] = count
        values['last_following_error'] = stats['last_following_error']
        values['hardware_errors'] = json.dumps(stats['hardware_errors'])
        for arm_name, arm in self.arm_set.arms.items():  # the driver's own counters
            values[f'port_losses.{arm_name.value}'] = arm.port_losses
            values[f'port_reopens.{arm_name.value}'] = arm.port_reopens
            values[f'bus_retries.{arm_name.value}'] = arm.bus.failed_attempts
        for measure, applied in self._realtime.items():
            values[f'realtime.{measure}'] = applied
        values['realtime.fifo_priority'] = self.loop.fifo_priority
        snapshot = self.loop.snapshot()
        values['mode'], values['phase'] = snapshot.mode.value, self.loop.phase.value
        if snapshot.faults or snapshot.mode is Mode.ESTOP or not self.loop.running:
            level, message = DiagnosticStatus.ERROR, snapshot.faults or snapshot.mode.value
            if not self.loop.running:
                message = 'control loop stopped'
        elif self._troubles(stats, values):
            level, message = DiagnosticStatus.WARN, 'faults this second: ' + self._trouble_keys
        else:
            level, message = DiagnosticStatus.OK, snapshot.mode.value
        status = DiagnosticStatus(
            level=level,
            name='halo_ros: controller',
            message=message,
            hardware_id=self.get_fully_qualified_name(),
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
        )
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(msg)

    def _troubles(self, stats: dict, values: dict) -> bool:
        """Did any fault counter grow since the last report (the counters are totals)?"""
        now = {'missed_ticks': stats['missed_ticks']}
        for group in ('read_failures', 'write_failures', 'following_errors'):
            now[group] = sum(stats[group].values())
        for event in ('stall', 'clock_step', 'watchdog', 'tick_error'):
            now[event] = stats['events'].get(event, 0)
        now['port_losses'] = sum(v for k, v in values.items() if k.startswith('port_losses.'))
        before, self._trouble_counts = self._trouble_counts, now
        self._trouble_keys = ', '.join(k for k, v in now.items() if v != before.get(k, 0))
        return bool(self._trouble_keys)

    def destroy_node(self):
        try:
            # With sim time the clock stops with the executor (it arrives on /clock), and the
            # simulated arms do not fall: they stop where they are.
            sleep = not self.get_parameter('use_sim_time').value
            self.get_logger().info(f'control loop {self.loop.shutdown(sleep=sleep)}')
        finally:
            try:
                self.arm_set.close()  # torque off, ports closed
            except Exception as error:  # e.g. the simulator (its buses) went away first
                self.get_logger().warning(f'closing the arms: {error!r}')
            super().destroy_node()


def main(args=None):
    run_node(ControllerNode, args, threads=2)


if __name__ == '__main__':
    main()
