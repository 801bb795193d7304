"""numpy <-> ROS message conversions shared by the nodes (the only place that knows both)."""

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image, JointState


def stamp_from_ns(ns: int) -> Time:
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def ns_from_stamp(stamp: Time) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def image_msg(frame: np.ndarray, stamp_ns: int, frame_id: str) -> Image:
    """An rgb8 Image. `data` gets bytes: assigning the array itself is ~80x slower in rclpy."""
    height, width, channels = frame.shape
    if channels != 3 or frame.dtype != np.uint8:
        raise ValueError(f'expected (h, w, 3) uint8 rgb, got {frame.shape} {frame.dtype}')
    msg = Image(height=height, width=width, encoding='rgb8', is_bigendian=0, step=width * 3)
    msg.header.stamp = stamp_from_ns(stamp_ns)
    msg.header.frame_id = frame_id
    msg.data = np.ascontiguousarray(frame).tobytes()
    return msg


def image_array(msg: Image) -> np.ndarray:
    """Zero-copy (h, w, 3) view of an rgb8 Image; ValueError naming what is wrong otherwise."""
    if msg.encoding != 'rgb8':
        raise ValueError(f'image encoding {msg.encoding!r} is not rgb8')
    if msg.step != msg.width * 3 or len(msg.data) != msg.height * msg.step:
        raise ValueError(
            f'image {msg.width}x{msg.height} step {msg.step} does not match {len(msg.data)} bytes'
        )
    return np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width, 3)


def camera_info_msg(width: int, height: int, k: list[float], stamp_ns: int, frame_id: str):
    msg = CameraInfo(width=width, height=height, distortion_model='plumb_bob')
    msg.header.stamp = stamp_from_ns(stamp_ns)
    msg.header.frame_id = frame_id
    msg.k = [float(v) for v in k]
    msg.d = [0.0] * 5
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    fx, cx, fy, cy = k[0], k[2], k[4], k[5]
    msg.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def joint_state_msg(names, position, velocity=None, effort=None, *, stamp_ns: int) -> JointState:
    msg = JointState(name=list(names), position=[float(v) for v in position])
    if velocity is not None:
        msg.velocity = [float(v) for v in velocity]
    if effort is not None:
        msg.effort = [float(v) for v in effort]
    msg.header.stamp = stamp_from_ns(stamp_ns)
    return msg
