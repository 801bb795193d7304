"""camera_node: one RealSense or UVC camera as Image (rgb8) + CameraInfo.

Publishes `image_raw` and `camera_info` (sensor-data QoS; the bring-up remaps them to
`<camera>/image_raw`, `<camera>/camera_info`) and `diagnostics` at 1 Hz (frames, rate,
reconnects). Unplugging the camera is survived: the driver reopens it by serial or path.
Parameters: driver (realsense | uvc), serial, device, width, height, fps, intrinsics (camera_info
YAML under calibration/ or a path; '' = RealSense factory or uncalibrated), frame_id ('' =
`<node name>_optical_frame`).
"""

import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from halo_ros.drivers.cameras import CameraConfig, CameraDriver, CameraStream
from halo_ros.nodes.conversions import image_msg, stamp_from_ns
from halo_ros.nodes.spin import run_node


def camera_info_msg(intrinsics, stamp_ns: int, frame_id: str) -> CameraInfo:
    msg = CameraInfo(
        width=intrinsics.width,
        height=intrinsics.height,
        distortion_model=intrinsics.distortion_model,
    )
    msg.header.stamp = stamp_from_ns(stamp_ns)
    msg.header.frame_id = frame_id
    msg.k, msg.d = list(intrinsics.k), list(intrinsics.d)
    msg.r, msg.p = list(intrinsics.r), list(intrinsics.p)
    return msg


class CameraNode(Node):
    def __init__(self):
        super().__init__('camera')
        p = self.declare_parameters(
            '',
            [
                ('driver', 'realsense'),
                ('serial', ''),
                ('device', ''),
                ('width', 640),
                ('height', 480),
                ('fps', 30.0),
                ('intrinsics', ''),
                ('frame_id', ''),
            ],
        )
        v = {param.name: param.value for param in p}
        self.config = CameraConfig(
            name=self.get_name(),
            driver=CameraDriver(v['driver']),
            width=int(v['width']),
            height=int(v['height']),
            fps=float(v['fps']),
            serial=str(v['serial']),
            device=str(v['device']),
            intrinsics=str(v['intrinsics']),
        )
        self._frame_id = v['frame_id'] or f'{self.get_name()}_optical_frame'
        self._image = self.create_publisher(Image, 'image_raw', qos_profile_sensor_data)
        self._info = self.create_publisher(CameraInfo, 'camera_info', qos_profile_sensor_data)
        self._diagnostics = self.create_publisher(DiagnosticArray, 'diagnostics', 10)
        self._frames_at_last = (0, time.monotonic())
        self.stream = CameraStream(self.config, self._on_frame)
        self.create_timer(1.0, self._publish_diagnostics)
        self.stream.start()
        which = self.config.serial or self.config.device or '(the only one)'
        self.get_logger().info(
            f'{self.config.driver.value} camera {which}: {self.config.width}x'
            f'{self.config.height} at {self.config.fps:g} fps'
        )

    def _on_frame(self, frame, intrinsics) -> None:
        self._image.publish(image_msg(frame.rgb, frame.stamp_ns, self._frame_id))
        self._info.publish(camera_info_msg(intrinsics, frame.stamp_ns, self._frame_id))

    def _publish_diagnostics(self) -> None:
        if self.stream.fatal is not None:
            self.get_logger().error(f'camera failed: {self.stream.fatal}')
            raise SystemExit(1)  # a restart (launch respawn / halo-ros up) may clear it
        frames, since = self._frames_at_last
        now = time.monotonic()
        rate = (self.stream.frames - frames) / (now - since)
        self._frames_at_last = (self.stream.frames, now)
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK if self.stream.connected else DiagnosticStatus.ERROR,
            name=f'{self.get_name()}: camera',
            message='streaming' if self.stream.connected else f'lost: {self.stream.last_error}',
            hardware_id=self.config.serial or self.config.device,
        )
        values = {
            'frames': self.stream.frames,
            'rate_hz': f'{rate:.1f}',
            'reconnects': self.stream.reconnects,
        }
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(msg)

    def destroy_node(self):
        self.stream.stop()
        super().destroy_node()


def main(args=None):
    run_node(CameraNode, args)


if __name__ == '__main__':
    main()
