"""Test session set-up: every ROS participant stays on loopback, in a domain of its own."""

from halo_ros import rosenv

# Before anything imports rclpy: child processes inherit this environment.
rosenv.apply(rosenv.random_domain_id())
