"""Action chunks as the controller sees them: validated, aligned by stamp, replaced by newer ones.

A chunk is computed from an observation taken at `stamp_ns`; its point k is the command meant for
time `stamp_ns + k * dt_ns`. Order and first executed index follow `halo_ros.runtime.alignment`
(the policy's `ChunkSchedule` replays the same rule to plan seams); on top of it the controller
refuses chunks too old to act on or stamped ahead of its clock:

- a chunk takes over at the first control tick after it arrives, replacing the one in use;
- from its first executed index it advances one control period per tick (linear interpolation
  when the chunk's dt differs from the control period); after its last action the robot holds.
"""

import logging
from collections import deque
from dataclasses import dataclass
from enum import Enum

import numpy as np

from halo_ros.joints import BIMANUAL_JOINTS, DOF
from halo_ros.runtime.alignment import AlignmentError, StreamPosition, align

log = logging.getLogger(__name__)


class Rejection(Enum):
    """Why a chunk was refused; counted in diagnostics."""

    UNKNOWN_JOINTS = 'unknown_joints'  # names missing, extra or not ours
    WRONG_SHAPE = 'wrong_shape'
    NON_FINITE = 'non_finite'
    BAD_TIMING = 'bad_timing'  # dt not positive, or no points
    BAD_TAG = 'bad_tag'  # header.frame_id is not a halo chunk tag
    STALE = 'stale'  # nothing left to execute, or its observation is too old to act on
    FUTURE = 'future'  # stamped ahead of our clock by more than the allowed skew
    OLD_EPOCH = 'old_epoch'  # made before the latest instruction change
    OUT_OF_ORDER = 'out_of_order'  # older observation or sequence than the chunk in use
    TOO_LONG = 'too_long'  # more points than max_chunk_points (memory and time per message)
    QUEUE_FULL = 'queue_full'  # max_queued_chunks were already waiting for a tick: oldest dropped


@dataclass(frozen=True)
class ControllerChunk:
    stamp_ns: int  # observation time the chunk was computed from
    dt_ns: int  # time between points
    positions: np.ndarray  # (H, 14) float64 in joints.BIMANUAL_JOINTS order
    epoch: int = 0  # bumped by every instruction change
    seq: int = 0  # increases with every chunk of the policy
    context_version: int = 0  # reasoning version the chunk was conditioned on

    @property
    def end_ns(self) -> int:
        return self.stamp_ns + (len(self.positions) - 1) * self.dt_ns


def _position(chunk: ControllerChunk) -> StreamPosition:
    return StreamPosition(chunk.epoch, chunk.seq, chunk.stamp_ns)


class ChunkError(ValueError):
    def __init__(self, reason: Rejection, detail: str):
        super().__init__(f'{reason.value}: {detail}')
        self.reason = reason


