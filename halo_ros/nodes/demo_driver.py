"""The demo's operator console: calls the nodes' services in order and watches what happens.

Used by `halo-ros demo` (halo_ros/demo.py) and `halo-ros collect`; a TopicMonitor plus service
calls, so the whole scenario runs over the same ROS interfaces a user would use. The caller owns
rclpy (init before, shutdown after); every wait takes a `Watch` (its deadline and the processes
that must stay up); the figures and text come from `halo_ros.demo_report`.
"""

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from halo_ros.control.control_state import TOPIC as CONTROL_STATE
from halo_ros.control.control_state import ControlState
from halo_ros.control.modes import Phase
from halo_ros.demo_report import DemoRun, TopicSummary, episode_result, latency_from_diagnostics
from halo_ros.nodes.conversions import ns_from_stamp
from halo_ros.nodes.topic_monitor import TopicMonitor
from halo_ros.runtime.chunk import ChunkTag
from halo_ros.runtime.reasoning_message import TOPIC as REASONING
from halo_ros.runtime.reasoning_message import ReasoningMessage
from halo_ros.supervisor import Watch

SIM_STATUS = 'sim/status'
TICK_S = 0.02  # the simulator's control period
EPISODE_WAIT_S = 120.0  # a closed-loop episode's waits (reset, reasoning, services), at most


class DemoError(RuntimeError):
    """A node refused a request the scenario needs."""


