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
from halo_ros.nodes.conversions import ns_from_stamp
from halo_ros.nodes.topic_monitor import TopicMonitor
from halo_ros.runtime.chunk import ChunkTag

SIM_STATUS = 'sim/status'
CONTROL_STATE = 'halo/control_state'
TICK_S = 0.02  # the simulator's control period


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
        self._commands: list[tuple[int, np.ndarray]] = []  # (stamp, halo/command) per tick
        self._reasonings: list[dict] = []  # every halo/reasoning message, parsed
        self._intervention_ticks: list[dict] = []  # control states of the last intervention
        self.create_subscription(String, CONTROL_STATE, self._on_tick, 200)
        self.create_subscription(JointState, 'halo/command', self._on_command, 200)
        self.create_subscription(String, 'halo/reasoning', self._on_reasoning, 50)
        self._policy_status = None  # the policy's last diagnostics (every node publishes some)
        self.create_subscription(DiagnosticArray, 'diagnostics', self._on_diagnostics, 50)
        self._deadline = time.monotonic() + 60

    def close(self) -> None:
        self.destroy_node()
        rclpy.try_shutdown()

    def _on_tick(self, msg) -> None:
        self._ticks.append(json.loads(msg.data))

    def _on_command(self, msg) -> None:
        self._commands.append((ns_from_stamp(msg.header.stamp), np.asarray(msg.position)))

    def _on_diagnostics(self, msg) -> None:
        if any(s.name == 'halo_ros: policy' for s in msg.status):
            self._policy_status = msg

    def _on_reasoning(self, msg) -> None:
        self._reasonings.append(json.loads(msg.data))

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

    def call(self, service: str, request=None, srv_type=Trigger, *, attempts: int = 1) -> str:
        """Call and wait for the reply; a refusal is retried `attempts` - 1 times, 0.5 s apart
        (for requests that are safe to repeat), then raised."""
        client = self.create_client(srv_type, service)
        self.wait(lambda: client.service_is_ready(), f'the service {service}')
        try:
            for attempt in range(1, attempts + 1):
                future = client.call_async(request or srv_type.Request())
                self.wait(future.done, f'the reply of {service}')
                result = future.result()
                if result.success:
                    return result.message
                if attempt < attempts:
                    self.get_logger().warning(f'{service} refused ({result.message}); again')
                    self.spin_for(0.5)
            raise DemoError(f'{service} refused: {result.message}')
        finally:
            self.destroy_client(client)

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
        self.call('/controller/torque', SetBool.Request(data=False), SetBool, attempts=3)
        before = self.status()['episode']
        self.call('/sim/reset')
        self.wait(lambda: self.status()['episode'] > before, 'the new episode', processes)
        self.call('/controller/torque', SetBool.Request(data=True), SetBool, attempts=3)
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

    def policy_episode(self, processes, seconds: float, *, intervene: bool = False) -> dict:
        """One recorded closed-loop episode: a fresh scene, the policy told a new episode began
        and its first reasoning about it awaited, then POLICY for `seconds` or until success
        (+0.5 s). `intervene`: end with the operator taking over (TELEOP) instead of HOLD."""
        episode = self.new_episode(processes)
        status = self.status()
        epoch = int(self.call('/policy/new_episode').split()[-1])
        self.wait(
            lambda: self._accepted(epoch), 'the first reasoning about the new episode', processes
        )
        version = self._accepted(epoch)[0]['context_version']
        self.wait(
            lambda: (
                (tag := self._chunk_tag()) is not None
                and tag.epoch == epoch
                and tag.context_version >= version
            ),
            'a chunk conditioned on that reasoning',
            processes,
        )
        self.call('/recorder_node/start')
        first_tick, first_command = len(self._ticks), len(self._commands)
        self.call('/controller/engage_policy')
        # Episode time is simulated time (the simulator's tick count): at a real-time factor
        # below 1 an episode takes longer on the wall clock, not fewer control steps.
        success_s, best, start_tick, elapsed = None, 0, None, 0.0
        end = seconds
        while elapsed < end:
            rclpy.spin_once(self, timeout_sec=0.05)
            now = self.status()
            if now['episode'] != episode:
                continue
            start_tick = now['tick'] if start_tick is None else start_tick
            elapsed = (now['tick'] - start_tick) * TICK_S
            best = max(best, now['reward'])  # gym-aloha's staged reward, 4 = transferred
            if success_s is None and now['success']:
                success_s = elapsed
                end = min(end, elapsed + 0.5)
        ticks, commands = self._ticks[first_tick:], self._commands[first_command:]
        if intervene:
            self.intervention()
        else:
            self.call('/controller/hold')
        self.call(
            '/recorder_node/mark_success', SetBool.Request(data=success_s is not None), SetBool
        )
        self.call('/recorder_node/stop')
        subtasks = []
        for r in self._accepted(epoch):
            if not subtasks or subtasks[-1] != r['subtask']:
                subtasks.append(r['subtask'])
        return {
            'episode': episode,
            'seed': status['seed'],
            'success': success_s is not None,
            'max_reward': best,
            'seconds_to_success': None if success_s is None else round(success_s, 2),
            'policy_ticks': len(ticks),
            'chunks_executed': len(
                {(t['chunk']['epoch'], t['chunk']['seq']) for t in ticks if t['chunk']}
            ),
            'phases': sorted({t['phase'] for t in ticks}),
            'subtasks': subtasks,
            **seam_steps(ticks, commands),
        }

    def intervention(self) -> int:
        """The operator takes over (leaders brought to the followers, released), then HOLD;
        returns the ticks it took."""
        start = len(self._ticks)
        self.call('/controller/engage_teleop')
        self.wait(
            lambda: self._ticks and self._ticks[-1]['phase'] == 'tracking_leaders',
            'the leaders to reach the followers and be released',
        )
        self.spin_for(1.0)
        self.call('/controller/hold')
        self.spin_for(0.5)
        self._intervention_ticks = self._ticks[start:]
        return len(self._intervention_ticks)

    def _accepted(self, epoch: int) -> list[dict]:
        """The reasoning results of an epoch that the policy installed, oldest first."""
        return [r for r in self._reasonings if r['epoch'] == epoch and r['accepted']]

    def _chunk_tag(self) -> ChunkTag | None:
        last = self.stats['halo/action_chunk'].last
        return None if last is None else ChunkTag.parse(last.header.frame_id)

    def run(self, args, processes, deadline: float) -> dict:
        """The demo's scenario: a teleoperated demonstration, then closed-loop episodes (the last
        one ends with an intervention)."""
        lines = []
        self.wait_ready(processes, deadline)

        teleop = self.teleop_episode(processes)
        lines.append(
            f'teleoperated episode {teleop["episode"]} (seed {teleop["seed"]}): '
            f'{"SUCCESS" if teleop["success"] else "failure"}, reward '
            f'{teleop["reward"]}/{teleop["max_reward"]}'
        )
        self._deadline = float('inf')  # episodes have their own limits; processes are watched
        episodes = []
        for k in range(args.episodes):
            last = k == args.episodes - 1
            self.extend_deadline(120.0)
            result = self.policy_episode(processes, args.episode_seconds, intervene=last)
            episodes.append(result)
            lines.append(self._episode_line(k, args.episodes, result))
        lines += self._policy_lines(args, episodes)
        intervention = self._intervention_ticks
        lines.append(
            f'  intervention: {len(intervention)} ticks, intervention flag '
            f'{any(t["intervention"] for t in intervention)}'
        )
        return {
            'ok': bool(episodes) and all(e['policy_ticks'] for e in episodes),
            'rates': self._rates(),
            'lines': lines,
            'teleop': teleop,
            'episodes': episodes,
            'latency_ms': self._latency(),
        }

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

    def _episode_line(self, k: int, n: int, e: dict) -> str:
        result = (
            f'SUCCESS in {e["seconds_to_success"]:.1f} s'
            if e['success']
            else f'failure (best reward {e["max_reward"]}/4)'
        )
        return (
            f'policy episode {k + 1}/{n} (seed {e["seed"]}): {result}; {e["chunks_executed"]} '
            f'chunks; reasoning went through {len(e["subtasks"])} subtasks; largest step at '
            f'chunk switches {e["largest_step_at_switch_rad"]:.3f} rad'
        )

    def _latency(self) -> dict:
        """The policy's chunk latency percentiles as its diagnostics last reported them."""
        for status in self._policy_status.status if self._policy_status is not None else []:
            values = {kv.key: kv.value for kv in status.values}
            return {
                k.removeprefix('latency_').removesuffix('_ms'): float(v)
                for k, v in values.items()
                if k.startswith('latency_') and k.endswith('_ms')
            }
        return {}

    def _policy_lines(self, args, episodes: list[dict]) -> list[str]:
        weights = args.checkpoint or 'RANDOM weights: its text, subgoals and actions are noise'
        successes = sum(e['success'] for e in episodes)
        lines = [
            f'\npolicy: halo-tiny on the CPU ({weights}), backend {args.backend}, seam '
            f'{args.seam}, instruction {args.instruction!r}',
            f'  closed loop: {successes}/{len(episodes)} episodes succeeded '
            f'({args.episode_seconds:g} s each at most); episodes reaching reward 1/2/3/4 '
            f'(right grasps / lifts / left touches / left holds it up): '
            + '/'.join(str(sum(e['max_reward'] >= r for e in episodes)) for r in (1, 2, 3, 4)),
        ]
        reasoning = self.stats['halo/reasoning'].last
        if reasoning is not None:
            r = json.loads(reasoning.data)
            text = r['text'] if len(r['text']) <= 120 else r['text'][:117] + '...'
            lines.append(
                f'  last reasoning v{r["context_version"]} ({r["latency_ms"]:.0f} ms): {text!r}'
            )
        for e in episodes[:1]:
            shown = [t if len(t) <= 60 else t[:57] + '...' for t in e['subtasks'][:8]]
            lines.append(f'  subtasks reasoned in episode {e["episode"]}: {shown}')
        subgoals = self.stats['halo/subgoal/image_raw']
        lines.append(
            f'  subgoal images: {subgoals.count} '
            f'({", ".join("x".join(map(str, s)) for s in subgoals.shapes) or "-"})'
        )
        chunks = self.stats['halo/action_chunk']
        lines.append(f'  action chunks: {chunks.count} at {chunks.rate_hz():.1f} Hz')
        latency = self._latency()
        if latency:
            lines.append(
                f'  chunk latency (observation -> published): p50 '
                f'{latency.get("stamp_to_publish_p50")} ms, p99 '
                f'{latency.get("stamp_to_publish_p99")} ms'
            )
        if episodes:
            at_switch = max(e['largest_step_at_switch_rad'] for e in episodes)
            within = max(e['largest_step_within_chunk_rad'] for e in episodes)
            lines.append(
                f'  seams: largest per-tick joint step at chunk switches {at_switch:.3f} rad, '
                f'within chunks {within:.3f} rad'
            )
        return lines


