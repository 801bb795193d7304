"""A scripted bimanual transfer-cube expert, the demonstration source of the simulator.

In the spirit of ACT's scripted demos: gripper waypoints in the world frame (the right arm picks the
cube and lifts it to a meeting point, the left arm takes it from the side, the right arm lets go and
both retreat), turned into joint targets by inverse kinematics. Unlike ACT's open-loop script it
behaves like an operator watching the cube: while an arm reaches for the cube, the waypoints that
are defined relative to the cube follow where the cube really is (grasps are never exactly where
they were planned, and a cube can slip in the right gripper while the left one approaches).

Its output is the command space of the whole system, a 14-vector per 20 ms tick:
[left 6 joints (rad), left gripper (0 = closed .. 1 = open), right 6 joints, right gripper].
It plays the leader arms in simulated teleoperation and makes training data.
"""

from dataclasses import dataclass
from enum import Enum

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from halo_ros.sim.ik import ArmIK
from halo_ros.sim.world import START_JOINTS, AlohaSim

EPISODE_TICKS = 400  # 8 s at 50 Hz, as ACT's transfer-cube episodes
MEET_POINT = np.array([0.0, 0.5, 0.25])  # where the cube changes hands (world frame, metres)
OPEN, CLOSED = 1.0, 0.0


class Anchor(Enum):
    WORLD = 'world'
    CUBE = 'cube'  # offset from the cube's position as last seen by this arm


@dataclass(frozen=True)
class Waypoint:
    tick: int
    offset: np.ndarray  # (3,) TCP position relative to the anchor, metres
    rotation: Rotation  # gripper orientation, world frame
    gripper: float  # 0 = closed .. 1 = open
    anchor: Anchor = Anchor.WORLD


# Task phases by tick, for annotation and for the reasoning text the demo shows.
PHASES = (
    (0, 'reach for the cube with the right arm'),
    (130, 'grasp the cube with the right gripper'),
    (170, 'lift the cube and bring it to the middle'),
    (220, 'reach for the cube with the left arm'),
    (270, 'grasp the cube with the left gripper'),
    (300, 'release the cube from the right gripper'),
    (340, 'move both arms apart holding the cube in the left gripper'),
)


def phase_at(tick: int) -> str:
    return [text for start, text in PHASES if tick >= start][-1]


# How fast the operator's idea of where the cube is follows the cube while watching it (per tick):
# an estimate that jumps makes the arm jump.
_WATCH_GAIN = 0.2


class _ArmScript:
    """One arm's waypoints, followed tick by tick with warm-started IK."""

    def __init__(
        self,
        ik: ArmIK,
        waypoints: list[Waypoint],
        watch: tuple[int, int],
        expect: np.ndarray | None = None,
    ):
        self._ik = ik
        self._waypoints = waypoints
        self._watch = watch  # ticks [start, end) during which the arm follows the cube
        self._expect = expect  # where the cube is expected before watching (None: where it is)
        self._q = START_JOINTS.copy()
        self._cube = np.zeros(3)

    def reset(self, cube: np.ndarray) -> None:
        self._q = START_JOINTS.copy()
        self._cube = (cube if self._expect is None else self._expect).copy()

    def command(self, tick: int, cube: np.ndarray) -> np.ndarray:
        if self._watch[0] <= tick < self._watch[1]:
            self._cube = self._cube + _WATCH_GAIN * (cube - self._cube)
        tick = min(tick, self._waypoints[-1].tick)
        segments = zip(self._waypoints[:-1], self._waypoints[1:], strict=True)
        a, b = next((a, b) for a, b in segments if a.tick <= tick <= b.tick)
        s = (tick - a.tick) / max(1, b.tick - a.tick)
        position = (1 - s) * self._resolve(a) + s * self._resolve(b)
        slerp = Slerp([0.0, 1.0], Rotation.concatenate([a.rotation, b.rotation]))
        quat_wxyz = np.roll(slerp([s]).as_quat()[0], 1)
        self._q = self._ik.solve(position, quat_wxyz, self._q)
        return np.append(self._q, (1 - s) * a.gripper + s * b.gripper)

    def _resolve(self, waypoint: Waypoint) -> np.ndarray:
        return waypoint.offset + (self._cube if waypoint.anchor is Anchor.CUBE else 0.0)


