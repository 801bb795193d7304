"""Action chunks as the controller sees them: validated, aligned by stamp, replaced by newer ones.

A chunk is computed from an observation taken at `stamp_ns`; its point k is the command meant for
time `stamp_ns + k * dt_ns`. By the time it arrives, its first points are already in the past:
the buffer plays each chunk against the clock (never against its arrival), so those are skipped,
and linear interpolation covers a chunk period that differs from the control period.
"""

import logging
from dataclasses import dataclass
from enum import Enum

import numpy as np

from halo_ros.joints import BIMANUAL_JOINTS, DOF

log = logging.getLogger(__name__)


class Rejection(Enum):
    """Why a chunk was refused; counted in diagnostics."""

    UNKNOWN_JOINTS = 'unknown_joints'  # names missing, extra or not ours
    WRONG_SHAPE = 'wrong_shape'
    NON_FINITE = 'non_finite'
    BAD_TIMING = 'bad_timing'  # dt not positive, or no points
    STALE = 'stale'  # every point already in the past
    OLD_EPOCH = 'old_epoch'  # made before the latest instruction change
    OUT_OF_ORDER = 'out_of_order'  # older observation or sequence than the chunk in use


@dataclass(frozen=True)
class Chunk:
    stamp_ns: int  # observation time the chunk was computed from
    dt_ns: int  # time between points
    positions: np.ndarray  # (H, 14) float64 in joints.BIMANUAL_JOINTS order
    epoch: int = 0  # bumped by every instruction change
    seq: int = 0  # increases with every chunk of the policy
    context_version: int = 0  # reasoning version the chunk was conditioned on

    @property
    def end_ns(self) -> int:
        return self.stamp_ns + (len(self.positions) - 1) * self.dt_ns


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
) -> Chunk:
    """Validate a chunk received in any joint order and reorder it to ours; ChunkError says why
    not (the caller counts `error.reason`)."""
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
    return Chunk(stamp_ns, dt_ns, array[:, order], epoch, seq, context_version)


class ChunkBuffer:
    """The chunk currently being played. A newer chunk replaces it from the moment it arrives."""

    def __init__(self):
        self.current: Chunk | None = None
        self.epoch = 0

    def offer(self, chunk: Chunk, now_ns: int) -> None:
        """Take `chunk` or raise ChunkError with the reason it is refused."""
        if chunk.epoch < self.epoch:
            raise ChunkError(Rejection.OLD_EPOCH, f'epoch {chunk.epoch} < {self.epoch}')
        if chunk.end_ns < now_ns:
            late_ms = (now_ns - chunk.end_ns) / 1e6
            raise ChunkError(Rejection.STALE, f'last point {late_ms:.1f} ms in the past')
        current = self.current
        if (
            current is not None
            and chunk.epoch == current.epoch
            and (chunk.stamp_ns < current.stamp_ns or chunk.seq <= current.seq)
        ):
            raise ChunkError(
                Rejection.OUT_OF_ORDER,
                f'seq {chunk.seq} stamp {chunk.stamp_ns} after seq {current.seq} '
                f'stamp {current.stamp_ns}',
            )
        self.epoch = chunk.epoch
        self.current = chunk

    def clear(self) -> None:
        self.current = None

    def target(self, now_ns: int) -> np.ndarray | None:
        """The command for `now_ns`, linearly interpolated; None once the chunk has run out (or
        before its first point, which cannot happen for a chunk stamped in the past)."""
        chunk = self.current
        if chunk is None or now_ns > chunk.end_ns or now_ns < chunk.stamp_ns:
            return None
        position = (now_ns - chunk.stamp_ns) / chunk.dt_ns
        k = min(int(position), len(chunk.positions) - 2) if len(chunk.positions) > 1 else 0
        if len(chunk.positions) == 1:
            return chunk.positions[0].copy()
        frac = position - k
        return (1 - frac) * chunk.positions[k] + frac * chunk.positions[k + 1]

    def index_at(self, now_ns: int) -> int | None:
        """Which point of the current chunk is executed at `now_ns` (for execution feedback)."""
        chunk = self.current
        if chunk is None or not chunk.stamp_ns <= now_ns <= chunk.end_ns:
            return None
        return int(round((now_ns - chunk.stamp_ns) / chunk.dt_ns))
