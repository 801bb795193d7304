"""The target of one tick by mode: hold, the leaders (after aligning them), the chunk stream
(ramped in from a hold, watched by the watchdog), or the sleep pose (on exit).

Blends and comparisons use the shortest equivalent angle on joints that span a whole turn
(`SafetyFilter.difference`): a hold near -pi and a chunk near +pi are 0.1 rad apart, not 6.2.

`Targets` owns what the choice depends on between ticks: the held pose, the ramp, the watchdog's
last chunk, the alignment and sleep deadlines. Mode switches set them through its `begin_*`
methods; the phase within a mode it changes itself (on the shared `ModeState`).
"""

import logging
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from halo_ros.control.modes import Mode, Phase
from halo_ros.control.parts import LoopPart, LoopParts

log = logging.getLogger(__name__)

_PLAYING = (Phase.RAMPING, Phase.FOLLOWING_CHUNK)


class Choice(NamedTuple):
    followers: np.ndarray  # (14,) target before the safety filter
    leaders: np.ndarray | None  # leaders' target, None: nothing is written to them
    chunk: tuple[int, int, float] | None  # (epoch, seq, point index) in use


class Targets(LoopPart):
    def __init__(
        self,
        parts: LoopParts,
        *,
        release_leaders: Callable[[], None],
        fault: Callable[[], None],
    ):
        """`release_leaders`: torque off the leaders once aligned; `fault`: hold in FAULT (an
        alignment or the way to sleep timed out)."""
        super().__init__(parts)
        self._release_leaders = release_leaders
        self._fault = fault
        self.hold: np.ndarray | None = None  # followers' target while holding
        self.last: np.ndarray | None = None  # the target chosen last tick
        self._leader_hold: np.ndarray | None = None  # leaders' target on the way to sleep
        self._ramp_from: np.ndarray | None = None
        self._ramp_start_ns = 0
        self._last_chunk_ns = 0  # the watchdog counts from here
        self._align_deadline_ns = 0
        self._sleep_deadline_ns = 0

    # -- set by mode switches -------------------------------------------------------------------

    def begin_hold(self, pose: np.ndarray) -> None:
        """Hold `pose` (a stopping point, or the frozen command in ESTOP); any ramp ends."""
        self.hold = pose
        self._ramp_from = None
        if self.last is None:
            self.last = pose.copy()

    def begin_aligning(self, now_ns: int) -> None:
        self.hold = self.follower_filter.stopping_point()
        self._align_deadline_ns = now_ns + int(self.config.leader_align_timeout_s * 1e9)

    def begin_policy(self, now_ns: int) -> None:
        self.hold = self.follower_filter.stopping_point()
        self._last_chunk_ns = now_ns  # the watchdog counts from the engagement

    def begin_sleep(self, now_ns: int) -> None:
        self.begin_hold(self.follower_filter.stopping_point())
        self._leader_hold = self.leader_filter.last_command
        self._sleep_deadline_ns = now_ns + int(self.config.sleep_timeout_s * 1e9)

    def chunk_taken(self, now_ns: int) -> None:
        self._last_chunk_ns = now_ns

    def hold_measured(self, mask: np.ndarray) -> None:
        """Joints under `mask` were limp and are re-synced: hold them where they are now."""
        self.hold[mask] = self.follower_filter.last_command[mask]

    # -- every tick -------------------------------------------------------------------------

    def choose(self, now_ns: int) -> Choice:
        if self.state.mode is Mode.TELEOP:
            choice = self._teleop(now_ns)
        elif self.state.mode is Mode.POLICY:
            choice = self._policy(now_ns)
        elif self.state.phase in (Phase.MOVING_TO_SLEEP, Phase.ASLEEP):
            choice = self._sleep(now_ns)
        else:
            choice = Choice(self.hold, None, None)
        self.last = choice.followers
        return choice

    def _teleop(self, now_ns: int) -> Choice:
        state = self.state
        if state.phase is Phase.TRACKING_LEADERS:
            leaders = self.poses.leaders
            return Choice(leaders if leaders is not None else self.last, None, None)
        # Aligning: followers stop, the leaders are driven to where the followers stop.
        aim = np.clip(self.hold, self.leader_filter.limits.lower, self.leader_filter.limits.upper)
        stopped = np.allclose(self.follower_filter.velocity, 0.0)
        if stopped and self.poses.leaders is not None:
            error = np.abs(self.leader_filter.difference(self.poses.leaders, aim)).max()
            if error <= self.config.leader_align_tolerance_rad:
                self._release_leaders()
                state.phase = Phase.TRACKING_LEADERS
                log.info('leaders aligned (%.3f rad): released, teleop follows them', error)
                return Choice(self.hold, None, None)
        if now_ns > self._align_deadline_ns:
            self.stats.count('events', 'align_timeout')
            log.error(
                'leaders did not reach the followers within %.1f s: holding',
                self.config.leader_align_timeout_s,
            )
            self._fault()
            return Choice(self.hold, None, None)
        return Choice(self.hold, aim, None)

    def _policy(self, now_ns: int) -> Choice:
        state = self.state
        if (
            state.phase is not Phase.WATCHDOG
            and now_ns - self._last_chunk_ns > self.config.watchdog_timeout_s * 1e9
        ):
            self.stats.count('events', 'watchdog')
            log.warning(
                'no valid chunk for %.0f ms: decelerating to hold',
                (now_ns - self._last_chunk_ns) / 1e6,
            )
            self.buffer.forget_stream()
            self.hold = self.follower_filter.stopping_point()
            state.phase = Phase.WATCHDOG
        playback = self.buffer.step(now_ns)
        if playback is None:
            if state.phase in _PLAYING:
                self.hold = self.buffer.last_action
                state.phase = Phase.CHUNK_DONE
            return Choice(self.hold, None, None)
        if state.phase not in _PLAYING and self.config.policy_ramp_s > 0:
            self._ramp_from, self._ramp_start_ns = self.hold.copy(), now_ns
        target = playback.target
        state.phase = Phase.FOLLOWING_CHUNK
        if self._ramp_from is not None:
            w = (now_ns - self._ramp_start_ns) / (self.config.policy_ramp_s * 1e9)
            if w >= 1.0:
                self._ramp_from = None
            else:
                target = self._ramp_from + w * self.follower_filter.difference(
                    target, self._ramp_from
                )
                state.phase = Phase.RAMPING
        chunk = playback.chunk
        return Choice(target, None, (chunk.epoch, chunk.seq, playback.index))

    def _sleep(self, now_ns: int) -> Choice:
        """Both pairs step towards their sleep pose at sleep_velocity_rad_s (grippers stay)."""
        step = self.config.sleep_velocity_rad_s * self.config.period_s
        poses = self.config.sleep_pose('follower'), self.config.sleep_pose('leader')
        self.hold = _towards(self.hold, poses[0], step)
        self._leader_hold = _towards(self._leader_hold, poses[1], step)
        if self.state.phase is Phase.MOVING_TO_SLEEP:
            tolerance = self.config.sleep_tolerance_rad
            there = all(
                np.allclose(np.where(np.isnan(pose), hold, pose), hold)  # the way is done
                and np.abs(f.difference(f.last_command, hold)).max() <= tolerance
                and np.allclose(f.velocity, 0.0)
                for f, hold, pose in (
                    (self.follower_filter, self.hold, poses[0]),
                    (self.leader_filter, self._leader_hold, poses[1]),
                )
            )
            if there:
                self.state.phase = Phase.ASLEEP
                log.info('all arms in their sleep pose')
            elif now_ns > self._sleep_deadline_ns:
                self.stats.count('events', 'sleep_timeout')
                log.error(
                    'the arms did not reach the sleep pose within %.1f s',
                    self.config.sleep_timeout_s,
                )
                self._fault()
                return Choice(self.hold, None, None)
        return Choice(self.hold, self._leader_hold, None)


def _towards(current: np.ndarray, goal: np.ndarray, step: float) -> np.ndarray:
    """`current` moved by at most `step` per joint towards `goal` (NaN in goal: stays)."""
    goal = np.where(np.isnan(goal), current, goal)
    return current + np.clip(goal - current, -step, step)
