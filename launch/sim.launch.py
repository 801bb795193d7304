"""`ros2 launch halo_ros sim.launch.py`: the 'sim' profile of halo_ros/bringup/profiles.py.

`halo-ros up sim` runs the same nodes without ros2 launch (supervised processes).
"""

PROFILE = 'sim'


def generate_launch_description():
    from halo_ros.bringup.launch_builder import launch_description

    return launch_description(PROFILE)
