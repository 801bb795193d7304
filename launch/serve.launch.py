"""`ros2 launch halo_ros serve.launch.py`: the 'serve' profile of halo_ros/bringup/profiles.py.

The robot side of remote inference; the GPU host runs `halo-ros serve`. `halo-ros up serve` runs
the same nodes without ros2 launch (supervised processes).
"""

PROFILE = 'serve'


def generate_launch_description():
    from halo_ros.bringup.launch_builder import launch_description

    return launch_description(PROFILE)
