"""`ros2 launch halo_ros record.launch.py`: the 'record' profile of halo_ros/bringup/profiles.py.

`halo-ros up record` runs the same nodes without ros2 launch (supervised processes).
"""

PROFILE = 'record'


def generate_launch_description():
    from halo_ros.bringup.launch_builder import launch_description

    return launch_description(PROFILE)
