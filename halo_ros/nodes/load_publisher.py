"""load_publisher: publishes a nominal robot load (cameras + joint states) for recording tests
and the recording benchmark, then writes how many messages it sent.

Usage: python -m halo_ros.nodes.load_publisher --duration-s 10 --report sent.json
Images are rgb8 with the frame index in the first 8 bytes (little endian), joint states carry
their sequence number in position[0]; both carry their send time in header.stamp.
"""

import argparse
import json
import sys
import time

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState

from halo_ros.recording import topics as T


def _args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--cameras', type=int, default=3)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--camera-hz', type=float, default=30.0)
    parser.add_argument('--joint-hz', type=float, default=50.0)
    parser.add_argument('--duration-s', type=float, default=10.0)
    parser.add_argument(
        '--subscribers',
        type=int,
        default=1,
        help='wait until every topic has this many subscribers',
    )
    parser.add_argument('--discovery-timeout-s', type=float, default=30.0)
    parser.add_argument('--report', default='', help='write {"sent": {topic: n}} here')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(sys.argv[1:] if argv is None else argv)
    rclpy.init()
    node = Node('load_publisher')
    qos = QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE
    )
    cams = [node.create_publisher(Image, T.image_topic(c), qos) for c in T.CAMERAS[: args.cameras]]
    arms = T.FOLLOWERS + T.LEADERS
    joints = [node.create_publisher(JointState, T.joint_state_topic(a), qos) for a in arms]
    pubs = cams + joints

    deadline = time.monotonic() + args.discovery_timeout_s
    while any(p.get_subscription_count() < args.subscribers for p in pubs):
        if time.monotonic() > deadline:
            node.get_logger().error('no recorder subscribed in time')
            return 1
        rclpy.spin_once(node, timeout_sec=0.05)

    h, w = args.height, args.width
    pixels = np.random.default_rng(0).integers(0, 255, h * w * 3, dtype=np.uint8).tobytes()
    sent = {p.topic_name: 0 for p in pubs}
    t0 = time.monotonic()
    next_cam = t0
    next_joint = t0
    end = t0 + args.duration_s
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if now >= next_cam:
            for ci, pub in enumerate(cams):
                n = sent[pub.topic_name]
                msg = Image(
                    height=h,
                    width=w,
                    encoding='rgb8',
                    step=w * 3,
                    data=n.to_bytes(8, 'little') + pixels[8:],
                )
                msg.header.stamp = node.get_clock().now().to_msg()
                msg.header.frame_id = T.CAMERAS[ci]
                pub.publish(msg)
                sent[pub.topic_name] = n + 1
            next_cam += 1.0 / args.camera_hz
        if now >= next_joint:
            for pub in joints:
                n = sent[pub.topic_name]
                msg = JointState(
                    name=[f'j{i}' for i in range(7)],
                    position=[float(n)] + [0.0] * 6,
                    velocity=[0.0] * 7,
                    effort=[0.0] * 7,
                )
                msg.header.stamp = node.get_clock().now().to_msg()
                pub.publish(msg)
                sent[pub.topic_name] = n + 1
            next_joint += 1.0 / args.joint_hz
        time.sleep(max(0.0, min(next_cam, next_joint) - time.monotonic()))
    elapsed = time.monotonic() - t0
    if args.report:
        with open(args.report, 'w', encoding='utf-8') as f:
            json.dump({'sent': sent, 'elapsed_s': elapsed}, f)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
