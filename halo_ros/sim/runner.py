"""The simulator as a running service: real-time physics, cameras, a scripted operator, episodes.

ROS-free; `nodes/sim_node.py` only wires it to topics. Physics runs on its own thread on a
monotonic deadline (one 20 ms control period per tick, or period / r at a real-time factor r);
cameras render on their own thread from physics snapshots; the scripted operator, when enabled,
moves the arms every tick.

Simulated time (`sim_time`): tick k of the run (episodes do not reset it) is
`start_ns + k * period`, start_ns the wall clock when the runner was made. With `sim_time` every
stamp (frames, joints) is on that clock and the node publishes it as /clock, so nodes with
use_sim_time run at the simulation's pace: at r = 0.1 a CPU policy looks ten times faster.
"""

import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from halo_ros.drivers.aloha_calibration import ArmName
from halo_ros.drivers.aloha_calibration import load as load_calibration
from halo_ros.drivers.aloha_motors import ArmModel, shaft_limits
from halo_ros.joints import SIDES
from halo_ros.paths import calibration_file
from halo_ros.sim.cameras import CameraRig, FrameSink, RenderLoop
from halo_ros.sim.expert import EPISODE_TICKS, TransferCubeExpert
from halo_ros.sim.expert_eval import command_to_shafts
from halo_ros.sim.scene import CAMERAS, Task
from halo_ros.sim.virtual_bus import FaultInjection, KinematicArm, start_virtual_buses
from halo_ros.sim.world import (
    GRIPPER_SHAFT_CLOSED_RAD,
    GRIPPER_SHAFT_OPEN_RAD,
    START_JOINTS,
    AlohaSim,
    normalized_to_leader_shaft,
    start_gripper,
)

log = logging.getLogger(__name__)


class Operator(Enum):
    """Who moves the arms inside the simulation."""

    NONE = 'none'  # nobody: arms move only through their servos (the virtual buses)
    LEADERS = 'leaders'  # the scripted expert moves the leader arms by hand (teleoperation)
    FOLLOWERS = 'followers'  # the scripted expert drives the followers directly (no controller)


@dataclass(frozen=True)
class SimConfig:
    task: Task = Task.TRANSFER_CUBE
    cameras: tuple[str, ...] = tuple(CAMERAS)
    # 240x320 at 15 Hz holds its rate on a 2-core machine with the policy running beside it
    # (3 cameras render at ~26 sets/s there when idle; see BENCHMARKS.md).
    width: int = 320
    height: int = 240
    camera_rate_hz: float = 15.0
    seed: int = 0
    operator: Operator = Operator.NONE
    # Serve the four arms as Dynamixel buses on pseudo-terminals (the ports in this calibration).
    virtual_buses: bool = False
    calibration: str = 'sim_aloha.yaml'
    # Simulated seconds per wall-clock second (<= 1); the cameras keep their rate in sim time.
    real_time_factor: float = 1.0
    # Stamp everything on the simulated clock (published as /clock) instead of the wall clock.
    sim_time: bool = False
    # SCHED_FIFO priority of the virtual buses' serving threads (0: normal): a USB adaptor and
    # its servos answer whatever the CPU does; an emulator thread would wait behind the load.
    # With it the GIL is handed over every 0.5 ms (not 5): a woken bus thread still needs it.
    bus_reply_priority: int = 0
    # Share of status packets sent with a broken CRC on every virtual bus (fault drills).
    bus_corrupt_probability: float = 0.0

    def __post_init__(self):
        if self.width < 16 or self.height < 16:
            raise ValueError(f'camera size {self.width}x{self.height} is too small (min 16x16)')
        if not 0 < self.camera_rate_hz <= 120:
            raise ValueError(f'camera_rate_hz {self.camera_rate_hz} must be in (0, 120]')
        if not 0 < self.real_time_factor <= 1:
            raise ValueError(f'real_time_factor {self.real_time_factor} must be in (0, 1]')
        if self.real_time_factor != 1 and not self.sim_time:
            raise ValueError(
                'real_time_factor below 1 needs sim_time: stamps on the wall clock would say '
                'the robot moves slowly, not that the world runs slowly'
            )
        if self.operator is Operator.FOLLOWERS and self.virtual_buses:
            raise ValueError(
                'operator=followers drives the followers directly and virtual_buses serves them to '
                'a controller: two masters for one arm; disable one of them'
            )
        unknown = set(self.cameras) - set(CAMERAS)
        if unknown:
            raise ValueError(f'unknown cameras {sorted(unknown)}; available: {sorted(CAMERAS)}')


@dataclass(frozen=True)
class EpisodeStatus:
    episode: int
    seed: int
    tick: int
    reward: int
    max_reward: int
    success: bool
    operator_done: bool  # the scripted operator has played its whole episode


