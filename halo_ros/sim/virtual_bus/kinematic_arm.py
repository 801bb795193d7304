"""A physics-free SimulatedArm: shafts slew to their goals at a bounded speed while torque is on.

Stands in for the MuJoCo arm wherever only the bus matters (tests, `halo-ros virtual-bus`). With
torque off a shaft stays where it is unless a hand moves it: `move_by_hand()` is how a scripted
operator drives a leader arm. Motion is integrated lazily from the monotonic clock whenever the
arm is touched, so it needs no thread of its own.
"""

import threading
import time

import numpy as np

from halo_ros.sim.arm_io import SHAFTS, ShaftState, SimulatedArm

# Velocity Limit 131 x 0.229 rpm (Interbotix ALOHA motor configs) ~= 3.14 rad/s.
DEFAULT_MAX_VELOCITY_RAD_S = 3.14


class KinematicArm(SimulatedArm):
    def __init__(
        self,
        name: str,
        *,
        initial_position_rad: np.ndarray | None = None,
        max_velocity_rad_s: float | np.ndarray = DEFAULT_MAX_VELOCITY_RAD_S,
        clock=time.monotonic,
    ) -> None:
        """`max_velocity_rad_s`: one speed for every shaft or (7,) per shaft (e.g. the servos'
        no-load speeds, `aloha_motors.shaft_limits`)."""
        speed = np.broadcast_to(np.asarray(max_velocity_rad_s, np.float64), (SHAFTS,)).copy()
        if not (speed > 0).all():
            raise ValueError(f'max_velocity_rad_s must be > 0, got {max_velocity_rad_s}')
        self.name = name
        self.max_velocity_rad_s = speed
        self._clock = clock
        self._lock = threading.Lock()
        start = (
            np.zeros(SHAFTS)
            if initial_position_rad is None
            else _shafts(initial_position_rad, 'initial_position_rad')
        )
        self._position = start.copy()
        self._velocity = np.zeros(SHAFTS)
        self._goal = start.copy()
        self._torque = np.zeros(SHAFTS, bool)
        self._last = clock()

    def read(self) -> ShaftState:
        with self._lock:
            self._advance()
            return ShaftState(
                position_rad=self._position.copy(),
                velocity_rad_s=self._velocity.copy(),
                effort_ma=np.zeros(SHAFTS),
            )

    def set_goal(self, position_rad: np.ndarray) -> None:
        goal = _shafts(position_rad, 'position_rad')
        with self._lock:
            self._advance()
            self._goal = goal

    def set_torque(self, enabled: np.ndarray) -> None:
        enabled = np.asarray(enabled, bool)
        if enabled.shape != (SHAFTS,):
            raise ValueError(f'enabled must have shape ({SHAFTS},), got {enabled.shape}')
        with self._lock:
            self._advance()
            self._torque = enabled.copy()

    def move_by_hand(self, position_rad: np.ndarray) -> None:
        """Put the limp (torque-off) shafts where a hand holds them; held shafts do not give."""
        target = _shafts(position_rad, 'position_rad')
        with self._lock:
            self._advance()
            limp = ~self._torque
            self._position[limp] = target[limp]

    def place(self, position_rad: np.ndarray) -> None:
        """Put every shaft at `position_rad` at rest, goal included (a simulation reset)."""
        position = _shafts(position_rad, 'position_rad')
        with self._lock:
            self._last = self._clock()
            self._position, self._goal = position.copy(), position.copy()
            self._velocity = np.zeros(SHAFTS)

    def _advance(self) -> None:
        now = self._clock()
        dt = now - self._last
        self._last = now
        if dt <= 0:
            return
        step = np.clip(
            self._goal - self._position, -self.max_velocity_rad_s * dt, self.max_velocity_rad_s * dt
        )
        step[~self._torque] = 0.0
        self._position += step
        self._velocity = step / dt


def _shafts(value, name: str) -> np.ndarray:
    array = np.asarray(value, np.float64)
    if array.shape != (SHAFTS,):
        raise ValueError(f'{name} must have shape ({SHAFTS},), got {array.shape}')
    if not np.all(np.isfinite(array)):
        raise ValueError(f'{name} must be finite, got {array}')
    return array.copy()
