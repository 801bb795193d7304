"""The simulated ALOHA: MuJoCo physics of the two followers and the task objects.

ROS-free. Physics advances in control periods (10 x 2 ms substeps per 20 ms) under one lock; the
arms are reachable only through `SimulatedArm` objects (the seam the virtual Dynamixel bus sits on),
and cameras render from snapshots so rendering never holds the physics lock for long. The
followers' joints have their servos' torque and speed (`servo_model`: datasheet stall torque and
no-load speed at 12 V), so what works here is what the hardware can do.
"""

import logging
import threading

import mujoco
import numpy as np

from halo_ros.sim import servo_model
from halo_ros.sim.arm_io import SHAFTS, ShaftState, SimulatedArm
from halo_ros.sim.scene import (
    ARM_SIDES,
    FINGER_CLOSED_M,
    FINGER_OPEN_M,
    ArmIndex,
    Task,
    arm_index,
    load_model,
)

log = logging.getLogger(__name__)

# The ALOHA start pose (gym-aloha/ACT): arms folded, grippers nearly closed.
START_JOINTS = np.array([0.0, -0.96, 1.16, 0.0, -0.3, 0.0])
START_FINGER_M = 0.02239

# ViperX gripper motor angle at fully closed / open fingers (ACT's PUPPET_GRIPPER_JOINT_*): the
# linkage between the gripper servo and the finger slides, a property of the (simulated) hardware.
GRIPPER_SHAFT_CLOSED_RAD = -0.6213
GRIPPER_SHAFT_OPEN_RAD = 1.4910

# WidowX leader gripper handle angle at closed / open (ACT's MASTER_GRIPPER_JOINT_*).
LEADER_GRIPPER_SHAFT_CLOSED_RAD = -0.6842
LEADER_GRIPPER_SHAFT_OPEN_RAD = 0.3083

# Object placement ranges (metres, world frame), as in gym-aloha/ACT.
CUBE_RANGE = np.array([[0.0, 0.2], [0.4, 0.6], [0.05, 0.05]])
PEG_RANGE = np.array([[0.1, 0.2], [0.4, 0.6], [0.05, 0.05]])
SOCKET_RANGE = np.array([[-0.2, -0.1], [0.4, 0.6], [0.05, 0.05]])

SETTLE_S = 0.3  # physics time for dropped objects to come to rest at reset

# Approximate Dynamixel torque constants to express actuator torque as Present Current: XM540-W270
# (arm joints; stall 10.6 N m at 4.4 A) and XM430-W350 (gripper; stall 4.1 N m at 2.3 A).
_JOINT_NM_PER_AMP = 2.4
_GRIPPER_NM_PER_AMP = 1.78
# Motors per joint shaft: the ViperX 300 S drives shoulder and elbow with two servos each.
_MOTORS_PER_SHAFT = np.array([1, 2, 2, 1, 1, 1])
# MuJoCo's stiff position actuators and the asset's large joint friction (frictionloss 60 N m on
# the shoulder) are not a motor model: their forces, read as current, exceed what a servo can
# draw. Present Current is saturated below the XM540's default Current Limit (1193 x 2.69 mA) as
# the real servo saturates, so overload protection trips only where a servo could really stall
# (the gripper on an object) or through explicit fault injection in tests.
_JOINT_CURRENT_MAX_MA = 0.9 * 1193 * 2.69

# Finger travel per radian of the gripper motor: the linkage turns finger force into motor torque.
_FINGER_M_PER_RAD = (FINGER_OPEN_M - FINGER_CLOSED_M) / (
    GRIPPER_SHAFT_OPEN_RAD - GRIPPER_SHAFT_CLOSED_RAD
)


def finger_to_shaft(finger_m: float) -> float:
    frac = (finger_m - FINGER_CLOSED_M) / (FINGER_OPEN_M - FINGER_CLOSED_M)
    return GRIPPER_SHAFT_CLOSED_RAD + frac * (GRIPPER_SHAFT_OPEN_RAD - GRIPPER_SHAFT_CLOSED_RAD)


def shaft_to_finger(shaft_rad: float) -> float:
    frac = (shaft_rad - GRIPPER_SHAFT_CLOSED_RAD) / (
        GRIPPER_SHAFT_OPEN_RAD - GRIPPER_SHAFT_CLOSED_RAD
    )
    return FINGER_CLOSED_M + frac * (FINGER_OPEN_M - FINGER_CLOSED_M)


def normalized_to_shaft(gripper: float) -> float:
    """Gripper command 0 = closed .. 1 = open (finger travel) -> gripper motor angle."""
    return finger_to_shaft(FINGER_CLOSED_M + gripper * (FINGER_OPEN_M - FINGER_CLOSED_M))


def start_gripper() -> float:
    """The grippers' normalised opening in the start pose."""
    return (START_FINGER_M - FINGER_CLOSED_M) / (FINGER_OPEN_M - FINGER_CLOSED_M)


