"""The environment every halo_ros process runs with: localhost-only discovery, one domain, one
Fast DDS profile. Set here once so the CLI, the supervisor and the tests cannot disagree."""

import os
import random

from halo_ros.paths import config_file


def ros_environment(domain_id: int | None = None, *, base: dict | None = None) -> dict:
    """A copy of `base` (default os.environ) with the halo_ros ROS settings filled in.

    Values the user already set win, except that discovery is never widened: on a robot that
    must reach another host, set ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET explicitly.
    """
    env = dict(os.environ if base is None else base)
    env.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    if domain_id is not None:
        env['ROS_DOMAIN_ID'] = str(domain_id)
    env.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
    profile = str(config_file('fastdds.xml'))
    # Jazzy reads the first name, Kilted the second (and warns if only the old one is set).
    env.setdefault('FASTRTPS_DEFAULT_PROFILES_FILE', profile)
    env.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', profile)
    env.setdefault('MUJOCO_GL', 'egl')
    # Where the simulator puts its virtual serial ports (calibration/sim_aloha.yaml expands it):
    # one folder per domain, so concurrent simulations never share a port.
    env.setdefault('HALO_ROS_RUN_DIR', f'/tmp/halo_ros-{env.get("ROS_DOMAIN_ID", "0")}')
    return env


def random_domain_id() -> int:
    """A domain for one test run, so concurrent runs on one machine never see each other.

    0 is the default robots use and 101+ collides with Fast DDS's port arithmetic on some hosts.
    """
    return random.SystemRandom().randint(1, 100)


def apply(domain_id: int | None = None) -> None:
    """Update this process's environment in place (before rclpy is imported)."""
    os.environ.update(ros_environment(domain_id))
