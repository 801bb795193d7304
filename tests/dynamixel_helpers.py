"""Shared set-up for the Dynamixel tests: a virtual ALOHA arm on a pty in a temporary run dir."""

from contextlib import contextmanager

import numpy as np

from halo_ros.drivers import aloha_calibration
from halo_ros.paths import calibration_file
from halo_ros.sim.virtual_bus import FaultInjection, KinematicArm, VirtualBus

START_POSE = np.array([0.1, -0.96, 1.16, 0.05, -0.3, 0.2, 0.5])  # shafts, rad


def sim_calibration(run_dir, name='follower_left'):
    robot = aloha_calibration.load(
        calibration_file('sim_aloha.yaml'), environ={'HALO_ROS_RUN_DIR': str(run_dir)}
    )
    return robot.arm(name)


@contextmanager
def virtual_arm(run_dir, name='follower_left', *, faults=None, max_velocity_rad_s=50.0):
    """(calibration, kinematic arm, virtual bus) serving at the calibrated port path."""
    calibration = sim_calibration(run_dir, name)
    arm = KinematicArm(name, initial_position_rad=START_POSE, max_velocity_rad_s=max_velocity_rad_s)
    bus = VirtualBus(arm, calibration, link=calibration.port, faults=faults or FaultInjection())
    bus.start()
    try:
        yield calibration, arm, bus
    finally:
        bus.stop()
