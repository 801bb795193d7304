"""Motion primitives from proprioception: per arm and per control tick, is the arm moving, is
the gripper opening or closing, and which manipulation phase that makes.

Inputs are the follower positions on the control grid (`resample.AlignedEpisode.state`):
6 joints in rad and the gripper normalised 0 = closed .. 1 = open. Velocities are central
differences of a moving average, so joint-state noise of a few mrad does not read as motion.

Phases, per arm:
    reach     arm moving, gripper open, a grasp still to come
    grasp     gripper closing
    transfer  arm moving with the gripper closed (holding)
    release   gripper opening
    retreat   arm moving, gripper open, no grasp to come
    hold      still with the gripper closed
    idle      still with the gripper open
Stretches shorter than `min_phase_s` are merged into the phase before them (the pauses where a
smooth motion slows down before the gripper acts, for example).
"""

import enum
from dataclasses import dataclass

import numpy as np


class Phase(enum.Enum):
    IDLE = 'idle'
    REACH = 'reach'
    GRASP = 'grasp'
    TRANSFER = 'transfer'
    RELEASE = 'release'
    RETREAT = 'retreat'
    HOLD = 'hold'


class Gripper(enum.Enum):
    OPENING = 'opening'
    CLOSING = 'closing'
    STILL = 'still'


@dataclass(frozen=True)
class PrimitiveThresholds:
    # Joint-space speed (norm over the 6 joints) above which an arm counts as moving. ALOHA
    # teleop moves at 0.3-2 rad/s; servo noise after smoothing stays below ~0.03 rad/s.
    arm_speed_rad_s: float = 0.08
    # Normalised gripper speed (full stroke = 1) above which it is opening or closing; a full
    # close takes 0.3-1 s on ALOHA, i.e. 1-3 /s.
    gripper_speed_per_s: float = 0.25
    # A gripper that starts the recording stopped between these openings is taken to hold
    # something (only an object stops it partway); nearly shut (the ALOHA rest pose, 0.1) or open
    # means empty-handed.
    holding_between: tuple[float, float] = (0.15, 0.85)
    # A gripper motion that changes the opening by less than this is a wobble, not a grasp or a
    # release (fingers on an object give a little when the arm accelerates).
    min_gripper_stroke: float = 0.08
    # Phases shorter than this merge into the previous one.
    min_phase_s: float = 0.15
    # Moving-average window before differentiating.
    smoothing_s: float = 0.1

    def __post_init__(self):
        for name in ('arm_speed_rad_s', 'gripper_speed_per_s', 'min_phase_s', 'smoothing_s'):
            if not getattr(self, name) > 0:
                raise ValueError(
                    f'PrimitiveThresholds.{name} must be > 0, got {getattr(self, name)}'
                )


@dataclass(frozen=True)
class ArmPrimitives:
    arm_speed_rad_s: np.ndarray  # (T,)
    gripper_speed_per_s: np.ndarray  # (T,) signed, + = opening
    moving: np.ndarray  # (T,) bool
    gripper: tuple[Gripper, ...]  # (T,)
    closed: np.ndarray  # (T,) bool, holding (or closed empty)
    phase: tuple[Phase, ...]  # (T,)


