"""The controller's `RobotArms` seam straight on the simulator's shafts, without servo buses.

For `halo-ros eval`: the real `ControlLoop` (modes, policy ramp, watchdog, safety filter) drives
the simulated followers tick by tick, so a lockstep evaluation can advance the controller and
the physics together on the simulated clock. The virtual Dynamixel buses (what the ROS graph
uses) need threads answering on the wall clock; here reads and writes are plain calls. The
mapping is the one the buses and the calibration implement: shaft radians are joint radians,
the gripper motor angle maps linearly onto 0 = closed .. 1 = open.
"""

from collections.abc import Iterable, Mapping

import numpy as np

from halo_ros.control.arms import FOLLOWERS, LEADERS, RobotArms
from halo_ros.drivers.aloha_arm import ArmState
from halo_ros.drivers.aloha_calibration import ArmName
from halo_ros.drivers.dynamixel.tables import HardwareError
from halo_ros.sim.arm_io import SHAFTS, SimulatedArm
from halo_ros.sim.virtual_bus.kinematic_arm import KinematicArm
from halo_ros.sim.world import (
    GRIPPER_SHAFT_CLOSED_RAD,
    GRIPPER_SHAFT_OPEN_RAD,
    LEADER_GRIPPER_SHAFT_CLOSED_RAD,
    LEADER_GRIPPER_SHAFT_OPEN_RAD,
    START_JOINTS,
    AlohaSim,
    normalized_to_leader_shaft,
    start_gripper,
)

_GRIPPER_SHAFTS = {
    'follower': (GRIPPER_SHAFT_CLOSED_RAD, GRIPPER_SHAFT_OPEN_RAD),
    'leader': (LEADER_GRIPPER_SHAFT_CLOSED_RAD, LEADER_GRIPPER_SHAFT_OPEN_RAD),
}


class DirectArms(RobotArms):
    """Followers: the MuJoCo arms of `sim`; leaders: kinematic arms resting in the start pose
    (nobody holds them during an evaluation). `clock_ns` stamps the readings (monotonic ns)."""

    def __init__(self, sim: AlohaSim, clock_ns):
        start = np.append(START_JOINTS, normalized_to_leader_shaft(start_gripper()))
        self._arms: dict[ArmName, SimulatedArm] = {
            ArmName(name): arm for name, arm in sim.followers.items()
        }
        for name in LEADERS:
            self._arms[name] = KinematicArm(name.value, initial_position_rad=start)
        self._clock_ns = clock_ns

    def read(self) -> dict[ArmName, ArmState]:
        stamp = self._clock_ns()
        states = {}
        for name, arm in self._arms.items():
            shafts = arm.read()
            closed, opened = _GRIPPER_SHAFTS[_role(name)]
            span = opened - closed
            states[name] = ArmState(
                joint_position_rad=shafts.position_rad[:6].copy(),
                joint_velocity_rad_s=shafts.velocity_rad_s[:6].copy(),
                gripper_position=float((shafts.position_rad[6] - closed) / span),
                gripper_velocity_per_s=float(shafts.velocity_rad_s[6] / span),
                effort_ma=shafts.effort_ma.copy(),
                stamp_ns=stamp,
                fresh=True,
            )
        return states

    def write(self, commands: Mapping[ArmName, np.ndarray]) -> None:
        for name, command in commands.items():
            closed, opened = _GRIPPER_SHAFTS[_role(name)]
            goal = np.asarray(command, dtype=np.float64).copy()
            goal[6] = closed + goal[6] * (opened - closed)
            self._arms[name].set_goal(goal)

    def set_torque(self, names: Iterable[ArmName], enabled: bool) -> None:
        for name in names:
            self._arms[name].set_torque(np.full(SHAFTS, enabled))

    def hardware_errors(self, names: Iterable[ArmName]) -> dict[ArmName, dict[int, HardwareError]]:
        return {}  # simulated shafts never latch servo errors

    def reboot(self, name: ArmName, ids: Iterable[int]) -> None:
        pass  # nothing to clear (see hardware_errors)


def _role(name: ArmName) -> str:
    return 'follower' if name in FOLLOWERS else 'leader'