def normalized_to_leader_shaft(gripper: float) -> float:
    """Gripper 0 = closed .. 1 = open -> the leader's gripper handle angle."""
    span = LEADER_GRIPPER_SHAFT_OPEN_RAD - LEADER_GRIPPER_SHAFT_CLOSED_RAD
    return LEADER_GRIPPER_SHAFT_CLOSED_RAD + gripper * span


class AlohaSim:
    """MuJoCo ALOHA world: reset with a seed, step one control period, read task reward."""

    def __init__(self, task: Task = Task.TRANSFER_CUBE, *, control_period_s: float = 0.02):
        self.task = task
        self.model = load_model(task)
        self.data = mujoco.MjData(self.model)
        self.lock = threading.RLock()
        self.substeps = max(1, round(control_period_s / self.model.opt.timestep))
        self.control_period_s = self.substeps * self.model.opt.timestep
        self.arms: dict[str, ArmIndex] = {side: arm_index(self.model, side) for side in ARM_SIDES}
        self.followers = {f'follower_{side}': MujocoArm(self, side) for side in ARM_SIDES}
        self._contacts = _ContactNames(self.model)
        self.tick = 0
        self.seed: int | None = None
        self.reset(0)

    @property
    def max_reward(self) -> int:
        return 4

    def reset(self, seed: int) -> np.ndarray:
        """Arms to the start pose, objects to a seeded placement, settled on the table.

        Returns the object poses as sampled (before settling).
        """
        rng = np.random.default_rng(seed)
        with self.lock:
            mujoco.mj_resetData(self.model, self.data)
            for arm in self.arms.values():
                self.data.qpos[arm.qpos] = START_JOINTS
                self.data.qpos[arm.finger_qpos] = START_FINGER_M
                self.data.qpos[arm.finger_qpos + 1] = -START_FINGER_M
                self.data.ctrl[arm.actuators[:6]] = START_JOINTS
                self.data.ctrl[arm.actuators[6]] = START_FINGER_M
                self.data.ctrl[arm.actuators[7]] = -START_FINGER_M
            poses = self._sample_objects(rng)
            self.data.qpos[-len(poses) :] = poses
            mujoco.mj_forward(self.model, self.data)
            for arm in self.followers.values():
                arm.restore_torque()
                arm.hold_fingers()
            # Objects are placed a little above the table; let them land before tick 0 so the
            # first observation is already at rest (the arms hold the start pose meanwhile).
            mujoco.mj_step(self.model, self.data, nstep=round(SETTLE_S / self.model.opt.timestep))
            self.data.time = 0.0
            self.tick = 0
            self.seed = seed
        return poses

    def _sample_objects(self, rng: np.random.Generator) -> np.ndarray:
        identity = np.array([1.0, 0.0, 0.0, 0.0])
        if self.task is Task.TRANSFER_CUBE:
            return np.concatenate([rng.uniform(*CUBE_RANGE.T), identity])
        peg = np.concatenate([rng.uniform(*PEG_RANGE.T), identity])
        socket = np.concatenate([rng.uniform(*SOCKET_RANGE.T), identity])
        return np.concatenate([peg, socket])

    def object_position(self, index: int = 0) -> np.ndarray:
        with self.lock:
            start = self.model.nq - 7 * (1 if self.task is Task.TRANSFER_CUBE else 2)
            return self.data.qpos[start + 7 * index : start + 7 * index + 3].copy()

    def step(self) -> None:
        """Advance one control period."""
        with self.lock:
            for arm in self.followers.values():
                arm.advance(self.control_period_s)
            mujoco.mj_step(self.model, self.data, nstep=self.substeps)
            self.tick += 1

    def snapshot(self) -> np.ndarray:
        """A copy of qpos for rendering without the physics lock."""
        with self.lock:
            return self.data.qpos.copy()

    def reward(self) -> int:
        with self.lock:
            pairs = self._contacts.pairs(self.data)
        return _task_reward(self.task, pairs)

    def success(self) -> bool:
        return self.reward() == self.max_reward


