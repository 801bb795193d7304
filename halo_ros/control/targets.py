"""The target of one tick by mode: hold, the leaders (after aligning them), or the chunk stream
(ramped in from a hold, watched by the watchdog).

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
        return self._hold, None, None

    def _teleop(self, now_ns: int):
        if self.phase is Phase.TRACKING_LEADERS:
            target = self._leaders if self._leaders is not None else self._target
            return target, None, None
        # Aligning: followers stop, the leaders are driven to where the followers stop.
        aim = np.clip(self._hold, self.leader_filter.limits.lower, self.leader_filter.limits.upper)
        stopped = np.allclose(self.follower_filter.velocity, 0.0)
        if stopped and self._leaders is not None:
            error = np.abs(self._leaders - aim).max()
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
                target = self._ramp_from + w * (target - self._ramp_from)
                self.phase = Phase.RAMPING
        chunk = playback.chunk
        return target, None, (chunk.epoch, chunk.seq, playback.index)
