"""`ros2 launch halo_ros robot.launch.py`: the 'robot' profile of halo_ros/bringup/profiles.py.

`halo-ros up robot` runs the same nodes without ros2 launch (supervised processes).
"""

PROFILE = 'robot'


def generate_launch_description():
    from halo_ros.bringup.launch_builder import launch_description

    return launch_description(PROFILE)