@dataclass
class PeriodStats:
    """How well the physics thread kept its deadline."""

    ticks: int = 0
    late: int = 0  # ticks that started a whole period late
    worst_ms: float = 0.0
    errors_ms: list = field(default_factory=list)


HAND_SPEED_RAD_S = 4.0  # the scripted operator's fastest joint motion
_BUS_SWITCH_INTERVAL_S = 0.0005  # GIL hand-over with bus_reply_priority (see SimConfig)

TickSink = Callable[[AlohaSim, int], None]  # called on the physics thread after every step


class SimRunner:
    def __init__(
        self,
        config: SimConfig,
        *,
        on_frames: FrameSink | None = None,
        on_tick: TickSink | None = None,
    ):
        self.config = config
        self.sim = AlohaSim(config.task)
        # The leader arms are not in the MuJoCo scene: a human (here the scripted operator) holds
        # them, so they are kinematic shafts behind their own virtual buses, driven (when torque
        # is on) no faster than their servos' no-load speed.
        speed, _ = shaft_limits(ArmModel.WX250S)
        self.leaders = {
            f'leader_{side}': KinematicArm(f'leader_{side}', max_velocity_rad_s=speed)
            for side in SIDES
        }
        self.arms = {**self.sim.followers, **self.leaders}
        self._buses = {}
        self._expert = TransferCubeExpert(self.sim) if config.task is Task.TRANSFER_CUBE else None
        if config.operator is not Operator.NONE and self._expert is None:
            raise ValueError(f'no scripted operator exists for task {config.task.value}')
        self._on_frames = on_frames
        self._on_tick = on_tick
        self._stop = threading.Event()
        self._physics: threading.Thread | None = None
        self._render: RenderLoop | None = None
        self._rig_ready = threading.Event()
        self.intrinsics = {}
        self.period = PeriodStats()
        self._episode = 0
        self._reward = 0
        self._start_ns = time.time_ns()
        self._ticks_run = 0  # physics ticks since start: the simulated clock
        self.reset(config.seed)

    # -- episodes ---------------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> int:
        """Start a new episode; the seed defaults to the next one. Returns the seed used."""
        seed = self.sim.seed + 1 if seed is None else seed
        with self.sim.lock:
            self.sim.reset(seed)
            for leader in self.leaders.values():
                leader.place(np.append(START_JOINTS, normalized_to_leader_shaft(start_gripper())))
            if self._expert is not None:
                self._expert.reset(self.sim.object_position())
            self._episode += 1
            self._reward = 0
        log.info('episode %d: seed %d', self._episode, seed)
        return seed

    def sim_time_ns(self) -> int:
        """The simulated clock: start + ticks run x period (never reset by episodes)."""
        with self.sim.lock:
            return self._start_ns + round(self._ticks_run * self.sim.control_period_s * 1e9)

    def clock_ns(self) -> int:
        """What stamps are on: the simulated clock with sim_time, else the wall clock."""
        return self.sim_time_ns() if self.config.sim_time else time.time_ns()

    def status(self) -> EpisodeStatus:
        with self.sim.lock:
            tick = self.sim.tick
            return EpisodeStatus(
                self._episode,
                self.sim.seed,
                tick,
                self._reward,
                self.sim.max_reward,
                self._reward == self.sim.max_reward,
                self.config.operator is not Operator.NONE and tick >= EPISODE_TICKS,
            )

    # -- threads ----------------------------------------------------------------------------------

    def start(self, *, render_timeout_s: float = 30.0) -> None:
        if self.config.virtual_buses:
            if self.config.bus_reply_priority:
                sys.setswitchinterval(_BUS_SWITCH_INTERVAL_S)
            calibration = load_calibration(calibration_file(self.config.calibration))
            self._buses = start_virtual_buses(
                self.arms,
                calibration,
                reply_priority=self.config.bus_reply_priority,
                faults=FaultInjection(corrupt_probability=self.config.bus_corrupt_probability),
            )
            log.info(
                'virtual Dynamixel buses: %s',
                {name.value: bus.link for name, bus in self._buses.items()},
            )
        if self._on_frames is not None:
            self._render = RenderLoop(
                self._make_rig,
                self._snapshot,
                self._on_frames,
                rate_hz=self.config.camera_rate_hz * self.config.real_time_factor,
            )
            self._render.start()
            if not self._rig_ready.wait(render_timeout_s) or self._render.error is not None:
                raise RuntimeError(f'simulator cameras failed to start: {self._render.error}')
        self._physics = threading.Thread(target=self._physics_loop, name='sim-physics', daemon=True)
        self._physics.start()

    def stop(self) -> None:
        self._stop.set()
        if self._render is not None:
            self._render.stop()
            self._render.join(timeout=5)
        if self._physics is not None:
            self._physics.join(timeout=5)
        for bus in self._buses.values():
            bus.stop()
        self._buses = {}

    def set_unplugged(self, names) -> None:
        """Unplug the virtual buses of the named arms (their ptys vanish), replug the others."""
        names = {ArmName(n) for n in names}
        for name, bus in self._buses.items():
            if name in names and bus.plugged:
                bus.unplug()
                log.warning('%s: virtual bus unplugged', name.value)
            elif name not in names and not bus.plugged:
                bus.replug()
                log.warning('%s: virtual bus plugged back in', name.value)

    @property
    def frames_rendered(self) -> int:
        return self._render.frames if self._render else 0

    def _move_hand(self, leader: str, target: np.ndarray) -> None:
        # A hand moves at a human's speed: when it takes a leader over from the controller (a
        # released leader sits where the followers were), it does not teleport it to the script.
        arm = self.leaders[leader]
        step = HAND_SPEED_RAD_S * self.sim.control_period_s
        arm.move_by_hand(_hand_step(arm.read().position_rad, target, step))

    def _make_rig(self) -> CameraRig:
        rig = CameraRig(
            self.sim.model, self.config.cameras, width=self.config.width, height=self.config.height
        )
        self.intrinsics = {name: rig.intrinsics(name) for name in self.config.cameras}
        self._rig_ready.set()
        return rig

    def _snapshot(self) -> tuple[np.ndarray, int]:
        """(qpos, its stamp) for the renderer, taken together."""
        with self.sim.lock:
            return self.sim.snapshot(), self.clock_ns()

    def _physics_loop(self) -> None:
        period = self.sim.control_period_s / self.config.real_time_factor  # wall seconds
        deadline = time.monotonic()
        while not self._stop.is_set():
            delay = deadline - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            error_ms = (time.monotonic() - deadline) * 1e3
            self._record_period(error_ms, period)
            self.step()
            deadline += period
            if time.monotonic() - deadline > period:  # fell a whole period behind: resync
                deadline = time.monotonic()

    def _record_period(self, error_ms: float, period_s: float) -> None:
        stats = self.period
        stats.ticks += 1
        stats.late += error_ms >= period_s * 1e3
        stats.worst_ms = max(stats.worst_ms, error_ms)
        if len(stats.errors_ms) < 100_000:
            stats.errors_ms.append(error_ms)

    def step(self) -> None:
        """One control period: the operator acts, physics advances, the reward is updated.

        The operator's inverse kinematics runs outside the physics lock: the virtual buses read
        the arms under that lock, and a servo reply that waits several ms for it misses the
        driver's timeout.
        """
        with self.sim.lock:
            tick, cube = self.sim.tick, self.sim.object_position()
        command = None
        if self.config.operator is not Operator.NONE:
            command = self._expert.command(tick, cube)
        with self.sim.lock:
            if self.config.operator is Operator.FOLLOWERS:
                left, right = command_to_shafts(command)
                self.sim.followers['follower_left'].set_goal(left)
                self.sim.followers['follower_right'].set_goal(right)
            elif self.config.operator is Operator.LEADERS:
                left, right = command_to_shafts(command, normalized_to_leader_shaft)
                self._move_hand('leader_left', left)
                self._move_hand('leader_right', right)
            self.sim.step()
            self._ticks_run += 1
            # Contacts are cheap to scan but not free; 10 Hz is plenty for a staged reward.
            if tick % 5 == 0:
                self._reward = self.sim.reward()
        if self._on_tick is not None:
            self._on_tick(self.sim, tick)


def _hand_step(current: np.ndarray, target: np.ndarray, max_step: float) -> np.ndarray:
    return current + np.clip(target - current, -max_step, max_step)


def ground_truth_joints(sim: AlohaSim) -> tuple[np.ndarray, np.ndarray]:
    """(positions, velocities) of both followers as 14-vectors (joints.BIMANUAL_JOINTS), straight
    from physics (gripper 0 = closed .. 1 = open): for evaluation, never for control."""
    positions, velocities = [], []
    span = GRIPPER_SHAFT_OPEN_RAD - GRIPPER_SHAFT_CLOSED_RAD
    for side in SIDES:
        state = sim.followers[f'follower_{side}'].read()
        position = state.position_rad.copy()
        velocity = state.velocity_rad_s.copy()
        position[6] = (position[6] - GRIPPER_SHAFT_CLOSED_RAD) / span
        velocity[6] = velocity[6] / span
        positions.append(position)
        velocities.append(velocity)
    return np.concatenate(positions), np.concatenate(velocities)