def _smooth(x: np.ndarray, window: int) -> np.ndarray:
    if window <= 1:
        return x
    kernel = np.ones(window) / window
    padded = np.pad(
        x, [(window // 2, window - 1 - window // 2)] + [(0, 0)] * (x.ndim - 1), mode='edge'
    )
    return np.apply_along_axis(lambda c: np.convolve(c, kernel, mode='valid'), 0, padded)


def runs(labels) -> list[tuple[object, int, int]]:
    """(label, start, end) for each run of equal labels; end is inclusive."""
    out = []
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            out.append((labels[start], start, i - 1))
            start = i
    return out


def merge_short_runs(labels: list, min_len: int) -> list:
    """Relabel runs shorter than `min_len` with the previous run's label (the next one's for a
    short first run), until none is left."""
    labels = list(labels)
    while True:
        rs = runs(labels)
        short = [k for k, (_, s, e) in enumerate(rs) if e - s + 1 < min_len]
        if not short or len(rs) == 1:
            return labels
        k = short[0]
        label = rs[k - 1][0] if k > 0 else rs[k + 1][0]
        for i in range(rs[k][1], rs[k][2] + 1):
            labels[i] = label


def _drop_wobbles(gripper: tuple, opening: np.ndarray, min_stroke: float) -> tuple:
    labels = list(gripper)
    for label, start, end in runs(labels):
        if label is not Gripper.STILL and abs(opening[end] - opening[start]) < min_stroke:
            labels[start : end + 1] = [Gripper.STILL] * (end - start + 1)
    return tuple(labels)


def arm_primitives(
    q: np.ndarray, fps: float, thresholds: PrimitiveThresholds = PrimitiveThresholds()
) -> ArmPrimitives:
    """Primitives of one arm from its (T, 7) positions [6 joints rad, gripper 0..1]."""
    q = np.asarray(q, np.float64)
    if q.ndim != 2 or q.shape[1] != 7 or len(q) < 3:
        raise ValueError(f'arm positions must be (T >= 3, 7), got {q.shape}')
    if not np.all(np.isfinite(q)):
        raise ValueError('arm positions contain NaN or inf')
    th = thresholds
    qs = _smooth(q, max(1, round(th.smoothing_s * fps)))
    vel = np.gradient(qs, 1.0 / fps, axis=0)
    speed = np.linalg.norm(vel[:, :6], axis=1)
    grip_speed = vel[:, 6]
    moving = speed > th.arm_speed_rad_s
    gripper = tuple(
        Gripper.OPENING
        if v > th.gripper_speed_per_s
        else Gripper.CLOSING
        if v < -th.gripper_speed_per_s
        else Gripper.STILL
        for v in grip_speed
    )
    gripper = _drop_wobbles(gripper, qs[:, 6], th.min_gripper_stroke)
    # Closed = holding: set by a closing motion, cleared by an opening one. The opening alone
    # cannot tell, since a gripper closed on an object stops wherever the object is (a cube in
    # the ALOHA sim leaves it half open). Before the first motion, `holding_between` decides;
    # an opening that starts empty-handed is part of reaching, not a release.
    closed = np.empty(len(q), bool)
    low, high = th.holding_between
    state = bool(low < qs[0, 6] < high)
    for t, g in enumerate(gripper):
        state = True if g is Gripper.CLOSING else False if g is Gripper.OPENING else state
        closed[t] = state
    # A release is an opening that starts while holding, and lasts as long as the opening does.
    releasing = np.zeros(len(q), bool)
    for t in range(1, len(q)):
        releasing[t] = gripper[t] is Gripper.OPENING and (closed[t - 1] or releasing[t - 1])
    n = len(q)
    grasp_ahead = np.zeros(n, bool)  # a closing happens at or after t
    seen = False
    for t in range(n - 1, -1, -1):
        seen = seen or gripper[t] is Gripper.CLOSING
        grasp_ahead[t] = seen
    raw = []
    for t in range(n):
        if gripper[t] is Gripper.CLOSING:
            raw.append(Phase.GRASP)
        elif releasing[t]:
            raw.append(Phase.RELEASE)
        elif moving[t]:
            raw.append(
                Phase.TRANSFER if closed[t] else Phase.REACH if grasp_ahead[t] else Phase.RETREAT
            )
        else:
            raw.append(Phase.HOLD if closed[t] else Phase.IDLE)
    phase = merge_short_runs(raw, max(1, round(th.min_phase_s * fps)))
    return ArmPrimitives(speed, grip_speed, moving, gripper, closed, tuple(phase))


MOVEMENT_TEXT = {
    Phase.IDLE: 'stay still',
    Phase.HOLD: 'hold the gripper closed and stay still',
    Phase.REACH: 'move the arm towards the target with the gripper open',
    Phase.GRASP: 'close the gripper',
    Phase.TRANSFER: 'move the arm while holding the object',
    Phase.RELEASE: 'open the gripper',
    Phase.RETREAT: 'move the arm away with the gripper open',
}


def movement_text(p: ArmPrimitives, t: int) -> str:
    """The per-tick movement line HALO trains on (`[LEFT]: ...` / `[RIGHT]: ...`)."""
    return MOVEMENT_TEXT[p.phase[t]]