class MujocoArm(SimulatedArm):
    """A follower arm whose shafts are MuJoCo joints driven by position actuators."""

    # The gripper servo's no-load speed as finger travel (the finger slides are not servos).
    FINGER_MAX_M_S = servo_model.NO_LOAD_RAD_S[6] * _FINGER_M_PER_RAD

    def __init__(self, sim: AlohaSim, side: str):
        self.name = f'follower_{side}'
        self._sim = sim
        self._index = sim.arms[side]
        model = sim.model
        servo_model.apply(model, self._index, _FINGER_M_PER_RAD)
        self._gain = model.actuator_gainprm[self._index.actuators, 0].copy()
        self._bias = model.actuator_biasprm[self._index.actuators, :3].copy()
        self._torque = np.ones(SHAFTS, dtype=bool)
        self._finger_goal = START_FINGER_M

    def read(self) -> ShaftState:
        idx, data = self._index, self._sim.data
        with self._sim.lock:
            position = np.append(data.qpos[idx.qpos], finger_to_shaft(data.qpos[idx.finger_qpos]))
            finger_speed = data.qvel[idx.finger_dof] * (
                (GRIPPER_SHAFT_OPEN_RAD - GRIPPER_SHAFT_CLOSED_RAD)
                / (FINGER_OPEN_M - FINGER_CLOSED_M)
            )
            velocity = np.append(data.qvel[idx.dof], finger_speed)
            force = data.actuator_force[idx.actuators]
        joint_ma = force[:6] / (_JOINT_NM_PER_AMP * _MOTORS_PER_SHAFT) * 1000.0
        joint_ma = np.clip(joint_ma, -_JOINT_CURRENT_MAX_MA, _JOINT_CURRENT_MAX_MA)
        # Both finger slides hang on the one gripper motor (the right one mirrored).
        gripper_nm = (force[6] - force[7]) * _FINGER_M_PER_RAD
        return ShaftState(
            position, velocity, np.append(joint_ma, gripper_nm / _GRIPPER_NM_PER_AMP * 1e3)
        )

    def set_goal(self, position_rad: np.ndarray) -> None:
        position_rad = np.asarray(position_rad, dtype=np.float64)
        with self._sim.lock:
            self._sim.data.ctrl[self._index.actuators[:6]] = position_rad[:6]
            self._finger_goal = shaft_to_finger(position_rad[6])

    def advance(self, period_s: float) -> None:
        """The fingers' goal one control period closer to the servo's (caller holds the lock)."""
        ctrl = self._sim.data.ctrl
        now = ctrl[self._index.actuators[6]]
        step = self.FINGER_MAX_M_S * period_s
        finger = now + np.clip(self._finger_goal - now, -step, step)
        ctrl[self._index.actuators[6]] = finger
        ctrl[self._index.actuators[7]] = -finger

    def hold_fingers(self) -> None:
        """The fingers' goal is where their actuators point now (after a reset)."""
        self._finger_goal = float(self._sim.data.ctrl[self._index.actuators[6]])

    def set_torque(self, enabled: np.ndarray) -> None:
        enabled = np.asarray(enabled, dtype=bool)
        # A servo with torque off is back-drivable: zero its actuator's stiffness. The gripper
        # shaft drives both finger actuators.
        per_actuator = np.append(enabled, enabled[6])
        with self._sim.lock:
            model = self._sim.model
            model.actuator_gainprm[self._index.actuators, 0] = np.where(
                per_actuator, self._gain, 0.0
            )
            model.actuator_biasprm[self._index.actuators, :3] = np.where(
                per_actuator[:, None], self._bias, 0.0
            )
            self._torque = enabled.copy()

    def restore_torque(self) -> None:
        self.set_torque(np.ones(SHAFTS, dtype=bool))


class _ContactNames:
    """Contact pairs as geom names, with the id -> name table built once."""

    def __init__(self, model: mujoco.MjModel):
        self._names = [model.geom(i).name for i in range(model.ngeom)]

    def pairs(self, data: mujoco.MjData) -> set[tuple[str, str]]:
        contacts = data.contact
        return {
            (self._names[a], self._names[b])
            for a, b in zip(contacts.geom1, contacts.geom2, strict=True)
        }


def _touching(pairs: set, a: str, b: str) -> bool:
    return (a, b) in pairs or (b, a) in pairs


def _task_reward(task: Task, pairs: set) -> int:
    """gym-aloha's staged rewards (0-4), from the current contacts."""
    if task is Task.TRANSFER_CUBE:
        right = _touching(pairs, 'red_box', 'vx300s_right/10_right_gripper_finger')
        left = _touching(pairs, 'red_box', 'vx300s_left/10_left_gripper_finger')
        on_table = _touching(pairs, 'red_box', 'table')
        if left:
            return 3 if on_table else 4
        if right:
            return 1 if on_table else 2
        return 0
    sockets = [f'socket-{i}' for i in range(1, 5)]
    right = _touching(pairs, 'red_peg', 'vx300s_right/10_right_gripper_finger')
    left = any(_touching(pairs, s, 'vx300s_left/10_left_gripper_finger') for s in sockets)
    peg_on_table = _touching(pairs, 'red_peg', 'table')
    socket_on_table = any(_touching(pairs, s, 'table') for s in sockets)
    lifted = not peg_on_table and not socket_on_table
    if _touching(pairs, 'red_peg', 'pin'):
        return 4
    if any(_touching(pairs, 'red_peg', s) for s in sockets) and lifted:
        return 3
    if left and right:
        return 2 if lifted else 1
    return 0
