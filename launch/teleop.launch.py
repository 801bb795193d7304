"""`ros2 launch halo_ros teleop.launch.py`: the 'teleop' profile of halo_ros/bringup/profiles.py.

`halo-ros up teleop` runs the same nodes without ros2 launch (supervised processes).
"""

PROFILE = 'teleop'


def generate_launch_description():
    from halo_ros.bringup.launch_builder import launch_description

    return launch_description(PROFILE)
