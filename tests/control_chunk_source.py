"""A stand-in policy process for the controller tests: gentle chunks around the pose it first sees.

Run as `python -m control_chunk_source --ros-args -p rate_hz:=10.0` (tests/ on PYTHONPATH). Every
chunk: 50 points at 20 ms, stamped now, tag epoch 0 and seq from 0 (a fresh process), positions =
the first `halo/command` it received + a slow 0.05 rad sine in absolute time on the arm joints.
"""

import time

import numpy as np
from builtin_interfaces.msg import Duration
from rclpy.node import Node
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from halo_ros.joints import BIMANUAL_JOINTS, GRIPPER_INDICES
from halo_ros.nodes.conversions import stamp_from_ns
from halo_ros.nodes.spin import run_node
from halo_ros.runtime.chunk import ChunkTag

DT_NS = 20_000_000


class ChunkSource(Node):
    def __init__(self):
        super().__init__('chunk_source')
        rate = self.declare_parameter('rate_hz', 10.0).value
        self.amplitude = self.declare_parameter('amplitude_rad', 0.05).value
        self.base = None
        self.seq = 0
        self.create_subscription(JointState, 'halo/command', self._on_command, 10)
        self.publisher = self.create_publisher(JointTrajectory, 'halo/action_chunk', 10)
        self.create_timer(1.0 / rate, self._publish)

    def _on_command(self, msg: JointState) -> None:
        if self.base is None:
            self.base = np.array(msg.position)

    def _publish(self) -> None:
        if self.base is None:
            return
        stamp = time.time_ns()
        t = (stamp + np.arange(50) * DT_NS) / 1e9
        wave = self.amplitude * np.sin(2 * np.pi * 0.5 * t)
        positions = self.base + wave[:, None] * np.ones(len(BIMANUAL_JOINTS))
        positions[:, list(GRIPPER_INDICES)] = self.base[list(GRIPPER_INDICES)]
        msg = JointTrajectory(joint_names=list(BIMANUAL_JOINTS))
        msg.header.stamp = stamp_from_ns(stamp)
        msg.header.frame_id = ChunkTag(epoch=0, seq=self.seq, context_version=-1).format()
        for k, row in enumerate(positions.tolist()):
            msg.points.append(
                JointTrajectoryPoint(positions=row, time_from_start=Duration(nanosec=k * DT_NS))
            )
        self.publisher.publish(msg)
        self.seq += 1


if __name__ == '__main__':
    run_node(ChunkSource)