def seam_steps(ticks: list[dict], commands: list[tuple[int, np.ndarray]]) -> dict:
    """Per-tick arm-joint command steps, split into ticks where the executed chunk changed
    (a seam) and ticks inside one chunk: how smooth the hand-over between chunks is."""
    by_stamp = dict(commands)
    joints = [i for i in range(14) if i not in GRIPPER_INDICES]
    at_switch, within = [], []
    for before, after in zip(ticks[:-1], ticks[1:], strict=True):
        a, b = by_stamp.get(before['stamp_ns']), by_stamp.get(after['stamp_ns'])
        if a is None or b is None or not before['chunk'] or not after['chunk']:
            continue
        step = float(np.abs(b[joints] - a[joints]).max())
        switched = (before['chunk']['epoch'], before['chunk']['seq']) != (
            after['chunk']['epoch'],
            after['chunk']['seq'],
        )
        (at_switch if switched else within).append(step)
    return {
        'seams': len(at_switch),
        'largest_step_at_switch_rad': round(max(at_switch, default=0.0), 4),
        'mean_step_at_switch_rad': round(float(np.mean(at_switch)) if at_switch else 0.0, 4),
        'largest_step_within_chunk_rad': round(max(within, default=0.0), 4),
        'mean_step_within_chunk_rad': round(float(np.mean(within)) if within else 0.0, 4),
    }
