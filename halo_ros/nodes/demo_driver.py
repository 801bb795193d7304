"""The demo's operator console: calls the nodes' services in order and watches what happens.

Used by `halo-ros demo` (halo_ros/demo.py); a TopicMonitor plus service calls, so the whole
scenario runs over the same ROS interfaces a user would use.
"""

import json
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from halo_ros.joints import GRIPPER_INDICES
from halo_ros.nodes.topic_monitor import TopicMonitor

SIM_STATUS = 'sim/status'
CONTROL_STATE = 'halo/control_state'


class DemoError(RuntimeError):
    pass


class DemoDriver(TopicMonitor):
    def __init__(self, cameras, followers):
        rclpy.init()
        self.cameras, self.followers = cameras, followers
        topics = {t: Image for t in cameras} | {t: JointState for t in followers}
        topics |= {
            SIM_STATUS: String,
            CONTROL_STATE: String,
            'halo/command': JointState,
            'halo/action_chunk': JointTrajectory,
            'halo/reasoning': String,
            'halo/subgoal/image_raw': Image,
            'diagnostics': DiagnosticArray,
        }
        super().__init__(topics, 'demo_driver')
        self._ticks: list[dict] = []  # control_state of every tick seen
        self._commands: list[np.ndarray] = []  # halo/command positions, one per tick
        self.create_subscription(String, CONTROL_STATE, self._on_tick, 200)
        self.create_subscription(JointState, 'halo/command', self._on_command, 200)
        self._deadline = time.monotonic() + 60

    def close(self) -> None:
        self.destroy_node()
        rclpy.try_shutdown()

    def _on_tick(self, msg) -> None:
        self._ticks.append(json.loads(msg.data))

    def _on_command(self, msg) -> None:
        self._commands.append(np.asarray(msg.position))

    # -- plumbing --------------------------------------------------------------------------------

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(self, timeout_sec=0.05)

    def wait(self, condition, what: str, processes=None) -> None:
        while not condition():
            if time.monotonic() > self._deadline:
                raise DemoError(f'timed out waiting for {what}')
            for name, process in (processes or {}).items():
                if not process.running:
                    raise DemoError(
                        f'the {name} process exited (see its log) while waiting for {what}'
                    )
            rclpy.spin_once(self, timeout_sec=0.05)

    def wait_for_publisher(self, topic: str, deadline: float, processes) -> None:
        self._deadline = deadline
        name = topic if topic.startswith('/') else '/' + topic
        self.wait(lambda: self.count_publishers(name) > 0, f'a publisher on {name}', processes)

    def call(self, service: str, request=None, srv_type=Trigger) -> str:
        client = self.create_client(srv_type, service)
        self.wait(lambda: client.service_is_ready(), f'the service {service}')
        future = client.call_async(request or srv_type.Request())
        self.wait(future.done, f'the reply of {service}')
        result = future.result()
        self.destroy_client(client)
        if not result.success:
            raise DemoError(f'{service} refused: {result.message}')
        return result.message

    def status(self) -> dict | None:
        last = self.stats[SIM_STATUS].last
        return json.loads(last.data) if last is not None else None

    # -- episodes --------------------------------------------------------------------------------

    def new_episode(self, processes=None) -> int:
        """Reset the simulated scene under a held controller; returns the new episode number.

        The reset teleports the followers to the start pose, so the controller must not keep
        commanding where they were: torque goes off (the loop follows the measured pose while
        limp), the scene resets, and torque on re-syncs the hold to the measured start pose, as
        after an operator repositions a real arm by hand.
        """
        self.call('/controller/hold')
        self.call('/controller/torque', SetBool.Request(data=False), SetBool)
        before = self.status()['episode']
        self.call('/sim/reset')
        self.wait(lambda: self.status()['episode'] > before, 'the new episode', processes)
        self.call('/controller/torque', SetBool.Request(data=True), SetBool)
        return self.status()['episode']

    def teleop_episode(self, processes=None) -> dict:
        """One recorded demonstration: the scripted operator moves the leaders, the controller
        follows in TELEOP; returns the simulator's status at its end."""
        episode = self.new_episode(processes)
        self.call('/recorder_node/start')
        self.call('/controller/engage_teleop')
        self.wait(
            lambda: self.status()['episode'] == episode and self.status()['operator_done'],
            'the end of the teleoperated episode',
            processes,
        )
        status = self.status()
        self.call('/recorder_node/mark_success', SetBool.Request(data=status['success']), SetBool)
        self.call('/recorder_node/stop')
        self.call('/controller/hold')
        return status

    # -- the scenario ----------------------------------------------------------------------------

    def wait_ready(self, processes, deadline: float) -> None:
        """Until cameras, follower joint states and the simulator's status arrive."""
        self._deadline = deadline
        self.wait(
            lambda: (
                all(self.stats[t].count for t in (*self.cameras, *self.followers))
                and self.status() is not None
            ),
            'cameras, joint states and the simulator',
            processes,
        )

    def extend_deadline(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds

    def run(self, args, processes, deadline: float) -> dict:
        lines = []
        self.wait_ready(processes, deadline)

        # 1. A teleoperated demonstration of one episode, recorded.
        teleop = self.teleop_episode(processes)
        lines.append(
            f'teleoperated episode {teleop["episode"]} (seed {teleop["seed"]}): '
            f'{"SUCCESS" if teleop["success"] else "failure"}, reward '
            f'{teleop["reward"]}/{teleop["max_reward"]}'
        )

        # 2. The policy takes over (a ramp from the held pose into its chunks), recorded.
        self.wait(
            lambda: self.stats['halo/action_chunk'].count > 0, 'the first policy chunk', processes
        )
        self.call('/recorder_node/start')
        start, first = len(self._ticks), len(self._commands)
        self.call('/controller/engage_policy')
        self.spin_for(args.policy_seconds)
        policy_ticks, policy_steps = self._ticks[start:], self._largest_step(first)

        # 3. The operator takes over again (an intervention), then the arms hold.
        start, first = len(self._ticks), len(self._commands)
        self.call('/controller/engage_teleop')
        self.wait(
            lambda: self._ticks and self._ticks[-1]['phase'] == 'tracking_leaders',
            'the leaders to reach the followers and be released',
            processes,
        )
        self.spin_for(1.0)
        self.call('/controller/hold')
        self.spin_for(0.5)
        handback_ticks, handback_steps = self._ticks[start:], self._largest_step(first)
        self.call('/recorder_node/stop')
        lines += self._policy_lines(args, policy_ticks, policy_steps)
        lines.append(
            f'  intervention: {len(handback_ticks)} ticks, intervention flag '
            f'{any(t["intervention"] for t in handback_ticks)}, largest per-tick step '
            f'{handback_steps:.3f} rad'
        )
        return {'ok': bool(policy_ticks), 'rates': self._rates(), 'lines': lines}

    # -- report ----------------------------------------------------------------------------------

    def _rates(self) -> list[dict]:
        return [
            {
                'topic': topic,
                'messages': s.count,
                'rate_hz': round(s.rate_hz(), 1),
                'shape': ' '.join('x'.join(map(str, shape)) for shape in s.shapes) or '-',
            }
            for topic, s in sorted(self.stats.items())
        ]

    def _policy_lines(self, args, policy_ticks, largest_step: float) -> list[str]:
        weights = args.checkpoint or 'RANDOM weights: its text, subgoals and actions are noise'
        lines = [
            f'\npolicy: halo-tiny on the CPU ({weights}), backend {args.backend}, seam '
            f'{args.seam}, instruction {args.instruction!r}'
        ]
        reasoning = self.stats['halo/reasoning'].last
        if reasoning is not None:
            r = json.loads(reasoning.data)
            text = r['text'] if len(r['text']) <= 120 else r['text'][:117] + '...'
            lines.append(
                f'  reasoning v{r["context_version"]} ({r["latency_ms"]:.0f} ms): {text!r}'
            )
        subgoals = self.stats['halo/subgoal/image_raw']
        lines.append(
            f'  subgoal images: {subgoals.count} '
            f'({", ".join("x".join(map(str, s)) for s in subgoals.shapes) or "-"})'
        )
        chunks = self.stats['halo/action_chunk']
        lines.append(f'  action chunks: {chunks.count} at {chunks.rate_hz():.1f} Hz')
        diagnostics = self.stats['diagnostics'].last
        for status in diagnostics.status if diagnostics is not None else []:
            values = {kv.key: kv.value for kv in status.values}
            if 'latency_stamp_to_publish_p50_ms' in values:
                lines.append(
                    f'  chunk latency (observation -> published): p50 '
                    f'{values["latency_stamp_to_publish_p50_ms"]} ms, p99 '
                    f'{values.get("latency_stamp_to_publish_p99_ms", "-")} ms'
                )
        used = {t['chunk']['seq'] for t in policy_ticks if t.get('chunk')}
        phases = sorted({t['phase'] for t in policy_ticks})
        lines.append(
            f'  controller: {len(policy_ticks)} ticks in POLICY executing {len(used)} '
            f'chunks (phases {", ".join(phases)}); largest per-tick joint step '
            f'{largest_step:.3f} rad'
        )
        return lines

    def _largest_step(self, first: int) -> float:
        """Largest per-tick change of an arm joint command since command number `first`."""
        commands = np.asarray(self._commands[first:])
        if len(commands) < 2:
            return 0.0
        joints = [i for i in range(14) if i not in GRIPPER_INDICES]
        return float(np.abs(np.diff(commands[:, joints], axis=0)).max())
