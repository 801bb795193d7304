"""The target of one tick by mode: hold, the leaders (after aligning them), the chunk stream
(ramped in from a hold, watched by the watchdog), or the sleep pose (on exit).

Blends and comparisons use the shortest equivalent angle on joints that span a whole turn
(`SafetyFilter.difference`): a hold near -pi and a chunk near +pi are 0.1 rad apart, not 6.2.

A mixin of `ControlLoop`: it uses the loop's filters, buffer and mode state.
"""

import logging

import numpy as np

from halo_ros.control.modes import Mode, Phase

log = logging.getLogger(__name__)

_PLAYING = (Phase.RAMPING, Phase.FOLLOWING_CHUNK)


class TargetSelection:
    def _choose(self, now_ns: int):
        """(follower target (14,), leader target or None, chunk info or None) for this tick."""
        if self.mode is Mode.TELEOP:
            return self._teleop(now_ns)
        if self.mode is Mode.POLICY:
            return self._policy(now_ns)
        if self.phase in (Phase.MOVING_TO_SLEEP, Phase.ASLEEP):
            return self._sleep(now_ns)
        return self._hold, None, None

    def _teleop(self, now_ns: int):
        if self.phase is Phase.TRACKING_LEADERS:
            target = self._leaders if self._leaders is not None else self._target
            return target, None, None
        # Aligning: followers stop, the leaders are driven to where the followers stop.
        aim = np.clip(self._hold, self.leader_filter.limits.lower, self.leader_filter.limits.upper)
        stopped = np.allclose(self.follower_filter.velocity, 0.0)
        if stopped and self._leaders is not None:
            error = np.abs(self.leader_filter.difference(self._leaders, aim)).max()
            if error <= self.config.leader_align_tolerance_rad:
                self._set_leader_torque(False)
                self.phase = Phase.TRACKING_LEADERS
                log.info('leaders aligned (%.3f rad): released, teleop follows them', error)
                return self._hold, None, None
        if now_ns > self._align_deadline_ns:
            self.stats.count('events', 'align_timeout')
            log.error(
                'leaders did not reach the followers within %.1f s: holding',
                self.config.leader_align_timeout_s,
            )
            self._enter_hold(Phase.FAULT)
            return self._hold, None, None
        return self._hold, aim, None

    def _policy(self, now_ns: int):
        if (
            self.phase is not Phase.WATCHDOG
            and now_ns - self._last_chunk_ns > self.config.watchdog_timeout_s * 1e9
        ):
            self.stats.count('events', 'watchdog')
            log.warning(
                'no valid chunk for %.0f ms: decelerating to hold',
                (now_ns - self._last_chunk_ns) / 1e6,
            )
            self.buffer.forget_stream()
            self._hold = self.follower_filter.stopping_point()
            self.phase = Phase.WATCHDOG
        playback = self.buffer.step(now_ns)
        if playback is None:
            if self.phase in _PLAYING:
                self._hold = self.buffer.last_action
                self.phase = Phase.CHUNK_DONE
            return self._hold, None, None
        if self.phase not in _PLAYING and self.config.policy_ramp_s > 0:
            self._ramp_from, self._ramp_start_ns = self._hold.copy(), now_ns
        target = playback.target
        self.phase = Phase.FOLLOWING_CHUNK
        if self._ramp_from is not None:
            w = (now_ns - self._ramp_start_ns) / (self.config.policy_ramp_s * 1e9)
            if w >= 1.0:
                self._ramp_from = None
            else:
                target = self._ramp_from + w * self.follower_filter.difference(
                    target, self._ramp_from
                )
                self.phase = Phase.RAMPING
        chunk = playback.chunk
        return target, None, (chunk.epoch, chunk.seq, playback.index)

    def _sleep(self, now_ns: int):
        """Both pairs step towards their sleep pose at sleep_velocity_rad_s (grippers stay)."""
        step = self.config.sleep_velocity_rad_s * self.config.period_s
        poses = self.config.sleep_pose('follower'), self.config.sleep_pose('leader')
        self._hold = _towards(self._hold, poses[0], step)
        self._leader_hold = _towards(self._leader_hold, poses[1], step)
        if self.phase is Phase.MOVING_TO_SLEEP:
            tolerance = self.config.sleep_tolerance_rad
            there = all(
                np.allclose(np.where(np.isnan(pose), hold, pose), hold)  # the way is done
                and np.abs(f.difference(f.last_command, hold)).max() <= tolerance
                and np.allclose(f.velocity, 0.0)
                for f, hold, pose in (
                    (self.follower_filter, self._hold, poses[0]),
                    (self.leader_filter, self._leader_hold, poses[1]),
                )
            )
            if there:
                self.phase = Phase.ASLEEP
                log.info('all arms in their sleep pose')
            elif now_ns > self._sleep_deadline_ns:
                self.stats.count('events', 'sleep_timeout')
                log.error(
                    'the arms did not reach the sleep pose within %.1f s',
                    self.config.sleep_timeout_s,
                )
                self._enter_hold(Phase.FAULT)
                return self._hold, None, None
        return self._hold, self._leader_hold, None


def _towards(current: np.ndarray, goal: np.ndarray, step: float) -> np.ndarray:
    """`current` moved by at most `step` per joint towards `goal` (NaN in goal: stays)."""
    goal = np.where(np.isnan(goal), current, goal)
    return current + np.clip(goal - current, -step, step)
