"""Damped-least-squares inverse kinematics for one ViperX arm on a private MjData.

Used by the scripted expert to turn gripper waypoints into joint targets. It runs on its own MjData
(kinematics only), so it never touches the simulation being stepped.
"""

import mujoco
import numpy as np

from halo_ros.sim.scene import TCP_IN_GRIPPER, ArmIndex

# Near wrist angle 0 the forearm-roll and wrist-rotate axes are almost parallel, so only their sum
# is constrained and plain DLS lets them counter-rotate freely. Left alone, the right arm's reach
# drifted through half a turn to the other wrist branch (roll +-pi with the wrist angle negated: the
# same gripper pose), ending at +pi or -pi by chance (86 of 100 demonstrations): a policy that
# sees only images cannot tell the branches apart. A pull of the forearm roll towards zero in the
# null space of the task, at every iteration, keeps every solution on the roll ~ 0 branch.
REST = np.zeros(6)
REST_GAIN = np.array([0.0, 0.0, 0.0, 0.5, 0.0, 0.0])
# The continuous joints' MJCF range is +-3.14158 rad; the calibrated range of the arms is
# +-3.14 (calibration/*.yaml), and the expert's joint targets must be commands a robot accepts.
CALIBRATED_ROLL_RAD = 3.13  # a tick inside, so encoder rounding stays in range


class ArmIK:
    def __init__(
        self,
        model: mujoco.MjModel,
        arm: ArmIndex,
        *,
        damping: float = 5e-2,
        orientation_weight: float = 0.3,
    ):
        self._model = model
        self._data = mujoco.MjData(model)
        self._arm = arm
        self._damping = damping
        self._w_rot = orientation_weight  # metres per radian: trade position for orientation error
        self._limits = (
            np.maximum(arm.joint_range[:, 0], -CALIBRATED_ROLL_RAD),
            np.minimum(arm.joint_range[:, 1], CALIBRATED_ROLL_RAD),
        )
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def tcp_pose(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position (3,), quaternion wxyz (4,)) of the tool centre point at joint angles q (6,)."""
        self._data.qpos[self._arm.qpos] = q
        mujoco.mj_kinematics(self._model, self._data)
        body = self._data.body(self._arm.gripper_body)
        rot = body.xmat.reshape(3, 3)
        return body.xpos + rot @ TCP_IN_GRIPPER, body.xquat.copy()

    def solve(
        self,
        target_pos: np.ndarray,
        target_quat: np.ndarray,
        q_init: np.ndarray,
        *,
        iterations: int = 50,
        tolerance: float = 1e-4,
    ) -> np.ndarray:
        """Joint angles (6,) that put the TCP at target_pos with orientation target_quat."""
        q = q_init.astype(np.float64).copy()
        low, high = self._limits
        rot_err = np.zeros(3)
        for _ in range(iterations):
            pos, quat = self.tcp_pose(q)
            mujoco.mju_subQuat(rot_err, target_quat, quat)  # body-frame rotation error
            rot_err_world = self._data.body(self._arm.gripper_body).xmat.reshape(3, 3) @ rot_err
            err = np.concatenate([target_pos - pos, self._w_rot * rot_err_world])
            if np.linalg.norm(err) < tolerance:
                break
            mujoco.mj_comPos(self._model, self._data)
            point = pos
            mujoco.mj_jac(
                self._model, self._data, self._jacp, self._jacr, point, self._arm.gripper_body
            )
            jac = np.concatenate(
                [self._jacp[:, self._arm.dof], self._w_rot * self._jacr[:, self._arm.dof]]
            )
            inverse = jac.T @ np.linalg.inv(jac @ jac.T + self._damping**2 * np.eye(6))
            dq = inverse @ err
            dq += (np.eye(6) - inverse @ jac) @ (REST_GAIN * (REST - q))
            q = np.clip(q + dq, low, high)
        return q
