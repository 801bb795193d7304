"""Cameras: RealSense (pyrealsense2) and UVC (OpenCV) sources behind one small interface, a
reconnecting capture thread, and camera intrinsics in ROS camera_info YAML. ROS-free."""

from halo_ros.drivers.cameras.config import CameraConfig, CameraDriver
from halo_ros.drivers.cameras.intrinsics import CameraIntrinsics, IntrinsicsError
from halo_ros.drivers.cameras.source import CameraDisconnected, Frame, FrameSource
from halo_ros.drivers.cameras.stream import CameraStream

__all__ = [
    'CameraConfig',
    'CameraDisconnected',
    'CameraDriver',
    'CameraIntrinsics',
    'CameraStream',
    'Frame',
    'FrameSource',
    'IntrinsicsError',
]
