"""Shared set-up for the controller tests: four virtual ALOHA arms and a primed control loop."""

from contextlib import contextmanager

import numpy as np

from halo_ros.control.arms import ArmSetArms
from halo_ros.control.chunks import ChunkError, make_chunk
from halo_ros.control.config import load_config
from halo_ros.control.loop import ControlLoop
from halo_ros.drivers.aloha_arm_set import ArmSet
from halo_ros.drivers.aloha_calibration import load
from halo_ros.joints import ARMS, BIMANUAL_JOINTS
from halo_ros.paths import calibration_file
from halo_ros.sim.virtual_bus import KinematicArm, start_virtual_buses

MS = 1_000_000
PERIOD_NS = 20 * MS
START = np.array([0.0, -0.96, 1.16, 0.0, -0.3, 0.0, 0.5])  # shafts of every arm, rad


@contextmanager
def virtual_robot(run_dir, **config):
    """(loop, kinematic arms by name, virtual buses by ArmName): a primed loop, not started."""
    environ = {'HALO_ROS_RUN_DIR': str(run_dir)}
    calibration = load(calibration_file('sim_aloha.yaml'), environ=environ)
    arms = {name: KinematicArm(name, initial_position_rad=START) for name in ARMS}
    buses = start_virtual_buses(arms, calibration)
    arm_set = ArmSet.from_file(calibration_file('sim_aloha.yaml'), environ=environ)
    loop = None
    try:
        arm_set.configure()
        arm_set.activate()
        # The buses are served by threads of this process: on an overloaded machine a few reads
        # in a row can time out, which must not end a scenario that is not about read failures.
        config.setdefault('max_consecutive_read_failures', 25)
        # Most scenarios tick on a synthetic clock faster than the arms move in real time: the
        # following error they see is the harness's, not the robot's. Tests of it set their own.
        config.setdefault('path_tolerance_rad', (10.0,) * 6)
        loop = ControlLoop(ArmSetArms(arm_set), load_config(**config), calibration)
        loop.prime()
        yield loop, arms, buses
    finally:
        if loop is not None:
            loop.stop()
        arm_set.close()
        for bus in buses.values():
            bus.stop()


def offer(loop, names, positions, **timing) -> bool:
    """What the node does with a message: validate, count a refusal, else hand it to the loop."""
    try:
        chunk = make_chunk(names, positions, **timing)
    except ChunkError as error:
        loop.count_rejection(error.reason)
        return False
    return loop.submit_chunk(chunk) is not False


def smooth_chunk(base, start_s, points=50, amplitude=0.1, dt_s=0.02):
    """(points, 14): base + a slow sine in absolute time, so successive chunks agree."""
    t = start_s + np.arange(points) * dt_s
    return base + amplitude * np.sin(2 * np.pi * 0.5 * t)[:, None] * np.ones(len(BIMANUAL_JOINTS))


def assert_within_limits(commands, limits, period_s, *, skip_acceleration_at=()):
    """Every command inside the position limits, every step within velocity and acceleration."""
    commands = np.asarray(commands)
    assert (commands >= limits.lower - 1e-9).all() and (commands <= limits.upper + 1e-9).all()
    velocity = np.diff(commands, axis=0) / period_s
    excess = np.abs(velocity) - limits.max_velocity
    assert excess.max() <= 1e-6, (
        f'velocity over the limit by {excess.max():.4g} at '
        f'{np.unravel_index(excess.argmax(), excess.shape)}'
    )
    acceleration = np.diff(velocity, axis=0) / period_s
    excess = np.abs(acceleration) - limits.max_acceleration
    excess[list(skip_acceleration_at)] = 0
    assert excess.max() <= 1e-4, (
        f'acceleration over the limit by {excess.max():.4g} at '
        f'{np.unravel_index(excess.argmax(), excess.shape)}'
    )
