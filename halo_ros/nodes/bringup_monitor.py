"""What `halo-ros up` watches: topic rates, the policy's latency, the controller's mode.

A TopicMonitor over the bring-up's topics, plus Trigger calls for ~/hold and friends.
"""

import importlib
import time

from std_srvs.srv import Trigger

from halo_ros.nodes.topic_monitor import TopicMonitor, TopicStats

RATE_WINDOW_S = 3.0
_LATENCY_KEY = 'latency_stamp_to_publish_p50_ms'


def message_type(type_name: str) -> type:
    """'sensor_msgs/msg/Image' -> the class."""
    package, kind, name = type_name.split('/')
    return getattr(importlib.import_module(f'{package}.{kind}'), name)


def recent_rate_hz(stats: TopicStats, now: float, window_s: float = RATE_WINDOW_S) -> float:
    """Messages per second over the last `window_s` (older arrivals are dropped)."""
    stats.arrivals[:] = [t for t in stats.arrivals if t > now - window_s]
    return len(stats.arrivals) / window_s


class BringupMonitor(TopicMonitor):
    def __init__(self, topics: dict[str, str]):
        super().__init__({t: message_type(n) for t, n in topics.items()}, 'halo_ros_up')
        self.policy_latency_ms: str = '-'
        self.create_subscription(
            message_type('diagnostic_msgs/msg/DiagnosticArray'),
            'diagnostics',
            self._on_diagnostics,
            10,
        )

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            for kv in status.values:
                if kv.key == _LATENCY_KEY:
                    self.policy_latency_ms = kv.value

    def mode(self) -> str:
        last = self.stats['halo/mode'].last if 'halo/mode' in self.stats else None
        return last.data if last is not None else '-'

    def seen(self, topic: str) -> bool:
        return topic in self.stats and self.stats[topic].count > 0

    def rates_hz(self) -> dict[str, float]:
        now = time.monotonic()
        return {topic: recent_rate_hz(s, now) for topic, s in self.stats.items()}

    def call_trigger(self, service: str, timeout_s: float) -> tuple[bool, str]:
        """Call a std_srvs/Trigger service; (False, why) if it is not there or does not answer."""
        client = self.create_client(Trigger, service)
        try:
            if not client.wait_for_service(timeout_sec=timeout_s):
                return False, f'{service} is not available'
            future = client.call_async(Trigger.Request())
            deadline = time.monotonic() + timeout_s
            while not future.done() and time.monotonic() < deadline:
                import rclpy

                rclpy.spin_once(self, timeout_sec=0.05)
            if not future.done():
                return False, f'{service} did not answer within {timeout_s:g} s'
            result = future.result()
            return result.success, result.message
        finally:
            self.destroy_client(client)
