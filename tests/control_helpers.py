"""Shared set-up for the controller tests: four virtual ALOHA arms and a primed control loop."""

from contextlib import contextmanager

import numpy as np

from halo_ros.control.arms import ArmSetArms
from halo_ros.control.audit import violations
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


def assert_within_limits(commands, limits, period_s, *, stamps_ns=None, excuse_ticks=()):
    """Every command inside the position limits, every step within velocity and acceleration
    (`halo_ros.control.audit`; stamps default to one period apart). `excuse_ticks`: ticks whose
    acceleration is not judged (an e-stop halts the command on purpose)."""
    period_ns = round(period_s * 1e9)
    stamps = np.arange(len(commands)) * period_ns if stamps_ns is None else stamps_ns
    found = violations(np.asarray(commands), np.asarray(stamps), limits, period_ns)
    found = [v for v in found if not (v.kind == 'acceleration' and v.tick in excuse_ticks)]
    assert not found, f'{len(found)} limits broken: ' + '; '.join(map(str, found[:5]))
