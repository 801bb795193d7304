"""The controller's view of the robot: four arms behind one small interface.

`RobotArms` is the seam (as ros2_control's hardware interface): the loop's hot path only calls
`read` and `write`; torque, fault queries and reboots happen on mode switches. `ArmSetArms` puts
it on the Dynamixel driver (`ArmSet`: one sync read / one sync write per bus, buses in parallel);
the same code drives the virtual buses of the simulator and a real robot.
"""

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping

import numpy as np

from halo_ros.drivers.aloha_arm import ArmCommand, ArmState
from halo_ros.drivers.aloha_arm_set import ArmSet
from halo_ros.drivers.aloha_calibration import ArmName
from halo_ros.drivers.dynamixel.tables import HardwareError

log = logging.getLogger(__name__)

FOLLOWERS = (ArmName.FOLLOWER_LEFT, ArmName.FOLLOWER_RIGHT)
LEADERS = (ArmName.LEADER_LEFT, ArmName.LEADER_RIGHT)


_LEFT = (ArmName.FOLLOWER_LEFT, ArmName.LEADER_LEFT)


def arm_joints(name: ArmName) -> slice:
    """The arm's 7 entries in the 14-vector of its pair."""
    start = 0 if name in _LEFT else 7
    return slice(start, start + 7)


def join(states: Mapping[ArmName, np.ndarray], pair: tuple[ArmName, ArmName]) -> np.ndarray:
    """Two 7-vectors (left, right) -> the 14-vector of joints.BIMANUAL_JOINTS."""
    return np.concatenate([states[pair[0]], states[pair[1]]])


def split(vector: np.ndarray, pair: tuple[ArmName, ArmName]) -> dict[ArmName, np.ndarray]:
    return {pair[0]: vector[:7], pair[1]: vector[7:]}


class Poses:
    """The last fresh pose of each pair (14,), None until both arms of the pair read fresh."""

    def __init__(self):
        self.followers: np.ndarray | None = None
        self.leaders: np.ndarray | None = None

    def remember(self, states: Mapping[ArmName, ArmState]) -> None:
        if all(states[a].fresh for a in FOLLOWERS):
            self.followers = join({a: states[a].position() for a in FOLLOWERS}, FOLLOWERS)
        if all(states[a].fresh for a in LEADERS):
            self.leaders = join({a: states[a].position() for a in LEADERS}, LEADERS)


class RobotArms(ABC):
    """Four ALOHA arms. Called from the control thread only."""

    @abstractmethod
    def read(self) -> dict[ArmName, ArmState]:
        """One reading per arm (check `fresh`): all buses in one go."""

    @abstractmethod
    def write(self, commands: Mapping[ArmName, np.ndarray]) -> Mapping[ArmName, Exception] | None:
        """Goal positions (7-vectors: six joints in rad, normalised gripper) for the named arms;
        returns the arms whose write failed, with why (None or empty: all written)."""

    @abstractmethod
    def set_torque(self, names: Iterable[ArmName], enabled: bool) -> None:
        """Torque on (holding the present pose, no jump) or off (limp) for the named arms."""

    @abstractmethod
    def hardware_errors(self, names: Iterable[ArmName]) -> dict[ArmName, dict[int, HardwareError]]:
        """Latched hardware errors by arm and servo ID (arms without errors are left out)."""

    @abstractmethod
    def reboot(self, name: ArmName, ids: Iterable[int]) -> None:
        """Reboot servos of one arm to clear latched errors (their torque comes back as it was)."""


class ArmSetArms(RobotArms):
    def __init__(self, arm_set: ArmSet):
        missing = set(FOLLOWERS + LEADERS) - set(arm_set.arms)
        if missing:
            raise ValueError(
                f'the controller needs all four arms; the calibration lacks '
                f'{sorted(a.value for a in missing)}'
            )
        self.arm_set = arm_set

    def read(self) -> dict[ArmName, ArmState]:
        return self.arm_set.read()

    def write(self, commands: Mapping[ArmName, np.ndarray]) -> dict[ArmName, Exception]:
        return self.arm_set.write({n: ArmCommand.from_vector(v) for n, v in commands.items()})

    def set_torque(self, names: Iterable[ArmName], enabled: bool) -> None:
        # The control thread waits for every bus call, so no bus is ever used by two threads.
        for name in names:
            self.arm_set.arms[name].set_torque(enabled)

    def hardware_errors(self, names: Iterable[ArmName]) -> dict[ArmName, dict[int, HardwareError]]:
        errors = {}
        for name in names:
            found = self.arm_set.arms[name].hardware_errors()
            if found:
                errors[name] = found
        return errors

    def reboot(self, name: ArmName, ids: Iterable[int]) -> None:
        self.arm_set.arms[name].reboot(tuple(ids))

    def torque_enabled(self, name: ArmName) -> bool:
        return self.arm_set.arms[name].torque_enabled