class DemoDriver(TopicMonitor):
    def __init__(self, cameras, followers):
        self.cameras, self.followers = cameras, followers
        topics = {t: Image for t in cameras} | {t: JointState for t in followers}
        topics |= {
            SIM_STATUS: String,
            CONTROL_STATE: String,
            'halo/command': JointState,
            'halo/action_chunk': JointTrajectory,
            REASONING: String,
            'halo/subgoal/image_raw': Image,
            'diagnostics': DiagnosticArray,
        }
        super().__init__(topics, 'demo_driver')
        self.ticks: list[ControlState] = []  # every tick seen
        self.commands: list[tuple[int, np.ndarray]] = []  # (stamp, halo/command) per tick
        self.reasonings: list[ReasoningMessage] = []  # every reasoning cycle seen
        self.create_subscription(String, CONTROL_STATE, self._on_tick, 200)
        self.create_subscription(JointState, 'halo/command', self._on_command, 200)
        self.create_subscription(String, REASONING, self._on_reasoning, 50)
        self._policy_status = None  # the policy's last diagnostics (every node publishes some)
        self.create_subscription(DiagnosticArray, 'diagnostics', self._on_diagnostics, 50)

    def _on_tick(self, msg) -> None:
        self.ticks.append(ControlState.from_json(msg.data))

    def _on_command(self, msg) -> None:
        self.commands.append((ns_from_stamp(msg.header.stamp), np.asarray(msg.position)))

    def _on_diagnostics(self, msg) -> None:
        if any(s.name == 'halo_ros: policy' for s in msg.status):
            self._policy_status = msg

    def _on_reasoning(self, msg) -> None:
        self.reasonings.append(ReasoningMessage.from_json(msg.data))

    # -- plumbing --------------------------------------------------------------------------------

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(self, timeout_sec=0.05)

    def wait(self, condition, what: str, watch: Watch) -> None:
        """Spin until `condition()`; WaitError when the watch gives up first."""
        while not condition():
            watch.check(what)
            rclpy.spin_once(self, timeout_sec=0.05)

    def wait_for_publisher(self, topic: str, watch: Watch) -> None:
        name = topic if topic.startswith('/') else '/' + topic
        self.wait(lambda: self.count_publishers(name) > 0, f'a publisher on {name}', watch)

    def call(
        self, service: str, watch: Watch, request=None, srv_type=Trigger, *, attempts: int = 1
    ) -> str:
        """Call and wait for the reply; a refusal is retried `attempts` - 1 times, 0.5 s apart
        (for requests that are safe to repeat), then raised."""
        client = self.create_client(srv_type, service)
        self.wait(lambda: client.service_is_ready(), f'the service {service}', watch)
        try:
            for attempt in range(1, attempts + 1):
                future = client.call_async(request or srv_type.Request())
                self.wait(future.done, f'the reply of {service}', watch)
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

    def _torque(self, on: bool, watch: Watch) -> None:
        self.call('/controller/torque', watch, SetBool.Request(data=on), SetBool, attempts=3)

    def _mark_success(self, success: bool, watch: Watch) -> None:
        self.call('/recorder_node/mark_success', watch, SetBool.Request(data=success), SetBool)

    # -- episodes --------------------------------------------------------------------------------

    def wait_ready(self, watch: Watch) -> None:
        """Until cameras, follower joint states and the simulator's status arrive."""
        self.wait(
            lambda: (
                all(self.stats[t].count for t in (*self.cameras, *self.followers))
                and self.status() is not None
            ),
            'cameras, joint states and the simulator',
            watch,
        )

    def new_episode(self, watch: Watch) -> int:
        """Reset the simulated scene under a held controller; returns the new episode number.

        The reset teleports the followers to the start pose, so the controller must not keep
        commanding where they were: torque goes off (the loop follows the measured pose while
        limp), the scene resets, and torque on re-syncs the hold to the measured start pose, as
        after an operator repositions a real arm by hand.
        """
        self.call('/controller/hold', watch)
        self._torque(False, watch)
        before = self.status()['episode']
        self.call('/sim/reset', watch)
        self.wait(lambda: self.status()['episode'] > before, 'the new episode', watch)
        self._torque(True, watch)
        return self.status()['episode']

    def teleop_episode(self, watch: Watch) -> dict:
        """One recorded demonstration: the scripted operator moves the leaders, the controller
        follows in TELEOP; returns the simulator's status at its end."""
        episode = self.new_episode(watch)
        self.call('/recorder_node/start', watch)
        try:
            self.call('/controller/engage_teleop', watch)
            self.wait(
                lambda: self.status()['episode'] == episode and self.status()['operator_done'],
                'the end of the teleoperated episode',
                watch,
            )
            status = self.status()
            self._mark_success(status['success'], watch)
        finally:  # closed either way: the next episode's start must find the recorder idle
            self.call('/recorder_node/stop', watch)
        self.call('/controller/hold', watch)
        return status

    def policy_episode(
        self, seconds: float, watch: Watch, *, intervene: bool = False
    ) -> tuple[dict, list[ControlState]]:
        """One recorded closed-loop episode: a fresh scene, the policy told a new episode began
        and its first reasoning about it awaited, then POLICY for `seconds` or until success
        (+0.5 s). `intervene`: end with the operator taking over (TELEOP) instead of HOLD.
        Returns its `demo_report.episode_result` and the intervention's ticks (or none)."""
        episode = self.new_episode(watch)
        status = self.status()
        epoch = int(self.call('/policy/new_episode', watch).split()[-1])
        self.wait(lambda: self._accepted(epoch), 'the first reasoning about the new episode', watch)
        version = self._accepted(epoch)[0].context_version
        self.wait(
            lambda: (
                (tag := self._chunk_tag()) is not None
                and tag.epoch == epoch
                and tag.context_version >= version
            ),
            'a chunk conditioned on that reasoning',
            watch,
        )
        self.call('/recorder_node/start', watch)
        first_tick, first_command = len(self.ticks), len(self.commands)
        self.call('/controller/engage_policy', watch)
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
        ticks, commands = self.ticks[first_tick:], self.commands[first_command:]
        intervention = self.intervention(watch) if intervene else []
        if not intervene:
            self.call('/controller/hold', watch)
        self._mark_success(success_s is not None, watch)
        self.call('/recorder_node/stop', watch)
        result = episode_result(
            status,
            max_reward=best,
            seconds_to_success=success_s,
            ticks=ticks,
            commands=commands,
            reasonings=self._accepted(epoch),
        )
        return result, intervention

    def intervention(self, watch: Watch) -> list[ControlState]:
        """The operator takes over (leaders brought to the followers, released), then HOLD;
        returns the ticks it took."""
        start = len(self.ticks)
        self.call('/controller/engage_teleop', watch)
        self.wait(
            lambda: self.ticks and self.ticks[-1].phase is Phase.TRACKING_LEADERS,
            'the leaders to reach the followers and be released',
            watch,
        )
        self.spin_for(1.0)
        self.call('/controller/hold', watch)
        self.spin_for(0.5)
        return self.ticks[start:]

    def _accepted(self, epoch: int) -> list[ReasoningMessage]:
        """The reasoning results of an epoch that the policy installed, oldest first."""
        return [r for r in self.reasonings if r.epoch == epoch and r.accepted]

    def _chunk_tag(self) -> ChunkTag | None:
        last = self.stats['halo/action_chunk'].last
        return None if last is None else ChunkTag.parse(last.header.frame_id)

    # -- the scenario ----------------------------------------------------------------------------

    def run(self, episodes: int, episode_seconds: float, watch: Watch) -> DemoRun:
        """The demo's scenario: a teleoperated demonstration (within `watch`), then closed-loop
        episodes (each within EPISODE_WAIT_S, the same processes watched); the last one ends
        with an intervention."""
        self.wait_ready(watch)
        teleop = self.teleop_episode(watch)
        results, intervention = [], []
        for k in range(episodes):
            last = k == episodes - 1
            episode_watch = Watch.for_seconds(EPISODE_WAIT_S, watch.processes)
            result, intervention = self.policy_episode(
                episode_seconds, episode_watch, intervene=last
            )
            results.append(result)
        return DemoRun(
            teleop=teleop,
            episodes=results,
            intervention=intervention,
            topics={
                topic: TopicSummary(s.count, s.rate_hz(), frozenset(s.shapes))
                for topic, s in self.stats.items()
            },
            last_reasoning=self.reasonings[-1] if self.reasonings else None,
            latency_ms=self.latency(),
        )

    def latency(self) -> dict[str, float]:
        """The policy's chunk latency percentiles as its diagnostics last reported them."""
        for status in self._policy_status.status if self._policy_status is not None else []:
            return latency_from_diagnostics({kv.key: kv.value for kv in status.values})
        return {}


@contextmanager
def driving(cameras, followers, processes: dict) -> Iterator[DemoDriver]:
    """rclpy and a DemoDriver for the length of the block. On the way out the processes put
    into `processes` meanwhile are stopped in order (recorder first: it closes its bag
    cleanly), then the driver, then rclpy."""
    rclpy.init()
    try:
        driver = DemoDriver(cameras, followers)
        try:
            yield driver
        finally:
            for process in processes.values():
                process.stop()
            driver.destroy_node()
    finally:
        rclpy.try_shutdown()
