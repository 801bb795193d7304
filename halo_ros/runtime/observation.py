"""Observation assembly: three camera frames + follower joints -> one `Observation`, or a drop.

Inputs arrive from subscription callbacks (any thread); the actor assembles from the newest frame
of every camera and the joint sample nearest the frames' time. Rejected input is counted by
reason and logged (rate-limited by the caller's log level): it never reaches the engine.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from halo_ros.engine.interface import Observation
from halo_ros.joints import ARM_JOINTS, SIDES

log = logging.getLogger(__name__)


class PolicyDropReason(enum.Enum):
    STALE = 'stale'  # observation older than max_age when assembled
    SKEW = 'skew'  # cameras / joints too far apart in time
    SHAPE = 'shape'  # wrong image size, encoding or joint vector length
    NON_FINITE = 'non_finite'  # NaN / inf in a joint state
    JOINT_NAMES = 'joint_names'  # a JointState whose names do not match the expected arm
    EPOCH = 'epoch'  # a chunk or reasoning result computed for a superseded instruction
    ENGINE_ERROR = 'engine_error'  # the engine raised (input error or backend failure)
    BAD_ACTIONS = 'bad_actions'  # the engine returned non-finite or wrongly shaped actions


@dataclass(frozen=True)
class AssemblyConfig:
    cameras: tuple[str, ...] = ('cam_high', 'cam_left_wrist', 'cam_right_wrist')
    image_hw: tuple[int, int] = (240, 320)  # what the engine expects; other sizes are dropped
    max_skew_ms: float = 50.0  # between camera frames, and between frames and the joint sample
    max_age_ms: float = 250.0  # frames older than this when the actor picks them up are stale
    joint_history: int = 64  # joint samples kept per arm (>1 s at 50 Hz) to match frame times

    def __post_init__(self):
        if not self.cameras:
            raise ValueError('at least one camera is needed')
        if self.max_skew_ms <= 0 or self.max_age_ms <= 0:
            raise ValueError(
                f'max_skew_ms and max_age_ms must be positive, got {self.max_skew_ms}, '
                f'{self.max_age_ms}'
            )


class PolicyDropCounter:
    """Thread-safe counts by reason (the diagnostics 'drops' field)."""

    def __init__(self):
        self._counts: Counter[PolicyDropReason] = Counter()
        self._lock = threading.Lock()

    def add(self, reason: PolicyDropReason, what: str = '') -> None:
        with self._lock:
            self._counts[reason] += 1
            n = self._counts[reason]
        # The first drop of a kind is worth a warning; the rest go to debug (diagnostics count).
        (log.warning if n == 1 else log.debug)('dropped (%s) %s', reason.value, what)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {reason.value: n for reason, n in self._counts.items()}

    def __getitem__(self, reason: PolicyDropReason) -> int:
        with self._lock:
            return self._counts[reason]


class ObservationAssembler:
    def __init__(self, config: AssemblyConfig, drops: PolicyDropCounter | None = None):
        self.config = config
        self.drops = drops or PolicyDropCounter()
        self._frames: dict[str, tuple[int, np.ndarray]] = {}
        self._joints = {side: deque(maxlen=config.joint_history) for side in SIDES}
        self._judged_stamp = -1  # newest frame set already judged (a drop is counted once)
        self._lock = threading.Lock()

    # -- inputs (any thread) ---------------------------------------------------------------------

    def add_image(self, camera: str, frame: np.ndarray, stamp_ns: int) -> bool:
        h, w = self.config.image_hw
        if camera not in self.config.cameras:
            raise ValueError(f'camera {camera!r} is not one of {self.config.cameras}')
        if frame.dtype != np.uint8 or frame.shape != (h, w, 3):
            self.drops.add(
                PolicyDropReason.SHAPE,
                f'{camera}: {frame.shape} {frame.dtype}, expected ({h}, {w}, 3)',
            )
            return False
        with self._lock:
            self._frames[camera] = (int(stamp_ns), frame)
        return True

    def add_joints(self, names, positions, stamp_ns: int) -> bool:
        """A JointState's names and positions: one arm (7, `left_waist`..) or both (14)."""
        names = tuple(names)
        values = np.asarray(positions, dtype=np.float64)
        if values.shape != (len(names),):
            self.drops.add(
                PolicyDropReason.SHAPE, f'{len(names)} joint names, {values.shape} positions'
            )
            return False
        index = {name: i for i, name in enumerate(names)}
        sides = [s for s in SIDES if all(f'{s}_{j}' in index for j in ARM_JOINTS)]
        if not sides or len(names) != 7 * len(sides):
            self.drops.add(PolicyDropReason.JOINT_NAMES, f'{list(names)} match neither arm')
            return False
        if not np.isfinite(values).all():
            self.drops.add(PolicyDropReason.NON_FINITE, f'joint state {values.tolist()}')
            return False
        with self._lock:
            for side in sides:
                arm = values[[index[f'{side}_{j}'] for j in ARM_JOINTS]].astype(np.float32)
                self._joints[side].append((int(stamp_ns), arm))
        return True

    # -- the actor's side ------------------------------------------------------------------------

    def newest_stamp(self) -> int | None:
        with self._lock:
            if len(self._frames) < len(self.config.cameras):
                return None
            return min(stamp for stamp, _ in self._frames.values())

    def assemble(self, now_ns: int, *, after_ns: int = -1) -> Observation | None:
        """The newest complete observation stamped after `after_ns`, or None: not all inputs have
        arrived yet, nothing new, or a drop (counted once per frame set)."""
        cfg = self.config
        with self._lock:
            if len(self._frames) < len(cfg.cameras):
                return None
            stamps = [self._frames[c][0] for c in cfg.cameras]
            stamp = min(stamps)  # the oldest frame: the latency estimate stays conservative
            newest = max(stamps)  # any new frame makes a new frame set (a frozen camera counts)
            if newest <= self._judged_stamp:
                return None
            # Cameras publish one after another: a set that is skewed only because the others'
            # frames are still on their way is not judged until they had max_skew to arrive.
            max_skew_ns = cfg.max_skew_ms * 1e6
            if newest - stamp > max_skew_ns and now_ns - newest <= max_skew_ns:
                return None
            self._judged_stamp = newest
            images = {c: self._frames[c][1] for c in cfg.cameras}
            samples = {side: list(self._joints[side]) for side in SIDES}
        if newest - stamp > max_skew_ns:
            self.drops.add(PolicyDropReason.SKEW, f'camera stamps {stamps} ns')
            return None
        if stamp <= after_ns:
            return None  # the caller already used these frames
        if now_ns - stamp > cfg.max_age_ms * 1e6:
            self.drops.add(PolicyDropReason.STALE, f'frames {(now_ns - stamp) / 1e6:.0f} ms old')
            return None
        state = []
        for side in SIDES:
            if not samples[side]:
                return None  # joints not there yet: waiting, not a drop
            joint_stamp, arm = min(samples[side], key=lambda s: abs(s[0] - stamp))
            if abs(joint_stamp - stamp) > max_skew_ns:
                self.drops.add(
                    PolicyDropReason.SKEW, f'{side} joints {(joint_stamp - stamp) / 1e6:.0f} ms off'
                )
                return None
            state.append(arm)
        return Observation(stamp_ns=stamp, images=images, state=np.concatenate(state))