def make_chunk(
    joint_names,
    positions,
    *,
    stamp_ns: int,
    dt_ns: int,
    epoch: int = 0,
    seq: int = 0,
    context_version: int = 0,
    max_points: int | None = None,
) -> ControllerChunk:
    """Validate a chunk received in any joint order and reorder it to ours; ChunkError says why
    not (the caller counts `error.reason`). `max_points` caps its length (None: no cap)."""
    check_length(len(positions) if hasattr(positions, '__len__') else 0, max_points)
    names = list(joint_names)
    if sorted(names) != sorted(BIMANUAL_JOINTS) or len(set(names)) != len(names):
        unknown = sorted(set(names) - set(BIMANUAL_JOINTS))
        missing = sorted(set(BIMANUAL_JOINTS) - set(names))
        raise ChunkError(Rejection.UNKNOWN_JOINTS, f'unknown {unknown}, missing {missing}')
    array = np.asarray(positions, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != DOF:
        raise ChunkError(Rejection.WRONG_SHAPE, f'positions shape {array.shape}, expected (H, 14)')
    if len(array) == 0 or dt_ns <= 0:
        raise ChunkError(Rejection.BAD_TIMING, f'{len(array)} points at dt {dt_ns} ns')
    if not np.isfinite(array).all():
        raise ChunkError(Rejection.NON_FINITE, 'positions contain NaN or infinity')
    order = [names.index(n) for n in BIMANUAL_JOINTS]
    return ControllerChunk(stamp_ns, dt_ns, array[:, order], epoch, seq, context_version)


def check_length(points: int, max_points: int | None) -> None:
    """ChunkError TOO_LONG past the cap: checked before anything is converted, so a hostile
    message costs nothing."""
    if max_points is not None and points > max_points:
        raise ChunkError(Rejection.TOO_LONG, f'{points} points, at most {max_points} accepted')


class Playback:
    """What the buffer commands at one tick."""

    __slots__ = ('target', 'chunk', 'index')

    def __init__(self, target: np.ndarray, chunk: ControllerChunk, index: float):
        self.target = target  # (14,)
        self.chunk = chunk
        self.index = index  # fractional point index within the chunk


class ChunkBuffer:
    """The chunk in use, played by the alignment rule of the module docstring.

    Single-threaded: the control loop offers chunks and steps it. `offer` refuses with ChunkError
    (the caller counts `error.reason`)."""

    def __init__(
        self,
        period_ns: int,
        *,
        max_age_ns: int = 1_000_000_000,
        max_future_ns: int = 50_000_000,
        history: int = 1024,
    ):
        if period_ns <= 0:
            raise ValueError(f'period_ns must be positive, got {period_ns}')
        self.period_ns = period_ns
        self.max_age_ns = max_age_ns
        self.max_future_ns = max_future_ns
        self.current: ControllerChunk | None = None
        self._newest: ControllerChunk | None = (
            None  # the last chunk taken: order is checked against it
        )
        self.epoch = -1  # newest epoch seen in this stream
        self.last_action: np.ndarray | None = None  # of the chunk that ran out (hold there)
        self._offset_ns = 0  # chunk time of the first executed tick
        self._ticks = 0  # ticks executed from the current chunk
        self._executed: deque[int] = deque(maxlen=history)  # stamps of ticks that ran an action

    def offer(self, chunk: ControllerChunk, now_ns: int) -> int:
        """Take `chunk` as the one in use from this tick; returns its first executed index."""
        if chunk.stamp_ns > now_ns + self.max_future_ns:
            ahead_ms = (chunk.stamp_ns - now_ns) / 1e6
            raise ChunkError(Rejection.FUTURE, f'stamp {ahead_ms:.1f} ms ahead of the clock')
        age_ns = now_ns - chunk.stamp_ns
        if age_ns > self.max_age_ns:
            raise ChunkError(Rejection.STALE, f'observation {age_ns / 1e6:.1f} ms old')
        newest = self._newest
        try:
            drop = align(
                _position(chunk),
                newest and _position(newest),
                self.epoch,
                now_ns=now_ns,
                period_ns=self.period_ns,
                consumed=self.consumed_since(chunk.stamp_ns),
                span_ns=(len(chunk.positions) - 1) * chunk.dt_ns,
            )
        except AlignmentError as error:
            raise ChunkError(Rejection(error.reason.value), error.detail) from None
        offset_ns = drop * self.period_ns
        self.epoch = chunk.epoch
        self.current = self._newest = chunk
        self._offset_ns = offset_ns
        self._ticks = 0
        return int(offset_ns // chunk.dt_ns)

    def step(self, now_ns: int) -> Playback | None:
        """The command for this tick from the chunk in use, and advance by one period; None when
        there is none or it ran out (then `last_action` is where to hold)."""
        chunk = self.current
        if chunk is None:
            return None
        position = (self._offset_ns + self._ticks * self.period_ns) / chunk.dt_ns
        last = len(chunk.positions) - 1
        if position > last + 1e-9:
            self.last_action = chunk.positions[-1].copy()
            self.current = None
            return None
        k = min(int(position), last - 1) if last > 0 else 0
        frac = position - k if last > 0 else 0.0
        target = chunk.positions[k].copy()
        if frac > 0:
            target += frac * (chunk.positions[k + 1] - chunk.positions[k])
        self._ticks += 1
        self._executed.append(now_ns)
        return Playback(target, chunk, position)

    def consumed_since(self, stamp_ns: int) -> int:
        """Ticks that executed chunk actions at or after `stamp_ns`."""
        count = 0
        for t in reversed(self._executed):
            if t < stamp_ns:
                break
            count += 1
        return count

    def stop(self) -> None:
        """Drop the chunk in use (watchdog, mode change); the stream order is remembered."""
        self.current = None

    def forget_stream(self) -> None:
        """Forget epoch and order too: after the watchdog fired, a restarted policy (epoch and seq
        from 0 again) is a new stream. Its chunks are still checked for age."""
        self.current = self._newest = None
        self.epoch = -1
