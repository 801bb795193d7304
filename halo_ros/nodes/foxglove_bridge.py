"""foxglove_bridge: the graph side of `halo-ros view` -- every topic, raw, into a Foxglove server.

Discovers topics once a second and subscribes to each new one with `raw=True` (the CDR bytes
are forwarded untouched, see `halo_ros.viz.foxglove_bridge`). Subscriptions are best effort,
keep-last 5: a viewer wants the newest message, never to slow a publisher down, and best effort
matches reliable and best-effort publishers alike.
"""

import importlib

from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data

from halo_ros.nodes.spin import run_node
from halo_ros.recording import topics as T
from halo_ros.viz.foxglove_bridge import FoxgloveBridge

EXCLUDED = ('/rosout', '/parameter_events')  # the graph's own plumbing


class FoxgloveBridgeNode(Node):
    def __init__(self, bridge: FoxgloveBridge, topics=()):
        super().__init__('foxglove_bridge')
        self._bridge = bridge
        self._wanted = {self.resolve_topic_name(t) for t in topics}  # empty: everything
        self._bridged: dict[str, object] = {}  # None: seen, not bridged
        self.create_timer(1.0, self._discover)
        self._discover()

    def _discover(self) -> None:
        for name, types in self.get_topic_names_and_types():
            if name in self._bridged or name in EXCLUDED:
                continue
            if self._wanted and name not in self._wanted:
                continue
            msgtype = types[0]
            try:
                module, cls = T.ros_type_name(msgtype)
                message = getattr(importlib.import_module(module), cls)
            except (ImportError, AttributeError, ValueError) as error:
                self.get_logger().warning(f'{name}: cannot import {msgtype} ({error})')
                self._bridged[name] = None
                continue
            if not self._bridge.add_topic(name, msgtype):
                self._bridged[name] = None
                continue
            self._bridged[name] = self.create_subscription(
                message,
                name,
                lambda data, name=name: self._bridge.publish(
                    name, data, self.get_clock().now().nanoseconds
                ),
                qos_profile_sensor_data,
                raw=True,
            )


def run_bridge(bridge: FoxgloveBridge, topics=()) -> None:
    """Spin until Ctrl-C or SIGTERM."""
    run_node(lambda: FoxgloveBridgeNode(bridge, topics))
