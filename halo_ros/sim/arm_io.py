"""The seam between a simulated arm and whatever drives it (the virtual Dynamixel bus).

A real ALOHA arm is seven motor shafts as far as the servos know: six joints plus the gripper
motor. The simulator exposes each of its four arms (follower/leader x left/right) the same way, in
*shaft radians*: joint angles for indices 0-5 and the gripper motor's angle for index 6. How shaft
radians become servo ticks (offsets, drive directions, shadow motors) is the servo's business and
lives in the virtual bus, exactly as it lives in the hardware; how the gripper motor angle becomes
finger travel is the simulator's business, exactly as it is the gripper linkage's.

Implementations must be thread-safe: the virtual bus calls them from its own serial thread while
the simulator steps physics on another.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from halo_ros.joints import ARM_JOINTS

SHAFT_NAMES = ARM_JOINTS  # the gripper shaft is the gripper motor
SHAFTS = len(SHAFT_NAMES)


@dataclass(frozen=True)
class ShaftState:
    """One reading of an arm's shafts, as its servos would measure them."""

    position_rad: np.ndarray  # (7,) float64
    velocity_rad_s: np.ndarray  # (7,) float64
    effort_ma: np.ndarray  # (7,) float64, motor current in mA (signed, as Present Current)


class SimulatedArm(ABC):
    """An arm the virtual bus can sit on. Three methods, all cheap and thread-safe."""

    name: str  # 'follower_left', 'follower_right', 'leader_left', 'leader_right'

    @abstractmethod
    def read(self) -> ShaftState:
        """The newest shaft state. Never blocks on physics."""

    @abstractmethod
    def set_goal(self, position_rad: np.ndarray) -> None:
        """Goal Position for the 7 shafts; only acted on while torque is enabled."""

    @abstractmethod
    def set_torque(self, enabled: np.ndarray) -> None:
        """Torque Enable per shaft, (7,) bool. Off means the shaft is back-drivable (limp)."""
