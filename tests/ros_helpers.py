"""Helpers for tests that run a real ROS graph: wait on conditions, never on sleeps."""

import time
from collections.abc import Callable

import rclpy
from rclpy.node import Node


def spin_until(
    node: Node, condition: Callable[[], bool], timeout_s: float, what: str = 'condition'
) -> None:
    """Spin `node` until `condition()` holds; AssertionError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {timeout_s:g} s waiting for {what}')
        rclpy.spin_once(node, timeout_sec=0.05)


def wait_for_publishers(node: Node, topics, timeout_s: float = 30.0) -> None:
    """Discovery can take ~3 s on a loaded machine: wait for each topic to have a publisher."""
    for topic in topics:
        name = topic if topic.startswith('/') else '/' + topic
        spin_until(
            node, lambda n=name: node.count_publishers(n) > 0, timeout_s, f'a publisher on {name}'
        )
