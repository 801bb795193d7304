"""Servo physics of the simulated followers: an arm that cannot outrun (or out-push) its servos.

gym-aloha's arm actuators are stiff position servos with force limits of 100-300 N m, fighting
joint friction of up to 60 N m: a wrist stuck on that friction lagged ~1 rad behind its goal and
then snapped after it at 15-35 rad/s, which no Dynamixel on an ALOHA can do. Here each follower
joint is what it is on the robot -- one or two X-series servos on its shaft (`aloha_motors`), each a
voltage-saturated DC motor behind a position P-loop:

    torque = clip(kp * (goal - q), -stall, +stall) - (stall / no_load_speed) * dq/dt

The clip is the actuator's force range (stall torque of the shaft's servos at 12 V), the second
term the back-EMF line -- at full voltage the torque falls to zero at the no-load speed -- as joint
damping, so no joint drives itself faster than its datasheet no-load speed. kp saturates the drive
at SATURATION_ERROR_RAD of position error; friction is a small share of stall torque. (The
damping stays while torque is off: a limp servo's gearbox resists back-driving too.)

The gripper's finger slides keep the asset's squeeze (at most ~7 N, below what the gripper servo
could do) as their saturation, with the same drive model through the linkage: saturated at the
same position error, full force falling to zero at the gripper servo's no-load speed; their goal
also slews at that speed (`MujocoArm.advance`).
"""

import mujoco
import numpy as np

from halo_ros.drivers.aloha_motors import ArmModel, shaft_limits
from halo_ros.sim.scene import ArmIndex

# [assumption] Position error at which the P-loop reaches full drive. The default Position P Gain
# (800) saturates the PWM at ~0.22 rad; 0.1 rad (a stiffer gain, as ALOHA builds tune them) keeps
# the scripted expert's grasps (at 0.2 rad the arms sag under the cube and 5 of 5 seeds fail).
SATURATION_ERROR_RAD = 0.1
# [assumption] Gearbox friction as a share of stall torque (270:1 and 353:1 spur gears).
FRICTION_SHARE = 0.05

NO_LOAD_RAD_S, STALL_NM = shaft_limits(ArmModel.VX300S)  # (7,) each; index 6: the gripper


def apply(model: mujoco.MjModel, index: ArmIndex, finger_m_per_rad: float) -> None:
    """Give one follower's six joints their servos' kp, force range, back-EMF and friction, and
    its fingers the same drive model through the gripper linkage (`finger_m_per_rad`)."""
    finger_max_m_s = NO_LOAD_RAD_S[6] * finger_m_per_rad
    stall, speed = STALL_NM[:6], NO_LOAD_RAD_S[:6]
    kp = stall / SATURATION_ERROR_RAD
    joints = index.actuators[:6]
    model.actuator_gainprm[joints, 0] = kp
    model.actuator_biasprm[joints, :3] = np.stack([np.zeros(6), -kp, np.zeros(6)], axis=1)
    model.actuator_forcelimited[joints] = 1
    model.actuator_forcerange[joints] = np.stack([-stall, stall], axis=1)
    model.dof_damping[index.dof] = stall / speed
    model.dof_frictionloss[index.dof] = FRICTION_SHARE * stall
    # Fingers: the asset's largest force (kp x the whole stroke, ~7 N) becomes their drive's
    # saturation, reached at the same position error as the joints' (through the linkage).
    fingers = index.actuators[6:]
    travel = np.abs(np.diff(model.actuator_ctrlrange[fingers[0]]))[0]
    full_force = model.actuator_gainprm[fingers[0], 0] * travel
    kp = full_force / (SATURATION_ERROR_RAD * finger_m_per_rad)
    model.actuator_gainprm[fingers, 0] = kp
    model.actuator_biasprm[fingers, 1] = -kp
    model.actuator_forcelimited[fingers] = 1
    model.actuator_forcerange[fingers] = [-full_force, full_force]
    finger_dofs = [model.jnt_dofadr[model.actuator_trnid[a, 0]] for a in fingers]
    model.dof_damping[finger_dofs] = full_force / finger_max_m_s