class TransferCubeExpert:
    """A scripted operator for the transfer-cube task. `reset` once per episode, then
    `command(tick, cube_position)` every tick."""

    def __init__(self, sim: AlohaSim):
        left_ik = ArmIK(sim.model, sim.arms['left'])
        right_ik = ArmIK(sim.model, sim.arms['right'])
        self._left = _ArmScript(
            left_ik, _left_waypoints(_home(left_ik)), watch=(200, 285), expect=MEET_POINT
        )
        self._right = _ArmScript(right_ik, _right_waypoints(_home(right_ik)), watch=(0, 140))

    def reset(self, cube_position: np.ndarray) -> None:
        cube = np.asarray(cube_position, dtype=np.float64)
        self._left.reset(cube)
        self._right.reset(cube)

    def command(self, tick: int, cube_position: np.ndarray) -> np.ndarray:
        """The 14-vector command for this tick; holds the final pose after the episode ends."""
        cube = np.asarray(cube_position, dtype=np.float64)
        return np.concatenate([self._left.command(tick, cube), self._right.command(tick, cube)])


def _home(ik: ArmIK) -> Waypoint:
    position, quat_wxyz = ik.tcp_pose(START_JOINTS)
    return Waypoint(0, position, Rotation.from_quat(np.roll(quat_wxyz, -1)), CLOSED)


def _right_waypoints(home: Waypoint) -> list[Waypoint]:
    # Pitch the approach 60 degrees down about the gripper's own y axis (fingers close along world
    # y), so the fingers reach the cube's sides without the wrist touching the table. Keep that
    # orientation while carrying: turning the wrist with the cube in hand makes it slip.
    pick = home.rotation * Rotation.from_euler('y', 60, degrees=True)
    cube, world = Anchor.CUBE, Anchor.WORLD
    above, at = np.array([0.0, 0.0, 0.08]), np.array([0.0, 0.0, 0.005])
    return [
        home,
        Waypoint(90, above, pick, OPEN, cube),
        Waypoint(130, at, pick, OPEN, cube),
        Waypoint(170, at, pick, CLOSED, cube),
        Waypoint(200, MEET_POINT + [0.05, 0.0, 0.0], pick, CLOSED, world),
        Waypoint(220, MEET_POINT, pick, CLOSED, world),
        Waypoint(300, MEET_POINT, pick, CLOSED, world),
        Waypoint(320, MEET_POINT, pick, OPEN, world),
        Waypoint(360, MEET_POINT + [0.12, 0.0, 0.02], pick, OPEN, world),
        Waypoint(EPISODE_TICKS, MEET_POINT + [0.12, 0.0, 0.02], pick, OPEN, world),
    ]


def _left_waypoints(home: Waypoint) -> list[Waypoint]:
    # Roll 90 degrees about the approach axis: the left fingers close on the cube's top and bottom
    # faces while the right fingers hold its front and back.
    meet = home.rotation * Rotation.from_euler('x', 90, degrees=True)
    cube, world = Anchor.CUBE, Anchor.WORLD
    back = np.array([-0.12, 0.0, 0.0])
    away = MEET_POINT + [-0.12, 0.0, 0.02]
    return [
        home,
        Waypoint(120, MEET_POINT + back, meet, OPEN, world),
        Waypoint(220, back, meet, OPEN, cube),
        Waypoint(270, np.zeros(3), meet, OPEN, cube),
        Waypoint(300, np.zeros(3), meet, CLOSED, cube),
        Waypoint(320, np.zeros(3), meet, CLOSED, cube),
        Waypoint(360, away, home.rotation, CLOSED, world),
        Waypoint(EPISODE_TICKS, away, home.rotation, CLOSED, world),
    ]
